"""Servers and in-process instances for tests and benchmarks (see :mod:`ticktape.testing`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ticktape.config import Settings, sqlite_path_from_url
from ticktape.domain import Session, validate_spec
from ticktape.metrics import Metrics
from ticktape.runners import default_runners
from ticktape.runtime.runner import RunnerRegistry
from ticktape.runtime.supervisor import Supervisor
from ticktape.service import SessionService
from ticktape.store import open_store
from ticktape.testing._faults import FaultyStore

T = TypeVar("T")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
TICKTAPE = Path(sys.executable).with_name("ticktape")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STOPPED_STATES = ("T", "t")  # /proc/<pid>/task/<tid>/stat: stopped by a signal, traced


def stopped(pid: int) -> bool:
    """Every thread of ``pid`` has really stopped (Linux ``/proc``): ``kill`` only queues
    SIGSTOP, and on a loaded machine a thread may still run for a while after it returns
    — long enough to answer a request sent "after" the freeze."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        state = stat[stat.rindex(")") + 2 :].split(" ", 1)[0]  # the name may hold spaces
        if state not in STOPPED_STATES:
            return False
    return True


def sigstop(pid: int, timeout_s: float = 30.0) -> None:
    """SIGSTOP ``pid`` and wait until every one of its threads has stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout_s
    while not stopped(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} not stopped {timeout_s}s after SIGSTOP")
        time.sleep(0.005)  # the kernel gives no event to await a stop on


class ServerProcess:
    """One ``ticktape serve`` process; restartable on the same port and store.

    With ``faults`` (a :func:`~ticktape.testing.parse_fault_spec` spec) it runs
    ``python -m ticktape.testing.faulty_server`` instead: the same server, with those
    faults injected into its runtime's store handle.
    """

    def __init__(
        self,
        store_url: str,
        log_dir: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        faults: str = "",
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.store_url = store_url
        self.start_timeout_s = start_timeout_s
        self.faults = faults
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.env = {**os.environ, "TICKTAPE_LOG_LEVEL": "warning", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"server-{self.port}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("wb")
        if self.faults:
            command = [sys.executable, "-m", "ticktape.testing.faulty_server"]
            command += ["--faults", self.faults]
        else:
            command = [str(TICKTAPE), "serve"]
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port), "--store", self.store_url],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        try:
            self.wait_healthy()
        except BaseException:  # not healthy in time (QuestDB slow to answer): no leaked server
            self.stop()
            raise

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"ticktape serve exited {self.proc.returncode}:\n{self.logs()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)  # polling a process that is starting: no event to await
        raise RuntimeError(
            f"ticktape serve not healthy in {self.start_timeout_s:g}s:\n{self.logs()}"
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def freeze(self, attempts: int = 50) -> bool:
        """SIGSTOP, at a moment the server does not hold the SQLite write lock.

        A process frozen inside a write transaction blocks every other writer of the
        file (SQLite has one writer at a time) — a property of SQLite, which leases
        cannot help. So: freeze, check the lock is free, else thaw and try again a
        moment later. False (and running) if it held the lock every time.
        """
        path = sqlite_path_from_url(self.store_url) if self.store_url.startswith("sqlite") else None
        assert self.proc is not None
        for _ in range(attempts):
            sigstop(self.proc.pid)
            if path is None or _sqlite_write_lock_free(path):
                return True
            self.signal(signal.SIGCONT)
            time.sleep(0.02)  # let it finish its transaction: there is no event to await
        return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT_S)

    def terminate(self) -> int:
        """SIGTERM and wait: the graceful shutdown path."""
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()


def _sqlite_write_lock_free(path: Path) -> bool:
    conn = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def running_server(store_url: str, log_dir: Path, **kwargs: object) -> Iterator[ServerProcess]:
    server = ServerProcess(store_url, log_dir, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def crash(supervisor: Supervisor) -> None:
    """End ``supervisor`` as SIGKILL ends a server: every task cancelled, nothing written.

    A store call already running on a driver thread still completes (a killed
    process's would not); stores that matter here are fenced either way.
    """
    tasks = supervisor.tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout_s: float,
    what: str,
    poll_s: float = 0.02,
) -> T:
    """Await ``check()`` until it returns something other than None/False; fail after ``timeout_s``.

    For conditions another task or process brings about (a reap, a heartbeat):
    polling with a deadline, never a fixed sleep.
    """
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = await check()
        if last is not None and last is not False:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last})")
        await asyncio.sleep(poll_s)


# --------------------------------------------------------------------------- in process


class Instance:
    """One ticktape instance in this process: its own store handle (faulty), supervisor, service.

    ``store`` is the :class:`FaultyStore` everything of this instance goes through
    (inject faults there), under the retry layer of ``handle`` — the store handle
    the supervisor and the service use, so injected faults are retried as real ones
    are; ``raw`` is the handle without faults, for checks that must not be faulted.
    ``runners`` is what the supervisor runs (default: :func:`default_runners`).
    """

    def __init__(self, settings: Settings, runners: RunnerRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.raw = open_store(
            settings.store_url,
            settings.retry,
            on_retry=self.metrics.store_retry,
            actor=settings.instance,
            timeout_s=settings.store_timeout_s,
        )
        self.store = FaultyStore(self.raw.inner)
        self.handle = self.raw.over(self.store)
        runners = runners if runners is not None else default_runners()
        self.supervisor = Supervisor(self.handle, settings, self.metrics, runners)
        self.service = SessionService(self.handle, self.supervisor, settings, self.metrics)
        self.alive = False

    @property
    def owner(self) -> str:
        return self.supervisor.owner

    async def start(self) -> Instance:
        await self.raw.open()
        await self.supervisor.start()
        self.alive = True
        return self

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        """Graceful, as on SIGTERM."""
        if self.alive:
            self.alive = False
            await self.supervisor.shutdown(timeout_s=timeout_s)

    async def crash(self) -> None:
        """As SIGKILL: nothing more is written by this instance."""
        self.alive = False
        await crash(self.supervisor)

    async def close(self) -> None:
        await self.shutdown()
        await self.raw.close()

    async def create(self, *, idempotency_key: str | None = None, **spec: Any) -> Session:
        """Create a session through the service (``validate_spec`` arguments)."""
        body: dict[str, Any] = {"kind": "collect", "symbols": ["BTC_USDT", "ETH_USDT"], **spec}
        return await self.service.create(validate_spec(**body), idempotency_key=idempotency_key)

    def metric(self, name: str) -> float:
        """A sample's value; a name the registry does not have fails (never reads as 0)."""
        value = self.metrics.registry.get_sample_value(name)
        if value is None:
            raise AssertionError(f"no metric {name!r}: a misspelt name must not read as 0")
        return value


@contextlib.asynccontextmanager
async def instances(
    base: Settings, runners: RunnerRegistry | None = None
) -> AsyncIterator[Callable[..., Awaitable[Instance]]]:
    """``a = await add("a")``: started instances on ``base.store_url``; all closed at the end.

    Each gets ``base`` with its own instance name (and any field overridden), and
    runs ``runners`` (default: :func:`default_runners`).
    """
    started: list[Instance] = []

    async def add(name: str, **overrides: Any) -> Instance:
        instance = Instance(replace(base, instance_name=name, **overrides), runners)
        started.append(instance)
        return await instance.start()

    try:
        yield add
    finally:
        for instance in reversed(started):
            await instance.close()
