"""``ticktape serve --workers N``: N server processes behind one port, on one store.

One Python process runs its HTTP handling, its sessions and (on SQLite) its store
calls under one GIL: at 32 concurrent clients a single SQLite server is bound by
it (docs/benchmarks.md, "Start → get"). Workers are N full instances — each with
its own runtime, leases and reconciler, named ``<instance>-w<i>`` so each keeps a
stable name across restarts and reaps its own orphans — that cooperate through
the store exactly as separate servers do. The parent binds the port once and the
workers accept on that one socket (the kernel hands each connection to one of
them), so a client sees one server; whatever it starts is in the store before the
answer, so a GET on any worker finds it (invariant 2).

The parent forwards SIGTERM and SIGINT to every worker (each shuts down
gracefully, stopping its sessions) and exits when all have; if one worker exits
by itself, the parent stops the others and exits 1, so a process supervisor sees
the failure. A worker whose parent is gone (SIGKILL) shuts itself down within
:data:`ORPHAN_CHECK_S`.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from dataclasses import replace
from types import FrameType

from ticktape.config import Settings, default_instance_name
from ticktape.errors import ValidationError

log = logging.getLogger(__name__)

ORPHAN_CHECK_S = 1.0  # how often a worker checks that its parent still runs
LISTEN_BACKLOG = 2048  # uvicorn's default


def worker_names(settings: Settings, workers: int, port: int) -> list[str]:
    """The instance name of each worker: the server's name with ``-w<i>``."""
    base = settings.instance_name or default_instance_name(port)
    return [f"{base}-w{i}" for i in range(workers)]


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def run_workers(settings: Settings, workers: int, *, store_wait_s: float = 0.0) -> int:
    """Serve with ``workers`` processes until a signal; the exit code."""
    from ticktape.cli.main import check_store

    if settings.store_url.startswith("memory://"):
        raise ValidationError(
            "--workers needs a store the workers share (sqlite:// or questdb://); "
            "each process has its own memory:// store",
            field="workers",
        )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    check_store(settings, store_wait_s)
    sock = _listen(settings.host, settings.port)
    port = int(sock.getsockname()[1])
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker,
            args=(replace(settings, port=port, instance_name=name), sock, os.getpid()),
            name=name,
        )
        for name in worker_names(settings, workers, port)
    ]
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for proc in procs:
            proc.start()
        sock.close()  # the workers hold it now
        alive = list(procs)
        failed = False
        while alive:
            multiprocessing.connection.wait([p.sentinel for p in alive])
            ended = [p for p in alive if p.exitcode is not None]
            alive = [p for p in alive if p.exitcode is None]
            if ended and not stopping:
                for proc in ended:
                    log.error(
                        "worker %s exited (%s); stopping the others", proc.name, proc.exitcode
                    )
                failed = True
                forward(signal.SIGTERM, None)
        return 1 if failed or any(p.exitcode != 0 for p in procs) else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker(settings: Settings, sock: socket.socket, parent: int) -> None:
    """One worker: a full server on the inherited socket."""
    from ticktape.cli.main import run_server

    # Ctrl-C in a terminal reaches the whole process group: only the parent takes it
    # (and forwards SIGTERM), so a worker never sees two signals and cuts its shutdown.
    os.setpgrp()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    run_server(settings, sockets=[sock])


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)  # polling: the parent's death sends a worker no event
    os.kill(os.getpid(), signal.SIGTERM)
