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

``--prefill-ticks N`` (QuestDB) first writes N trade rows and N order-book rows of
other sessions into today's partition of the child's tick tables, so the seals scan a
partition the size a long-running store has (a seal's queries read the day's partition;
on empty tables they cost nothing and say nothing about a real shutdown).

``--code LABEL=SRC`` (repeatable) runs the same measurement once per tree, in a
child process whose ``ticktape`` is imported from SRC, alternating codes round
after round on one server (``--rounds``); on QuestDB each child gets tables of its own
(a fresh prefix), so every measurement starts from the same empty store:

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
PREFILL_SESSIONS = 300  # the other sessions the prefilled rows belong to
PREFILL_CHUNK = 1_000_000  # rows per ILP request of the prefill


def prefill(store_url: str, rows: int) -> float:
    """Write ``rows`` trades and ``rows`` book levels of other sessions into today's
    partition (over the last hours, before now) of the store's tick tables; seconds taken."""
    import numpy as np
    import pandas as pd
    from questdb import Sender

    from ticktape.store.questdb import QuestDBAddress

    address = QuestDBAddress.from_url(store_url)
    began = time.perf_counter()
    now_us = time.time_ns() // 1000
    midnight_us = now_us - now_us % 86_400_000_000
    start_us = max(midnight_us, now_us - 4 * 3_600_000_000)
    end_us = now_us - 60_000_000
    ids = pd.CategoricalDtype([f"prefill-{n:04d}" for n in range(PREFILL_SESSIONS)])
    symbols = pd.CategoricalDtype(["BTC_USDT", "ETH_USDT"])
    rng = np.random.default_rng(7)
    with Sender.from_conf(address.ilp_conf) as sender:
        for at in range(0, rows, PREFILL_CHUNK):
            n = min(PREFILL_CHUNK, rows - at)
            seq = np.arange(at, at + n, dtype=np.int64)
            ts = pd.to_datetime(start_us + seq * (end_us - start_us) // rows, unit="us")
            common = {
                "session_id": pd.Categorical.from_codes(seq % PREFILL_SESSIONS, dtype=ids),
                "symbol": pd.Categorical.from_codes((seq // 7) % 2, dtype=symbols),
                "ts": ts,
                "tenure": np.ones(n, np.int64),
                "batch_seq": seq // 50,
                "recv_us": ts.astype("int64") // 1000,
                "send_id": seq // 5_000 + 1,
            }
            trades = pd.DataFrame(
                {
                    **common,
                    "trade_id": seq,
                    "price": rng.uniform(100, 200, n),
                    "qty": rng.uniform(0, 1, n),
                    "side": pd.Categorical.from_codes(
                        (seq % 2).astype(np.int8), dtype=pd.CategoricalDtype(["sell", "buy"])
                    ),
                }
            )
            sender.dataframe(
                trades,
                table_name=f"{address.prefix}trades",
                symbols=["session_id", "symbol", "side"],
                at="ts",
            )
            sender.flush()
            books = pd.DataFrame(
                {
                    **common,
                    "level": (seq % 10).astype(np.int32),
                    "bid_price": rng.uniform(100, 200, n),
                    "bid_qty": rng.uniform(0, 1, n),
                    "ask_price": rng.uniform(100, 200, n),
                    "ask_qty": rng.uniform(0, 1, n),
                }
            )
            sender.dataframe(
                books,
                table_name=f"{address.prefix}orderbook",
                symbols=["session_id", "symbol"],
                at="ts",
            )
            sender.flush()
    return time.perf_counter() - began


async def measure(
    store_url: str,
    sessions: int,
    resumable: int,
    hold_s: float,
    prefill_ticks: int = 0,
    symbols: int = 2,
    ballast_objects: int = 0,
    py_spy_s: float = 0.0,
    py_spy_out: str = "",
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
        max_running_per_store=max(sessions * 2, 1000),
    )
    store = open_store(store_url)
    await store.open()
    prefill_s = 0.0
    if prefill_ticks:
        prefill_s = await asyncio.to_thread(prefill, store_url, prefill_ticks)
        await store.ticks.wait_visible(600)
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
    ids = []
    for n in range(sessions):
        policy = "resume" if n < resumable else "fail"
        spec = validate_spec(
            kind="collect", symbols=SYMBOLS[:symbols], seed=n, on_owner_loss=policy
        )
        ids.append((await service.create(spec)).id)
    await asyncio.sleep(hold_s)

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
    await supervisor.shutdown()
    shutdown_s = time.perf_counter() - began
    stalls.stop()
    undo()
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
        "symbols": symbols,
        "prefill_ticks": prefill_ticks,
        "prefill_s": round(prefill_s, 1),
        "seal_p50_s": round(seal_s[len(seal_s) // 2], 3) if seal_s else None,
        "seal_p95_s": round(seal_s[int(len(seal_s) * 0.95)], 3) if seal_s else None,
        "seal_max_s": round(seal_s[-1], 3) if seal_s else None,
        "errors_logged": errors.count - before_errors,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="a store URL (questdb://… or sqlite:…)")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--resumable", type=int, default=0)
    parser.add_argument("--hold-s", type=float, default=60.0)
    parser.add_argument(
        "--prefill-ticks",
        type=int,
        default=0,
        help="QuestDB: trades and book rows of other sessions written first into today's partition",
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
    args = parser.parse_args()
    if args.child:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        result = asyncio.run(
            measure(
                args.store,
                args.sessions,
                args.resumable,
                args.hold_s,
                args.prefill_ticks,
                args.symbols,
                args.ballast_objects,
                args.py_spy_s,
                args.py_spy_out,
            )
        )
        print(json.dumps(result))
        return
    codes = [c.split("=", 1) for c in (args.code or ["this=src"])]
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in codes}
    for round_ in range(args.rounds):
        for label, src in codes:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
            url = args.store
            if url.startswith("questdb://"):  # each child its own tables, all alike at start
                tag = "".join(c for c in label.lower() if c.isalnum())[:8]
                url += f"{'&' if '?' in url else '?'}prefix=qsd{os.getpid()}_{tag}{round_}_"
            cmd = [sys.executable, __file__, "--child", "--store", url]
            cmd += ["--sessions", str(args.sessions), "--resumable", str(args.resumable)]
            cmd += ["--hold-s", str(args.hold_s), "--prefill-ticks", str(args.prefill_ticks)]
            cmd += ["--symbols", str(args.symbols)]
            cmd += ["--ballast-objects", str(args.ballast_objects)]
            if args.py_spy_s:
                out = f"{args.py_spy_out}.{label}{round_}"
                cmd += ["--py-spy-s", str(args.py_spy_s), "--py-spy-out", out]
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            finally:
                if url.startswith("questdb://"):
                    drop_tables(url)  # a prefilled child's tables hold gigabytes
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{label}: the child failed ({done.returncode})")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["load_avg_1m"] = round(os.getloadavg()[0], 2)
            results[label].append(result)
            print(f"round {round_ + 1} {label}: {json.dumps(result)}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
