"""Shutdown at scale: N collect sessions on one instance, then the instance's shutdown.

Runs the real supervisor, sim driver, tick writer and collect runners in-process
(the API is not on the shutdown path): creates ``--sessions`` paced simulated
sessions (``--resumable``: that many of them opt in to resume, and are handed
over instead of stopped), lets them record for ``--hold-s``, then calls
``Supervisor.shutdown`` as SIGTERM does and reports its wall time, the seal calls
and their time, the tasks cancelled at the grace period, ERROR log records, the
sessions per end state and whether every ended session's stats equal its stored
rows (counted afresh after the shutdown; a handed-over session's released stats
likewise), and ``phases``: the backend calls made during the shutdown per kind
(session reads, transitions, events, visibility waits and, on QuestDB, each tick
query by its label) — how many, their summed and longest seconds, and when the last
ended; ``stalls``: during the shutdown, the event loop's longest late wake-up (a probe
sleeping 10 ms) and CPython's collections by generation (count, summed and longest
pause: a collection holds the GIL, so it stops the loop and the session log's thread
alike). The child sets the collector as ``ticktape serve`` does (``tune_collector``).
Last line: JSON.

``--ballast-objects N`` keeps N small live objects (two-item lists) on the heap before
the sessions start, as a server that held 1,000 sessions for 20 minutes has (buffered
rows, the sessions' state): a full collection walks all of them. ``--py-spy-s S``
records the child with py-spy for S seconds from the shutdown's start (``--py-spy-out``,
raw stacks, ``--nonblocking``).

``--prefill-ticks N`` (QuestDB) first fills today's partition of the tick tables with
2 x N rows of 3,000 other sessions (``bench/ticksend.py``'s server-side prefill, ~1 M
rows/s), so the seals scan a partition the size a long-running store has (a seal's
queries read the day's partition; on empty tables they cost nothing and say nothing about
a real shutdown). Prefilled, every child of every round uses those tables (made once,
dropped at the end; each round adds its own sessions' rows, a few per cent).

``--instances N`` runs N children (instances of one store, ``--sessions`` each), waits
until all held, then starts their shutdowns together. While they stop, the parent
probes the server from its own process: a fresh connect plus ``SELECT 1`` every 150 ms
(``probe_*``: seconds p50/p95/max, over 1 s, failed). Each child reports its count
groups (``count_groups``: the sessions each grouped count read, on QuestDB) and the
runners cancelled at the grace (``cancelled``); a line ``in short`` sums a round up.

``--code LABEL=SRC`` (repeatable) runs the same measurement once per tree, in a
child process whose ``ticktape`` is imported from SRC, alternating codes round
after round on one server (``--rounds``); on QuestDB, unless prefilled, each child gets
tables of its own (a fresh prefix), so every measurement starts from the same empty store:

    .venv/bin/python bench/shutdown.py --store URL --sessions 1000 --hold-s 180 \\
        --code before=/tmp/before/src --code after=src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from codes import code_tag, with_prefix


class _Errors(logging.Handler):
    """Counts ERROR records and keeps the first few distinct messages."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.kinds: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        text = record.getMessage()
        # the message without its session id: "task session-… did not stop" etc.
        self.kinds[re.sub(r"[0-9a-f][0-9a-f-]{7,}", "…", text)[:100]] += 1


class _Stalls:
    """What stops the event loop during a window: the loop's late wake-ups (a probe that
    sleeps ``PROBE_S``) and CPython's collections (``gc.callbacks``), by generation."""

    PROBE_S = 0.01

    def __init__(self) -> None:
        self.late_max_s = 0.0
        self.late_over_1s = 0
        self.gc: dict[int, list[float]] = {}
        self._gc_began = 0.0
        self._task: asyncio.Task[None] | None = None
        self.log_txn: list[float] = []  # QuestDB: each session-log group's transaction
        self.txn_spans: list[tuple[float, float]] = []
        self.gc_spans: list[tuple[float, float]] = []  # each collection's start and end
        self._undo_log: Any = None

    def watch_log(self, store: Any) -> None:
        """Time each group commit's transaction on the log thread (BEGIN to COMMIT,
        ``on_log_transaction``): the server closes a connection silent for
        ``pg.net.connection.timeout``."""
        sessions = getattr(store, "inner", store).sessions
        if not hasattr(sessions, "on_log_transaction"):
            return

        def timed(began: float, ended: float) -> None:
            self.log_txn.append(ended - began)
            self.txn_spans.append((began, ended))

        sessions.on_log_transaction = timed
        self._undo_log = lambda: setattr(sessions, "on_log_transaction", None)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
        else:
            self.gc_spans.append((self._gc_began, time.perf_counter()))
            self.gc.setdefault(int(info["generation"]), []).append(
                time.perf_counter() - self._gc_began
            )

    async def _probe(self) -> None:
        while True:
            due = time.perf_counter() + self.PROBE_S
            await asyncio.sleep(self.PROBE_S)
            late = time.perf_counter() - due
            self.late_max_s = max(self.late_max_s, late)
            self.late_over_1s += late > 1.0

    def start(self) -> None:
        import gc

        gc.callbacks.append(self._on_gc)
        self._task = asyncio.ensure_future(self._probe())

    def stop(self) -> None:
        import gc

        gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
        if self._undo_log is not None:
            self._undo_log()

    def report(self) -> dict[str, Any]:
        txn = sorted(self.log_txn)
        # collections that started while a log transaction was open: the GIL held by
        # the collector while the log is held
        spans = self.txn_spans
        in_txn = [g1 - g0 for g0, g1 in self.gc_spans if any(t0 < g0 < t1 for t0, t1 in spans)]
        return {
            "log_txn_n": len(txn),
            "log_txn_p95_s": round(txn[int(len(txn) * 0.95)], 3) if txn else None,
            "log_txn_max_s": round(txn[-1], 3) if txn else None,
            "log_txn_over_1s": sum(1 for t in txn if t > 1.0),
            "gc_in_log_txn_n": len(in_txn),
            "gc_in_log_txn_max_s": round(max(in_txn), 3) if in_txn else None,
            "loop_late_max_s": round(self.late_max_s, 3),
            "loop_late_over_1s": self.late_over_1s,
            "gc": {
                f"gen{g}": {"n": len(v), "sum_s": round(sum(v), 3), "max_s": round(max(v), 3)}
                for g, v in sorted(self.gc.items())
            },
        }


class _Phases:
    """Calls made during the shutdown, per kind: how many, their summed and longest
    seconds, and when the last one ended (seconds after the shutdown began). The
    backend's own calls are wrapped (below the retry layer): session reads, transitions,
    events, visibility waits, and on QuestDB every tick query by its label."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.calls: dict[str, list[float]] = {}
        self.last_end: dict[str, float] = {}

    def _wrap(self, obj: Any, name: str, label: str) -> Any:
        inner = getattr(obj, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                t1 = time.perf_counter()
                key = label if label != "query" else f"query: {args[2]}"
                self.calls.setdefault(key, []).append(t1 - t0)
                self.last_end[key] = t1 - self.began

        setattr(obj, name, timed)
        return lambda: setattr(obj, name, inner)

    def watch(self, store: Any) -> Any:
        self.began = time.perf_counter()
        backend = getattr(store, "inner", store)
        undo = [
            self._wrap(backend.sessions, "get_session", "get_session"),
            self._wrap(backend.sessions, "transition", "transition"),
            self._wrap(backend.sessions, "add_event", "add_event"),
            self._wrap(backend.ticks, "wait_visible", "wait_visible"),
        ]
        if hasattr(backend.ticks, "_scalar_rows"):
            undo.append(self._wrap(backend.ticks, "_scalar_rows", "query"))

        def restore() -> None:
            for u in undo:
                u()

        return restore

    def report(self) -> dict[str, Any]:
        return {
            key: {
                "n": len(v),
                "sum_s": round(sum(v), 2),
                "max_s": round(max(v), 3),
                "last_end_s": round(self.last_end[key], 2),
            }
            for key, v in sorted(self.calls.items())
        }


SYMBOLS = ["BTC_USDT", "ETH_USDT"]
CREATE_AT_ONCE = 10  # sessions created concurrently by each instance
CREATE_ATTEMPTS = 10  # a create the store refused (a loaded server) is tried again
# Loggers whose INFO lines tell a shutdown's phases (seconds since it began).
_PHASE_LOGGERS = ("ticktape.runtime.supervisor", "ticktape.store.questdb")


def prefill(store_url: str, rows: int) -> float:
    """Write ``2 x rows`` rows of other sessions (3,000 of them; 5 trades to 3 book levels)
    into today's partition of the store's tick tables, from midnight UTC to a minute ago,
    generated by the server (``bench/ticksend.py``'s prefill: ILP from this process took
    11 s per million rows); seconds taken, once QuestDB applied them."""
    from ticksend import _prefill
    from ticktape.store.questdb import QuestDBAddress

    address = QuestDBAddress.from_url(store_url)
    began = time.perf_counter()
    tables = [f"{address.prefix}trades", f"{address.prefix}orderbook"]
    _prefill(address.conninfo, tables, rows * 2)
    return time.perf_counter() - began


async def measure(
    store_url: str,
    sessions: int,
    resumable: int,
    hold_s: float,
    symbols: int = 2,
    ballast_objects: int = 0,
    py_spy_s: float = 0.0,
    py_spy_out: str = "",
    instances: int = 1,
    sync: bool = False,
) -> dict[str, Any]:
    from ticktape.api.heap import tune_collector
    from ticktape.config import Settings
    from ticktape.domain import SessionStatus, validate_spec
    from ticktape.metrics import Metrics
    from ticktape.runners import default_runners
    from ticktape.runtime.supervisor import Supervisor
    from ticktape.service import SessionService
    from ticktape.store import open_store

    errors = _Errors()
    logging.getLogger().addHandler(errors)
    settings = Settings(
        store_url=store_url,
        instance_name=f"bench-shutdown-{os.getpid()}",
        max_running_per_instance=max(sessions, 200),
        max_running_per_store=max(sessions * instances * 2, 1000),
    )
    store = open_store(store_url)
    await store.open()
    metrics = Metrics()
    supervisor = Supervisor(store, settings, metrics, default_runners())
    await supervisor.start()
    tune_collector()  # as ``ticktape serve`` does once started
    # live objects of a long-held server's size: small lists (tracked by the collector,
    # as the sessions' dicts and objects are), 1,000 a list
    ballast = [
        [[float(i), i] for i in range(n, min(n + 1000, ballast_objects))]
        for n in range(0, ballast_objects, 1000)
    ]
    service = SessionService(store, supervisor, settings, metrics)
    from ticktape.errors import StoreError

    async def create(n: int) -> str:
        policy = "resume" if n < resumable else "fail"
        spec = validate_spec(
            kind="collect", symbols=SYMBOLS[:symbols], seed=n, on_owner_loss=policy
        )
        for attempt in range(CREATE_ATTEMPTS):
            try:
                return (await service.create(spec)).id
            except StoreError:  # a loaded server refused a connect: again, as a client would
                if attempt == CREATE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(1.0)
        raise AssertionError("unreachable")

    ids: list[str] = []
    for at in range(0, sessions, CREATE_AT_ONCE):  # a few at once: 3,000 took minutes in turn
        chunk = range(at, min(at + CREATE_AT_ONCE, sessions))
        ids += await asyncio.gather(*(create(n) for n in chunk))
    await asyncio.sleep(hold_s)
    if sync:  # the parent says when: every instance's shutdown begins together
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
    print(_BEGINS, file=sys.stderr, flush=True)
    groups: list[int] = []
    ticks = getattr(store, "inner", store).ticks
    if hasattr(ticks, "on_count_group"):
        ticks.on_count_group = lambda ids: groups.append(len(ids))

    seal_s: list[float] = []
    sealing = store.ticks.seal

    async def timed_seal(session_id: str, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await sealing(session_id, **kwargs)
        finally:
            seal_s.append(time.perf_counter() - began)

    store.ticks.seal = timed_seal  # type: ignore[method-assign]
    phases = _Phases()
    undo = phases.watch(store)
    before_errors = errors.count
    stalls = _Stalls()
    spy = None
    if py_spy_s:
        spy = await asyncio.create_subprocess_exec(
            os.path.join(os.path.dirname(sys.executable), "py-spy"),
            "record",
            "-p",
            str(os.getpid()),
            "-d",
            str(int(py_spy_s)),
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            py_spy_out,
            "--nonblocking",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    stalls.watch_log(store)
    stalls.start()
    began = time.perf_counter()
    await supervisor.shutdown(float(os.environ.get("TICKTAPE_SHUTDOWN_GRACE_S", "20")))
    shutdown_s = time.perf_counter() - began
    stalls.stop()
    undo()
    if hasattr(ticks, "on_count_group"):
        ticks.on_count_group = None
    del ballast
    if spy is not None:
        await spy.wait()
    errors_at_stop = dict(errors.kinds)
    store.ticks.seal = sealing  # type: ignore[method-assign]

    states: Counter[str] = Counter()
    await store.ticks.wait_visible(60)
    ended = {}
    for sid in ids:
        session = await store.sessions.get_session(sid)
        handed = session.status is SessionStatus.RUNNING and session.lease_expires_at is None
        states["handed_over" if handed else session.status.value] += 1
        if session.is_terminal or handed:
            ended[sid] = session.stats.trades + session.stats.orderbook
    stored = await stored_rows(store_url, store, list(ended))
    mismatched = sum(1 for sid, n in ended.items() if stored.get(sid, 0) != n)
    # ended here: clean up what was handed over so the next round starts alike
    for sid in ids:
        session = await store.sessions.get_session(sid)
        if not session.is_terminal:
            await service.stop(sid, wait=False)
    await store.close()
    seal_s.sort()
    return {
        "sessions": sessions,
        "resumable": resumable,
        "hold_s": hold_s,
        "shutdown_s": round(shutdown_s, 2),
        "seals": len(seal_s),
        "count_groups": groups,
        "symbols": symbols,
        "seal_p50_s": round(seal_s[len(seal_s) // 2], 3) if seal_s else None,
        "seal_p95_s": round(seal_s[int(len(seal_s) * 0.95)], 3) if seal_s else None,
        "seal_max_s": round(seal_s[-1], 3) if seal_s else None,
        "errors_logged": errors.count - before_errors,
        "cancelled": sum(n for kind, n in errors_at_stop.items() if "did not stop" in kind),
        "error_kinds": dict(sorted(errors_at_stop.items(), key=lambda kv: -kv[1])[:6]),
        "end_states": dict(states),
        "stats_not_rows": mismatched,
        "phases": phases.report(),
        "stalls": stalls.report(),
    }


async def stored_rows(store_url: str, store: Any, ids: list[str]) -> dict[str, int]:
    """Each session's stored trades + snapshots. On QuestDB counted apart from the store
    under test, in one grouped query per table over the raw rows (no session of this
    bench is reaped or claimed, so no row is fenced): the old per-session count took
    a scan of the day's partition per session, as long as the shutdown it checks."""
    if not store_url.startswith("questdb://"):
        out = {}
        for sid in ids:
            counts = await store.ticks.count(sid)
            out[sid] = counts.trades + counts.orderbook
        return out
    import psycopg

    from ticktape.store.questdb import QuestDBAddress

    address = QuestDBAddress.from_url(store_url)
    out = dict.fromkeys(ids, 0)
    async with await psycopg.AsyncConnection.connect(address.conninfo, autocommit=True) as conn:
        for table, extra in (("trades", ""), ("orderbook", " AND level = 0")):
            for at in range(0, len(ids), 500):
                part = ids[at : at + 500]
                marks = ", ".join("%s" for _ in part)
                cur = await conn.execute(
                    f"SELECT session_id, count() FROM {address.prefix}{table} "
                    f"WHERE session_id IN ({marks}){extra}",
                    part,
                )
                for sid, n in await cur.fetchall():
                    out[str(sid)] += int(n)
    return out


def drop_tables(store_url: str) -> None:
    """Drop every table of the store URL's prefix (a child's own tables)."""
    import psycopg

    from ticktape.store.questdb import QuestDBAddress

    address = QuestDBAddress.from_url(store_url)
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        names = [str(r[0]) for r in conn.execute("SELECT table_name FROM tables()").fetchall()]
        for name in names:
            if name.startswith(address.prefix):
                conn.execute(f'DROP TABLE "{name}"')


class _Probe:
    """From another process than the instances: a fresh PostgreSQL-wire connect plus
    ``SELECT 1`` every ``EVERY_S`` (the store's 5 s connect timeout), on a thread, while
    the instances stop — whether the server still takes a connection (stop 20: from 8 s
    after the SIGTERM, none did)."""

    EVERY_S = 0.15

    def __init__(self, store_url: str) -> None:
        import threading

        from ticktape.store.questdb import QuestDBAddress

        self._conninfo = QuestDBAddress.from_url(store_url).conninfo
        self.took: list[float] = []
        self.failed = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        while not self._done.is_set():
            due = time.monotonic() + self.EVERY_S
            began = time.monotonic()
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute("SELECT 1").fetchall()
                self.took.append(time.monotonic() - began)
            except psycopg.OperationalError:
                self.failed += 1
            self._done.wait(max(0.0, due - time.monotonic()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self._thread.join()
        took = sorted(self.took)
        return {
            "probe_n": len(took),
            "probe_failed": self.failed,
            "probe_p50_s": round(took[len(took) // 2], 3) if took else None,
            "probe_p95_s": round(took[int(len(took) * 0.95)], 3) if took else None,
            "probe_max_s": round(took[-1], 3) if took else None,
            "probe_over_1s": sum(1 for t in took if t > 1.0),
        }


def _instances(cmd: list[str], env: dict[str, str], n: int, store_url: str) -> list[Any]:
    """Run ``n`` children of ``cmd`` (instances of one store), start their shutdowns
    together once all held, probe the server while they stop; their results."""
    import tempfile

    # each child's stderr; closed once read, below
    logs = [tempfile.TemporaryFile("w+") for _ in range(n)]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
        )
        for err in logs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "READY":
                raise SystemExit(f"a child ended before its shutdown ({proc.wait()})")
        probe = _Probe(store_url) if store_url.startswith("questdb://") else None
        if probe is not None:
            probe.start()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outs = [proc.communicate()[0] for proc in procs]
        probed = probe.stop() if probe is not None else {}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        texts = []
        for err in logs:
            err.seek(0)
            texts.append(err.read())
            err.close()
        for text in texts:  # the children's log, as before, on this process's stderr
            sys.stderr.write(text)
    results = []
    for proc, out, text in zip(procs, outs, texts, strict=True):
        if proc.returncode != 0:
            raise SystemExit(f"a child failed ({proc.returncode})")
        result = json.loads(out.strip().splitlines()[-1])
        result["stop_phases"] = stop_phases(text)
        result["stop_retries"] = stop_retries(text)
        results.append(result)
    # the probe covers every instance's stop: reported with the first
    results[0].update(probed)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="a store URL (questdb://… or sqlite:…)")
    parser.add_argument("--sessions", type=int, default=200, help="per instance")
    parser.add_argument("--instances", type=int, default=1, help="of one store, stopped together")
    parser.add_argument("--resumable", type=int, default=0)
    parser.add_argument("--hold-s", type=float, default=60.0)
    parser.add_argument(
        "--prefill-ticks",
        type=int,
        default=0,
        help="QuestDB: 2 x N rows of other sessions written first into today's partition",
    )
    parser.add_argument(
        "--symbols",
        type=int,
        choices=(1, 2),
        default=2,
        help="symbols per session (1: bench/capacity.py's sessions)",
    )
    parser.add_argument("--ballast-objects", type=int, default=0)
    parser.add_argument("--py-spy-s", type=float, default=0.0)
    parser.add_argument("--py-spy-out", default="/tmp/shutdown-spy.txt")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--code", action="append", metavar="LABEL=SRC")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sync", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        logging.basicConfig(
            level=logging.WARNING,
            stream=sys.stderr,
            format=f"%(asctime)s i{os.getpid()} %(name)s %(levelname)s %(message)s",
        )
        for name in _PHASE_LOGGERS:  # the shutdown's phase lines (INFO)
            logging.getLogger(name).setLevel(logging.INFO)
        result = asyncio.run(
            measure(
                args.store,
                args.sessions,
                args.resumable,
                args.hold_s,
                args.symbols,
                args.ballast_objects,
                args.py_spy_s,
                args.py_spy_out,
                args.instances,
                args.sync,
            )
        )
        print(json.dumps(result))
        return
    codes = [c.split("=", 1) for c in (args.code or ["this=src"])]
    results: dict[str, list[Any]] = {label: [] for label, _ in codes}
    shared = ""  # QuestDB, prefilled: one set of tables for every child of every round
    if args.prefill_ticks and args.store.startswith("questdb://"):
        shared = with_prefix(args.store, f"qsd{os.getpid()}_")
        env = {**os.environ, "PYTHONPATH": os.path.abspath(codes[-1][1])}
        subprocess.run([sys.executable, "-c", _MAKE_TABLES, shared], env=env, check=True)
        took = prefill(shared, args.prefill_ticks)
        print(f"prefilled {2 * args.prefill_ticks} rows in {took:.0f} s", flush=True)
    try:
        for round_ in range(args.rounds):
            for label, src in codes:
                env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
                url = args.store
                if shared:
                    url = shared
                elif url.startswith("questdb://"):  # each child its own tables, alike at start
                    url = with_prefix(url, f"qsd{os.getpid()}_{code_tag(label)}{round_}_")
                cmd = [sys.executable, __file__, "--child", "--sync", "--store", url]
                cmd += ["--sessions", str(args.sessions), "--resumable", str(args.resumable)]
                cmd += ["--hold-s", str(args.hold_s), "--instances", str(args.instances)]
                cmd += ["--symbols", str(args.symbols)]
                cmd += ["--ballast-objects", str(args.ballast_objects)]
                if args.py_spy_s:
                    out = f"{args.py_spy_out}.{label}{round_}"
                    cmd += ["--py-spy-s", str(args.py_spy_s), "--py-spy-out", out]
                try:
                    began = time.perf_counter()
                    each = _instances(cmd, env, args.instances, url)
                    wall = time.perf_counter() - began
                finally:
                    if url.startswith("questdb://") and not shared:
                        drop_tables(url)
                result = each[0] if len(each) == 1 else {"instances": each}
                result["child_wall_s"] = round(wall, 1)
                result["prefill_ticks"] = args.prefill_ticks
                result["load_avg_1m"] = round(os.getloadavg()[0], 2)
                results[label].append(result)
                print(f"round {round_ + 1} {label}: {json.dumps(result)}", flush=True)
                print(f"round {round_ + 1} {label} in short: {json.dumps(_short(each))}")
                print(f"round {round_ + 1} {label} phases:\n{phase_table(each)}", flush=True)
    finally:
        if shared:
            drop_tables(shared)  # prefilled tables hold gigabytes
    print(json.dumps(results))


_PHASE_LINE = re.compile(r"stop phase ([\w ]+): (.*)$")
_RETRY_LINE = re.compile(r"ticktape.retry WARNING (\w+) failed \((.{0,40})")
_BEGINS = "-- shutdown begins --"  # a child's stderr, when it is told to shut down


def stop_retries(text: str) -> dict[str, int]:
    """The store boundary's retries logged after the shutdown began, per operation and
    the start of their error (``ticktape.retry``: a "table busy" that the session log's
    own busy retry gave up on, a connect refused, ...)."""
    counts: Counter[str] = Counter()
    for line in text.partition(_BEGINS)[2].splitlines():
        found = _RETRY_LINE.search(line)
        if found is not None:
            counts[f"{found.group(1)}: {found.group(2)}"] += 1
    return dict(counts.most_common(6))


def stop_phases(text: str) -> list[dict[str, Any]]:
    """The ``stop phase <name>: k=v ...`` lines of an instance's log (the supervisor's and
    the store's INFO lines of its shutdown), in order: each a dict with its ``phase``."""
    phases = []
    for line in text.splitlines():
        found = _PHASE_LINE.search(line)
        if found is None:
            continue
        entry: dict[str, Any] = {"phase": found.group(1)}
        for pair in found.group(2).split():
            key, _, value = pair.partition("=")
            try:
                entry[key] = float(value) if "." in value else int(value)
            except ValueError:
                entry[key] = value
        phases.append(entry)
    return phases


# Per phase, the figures its table row shows (the first of each instance's lines of it;
# count groups and seal gatherings, every one).
_PHASE_FIGURES = {
    "stops": ("sessions", "handed_over", "unrecorded", "at_s"),
    "seal gather": ("queued", "expected", "why", "waited_s", "at_s"),
    "count group": ("sessions", "sealing", "query_s", "at_s"),
    "drains": ("runs", "first_s", "last_s"),
    "ends": ("runs", "first_s", "last_s"),
    "session log": ("groups", "appends", "busy_retries", "busy_wait_s", "first_s", "last_s"),
    "shutdown": ("cancelled", "at_s"),
}


def phase_table(each: list[dict[str, Any]]) -> str:
    """A table of the shutdown's phases, a column per instance (seconds since its start)."""
    rows = []
    for name, keys in _PHASE_FIGURES.items():
        cells = []
        for result in each:
            lines = [p for p in result.get("stop_phases", []) if p["phase"] == name]
            cells.append(
                "; ".join(" ".join(f"{k}={p.get(k, '-')}" for k in keys) for p in lines) or "-"
            )
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    retries = ["; ".join(f"{k} x{n}" for k, n in r.get("stop_retries", {}).items()) for r in each]
    rows.append("| boundary retries | " + " | ".join(c or "0" for c in retries) + " |")
    head = "| phase | " + " | ".join(f"instance {n + 1}" for n in range(len(each))) + " |"
    rule = "| --- |" + " --- |" * len(each)
    return "\n".join([head, rule, *rows])


def _short(each: list[dict[str, Any]]) -> dict[str, Any]:
    """Per instance: the shutdown's wall, runners cancelled, count groups, seal p50/p95;
    and the probe of the server during the stops."""
    keys = ("shutdown_s", "cancelled", "count_groups", "seal_p50_s", "seal_p95_s")
    short: dict[str, Any] = {key: [r.get(key) for r in each] for key in keys}
    short |= {k: v for k, v in each[0].items() if k.startswith("probe_")}
    return short


# Run in a child with the code's PYTHONPATH: the product makes its tables (prefix from
# the URL), so the prefill has them to fill.
_MAKE_TABLES = """
import asyncio, sys
from ticktape.store import open_store
async def make():
    store = open_store(sys.argv[1])
    await store.open()
    await store.close()
asyncio.run(make())
"""


if __name__ == "__main__":
    main()
