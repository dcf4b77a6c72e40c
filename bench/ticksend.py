"""QuestDB's send path per tick: the instance's frames and serialisation, and the JVM.

``frames`` mode (no server): one grouped send of ``--sessions`` sessions x one flush
interval of the simulated feed at its default rate (per session 5 trades and one
3-level book snapshot), built into the ILP frames by ``trades_frame`` / ``book_frame``
and serialised into a client ``Buffer`` by ``serialise_frame`` — the instance's CPU
per tick for a grouped send, minus the network. Prints µs per stored tick (a trade or
a snapshot), the best of ``--repeat`` after a warm-up, per phase — the thread's CPU time
(``time.thread_time``), so that other processes on a loaded machine do not count.

``ingest`` mode (a QuestDB server): ``--senders`` threads, each one instance's grouped
sender (``--sessions`` sessions, one send per flush interval, fresh ticks every time)
into the product's tables (``QuestDBStore`` makes them, under a fresh prefix), for
``--seconds`` (with ``--check-owners`` each send first runs the store's ownership query
for its sessions, whose log rows are seeded); prints the JVM's CPU per stored tick
(``--questdb-pid``, from /proc), its WAL transactions, and then the PostgreSQL-wire
round trip after the server sat idle (``--idle-s`` between queries): what a heartbeat's
renewal meets. ``--prefill-rows N`` first fills today's partition of both tables with N
rows (5 trades to 3 book levels, as the sim sends them, stamped from midnight UTC to a
minute ago, in order) and waits for QuestDB to apply them: the ingest then meets the
partition a long hold has grown. The WAL apply is sampled every second: transactions
committed and applied per second, and the apply lag (transactions committed, not yet
applied; its maximum and its value at the end) — whether QuestDB keeps up. The bench's
tables are dropped at the end. Start the server with ``ticktape questdb start
--pg-idle-timeout-s 300``: the managed default closes a PG-wire connection silent for
1.5 s, and a sender's ownership-check connection is silent while it builds its next
send (longer than that on a loaded machine).

Both modes take ``--code NAME=SRC`` (repeatable): each round runs once per code in a
child process whose ``ticktape`` is imported from SRC, the codes alternated round by
round (``--rounds``), so that a loaded machine disturbs them alike. Last line: JSON.

    .venv/bin/python bench/ticksend.py frames --code before=/tmp/before/src --code after=src
    .venv/bin/python bench/ticksend.py ingest --questdb-url URL --questdb-pid PID \\
        --senders 3 --sessions 1000 --seconds 30 --code before=... --code after=src
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from codes import with_prefix
from ticktape.domain import SessionStatus

FLUSH_S = 0.25  # config.FLUSH_INTERVAL_S: one grouped send per instance per interval


def _group(sessions: int, start_us: int, seed: int = 0) -> list[Any]:
    """Feeds for ``sessions`` sessions of one symbol at the sim's default rate."""
    from ticktape.feeds.sim import SimExchange

    return [
        SimExchange(str(uuid.uuid4()), ("BTC_USDT",), seed=seed + i, start_us=start_us)
        for i in range(sessions)
    ]


def _split(batches: list[Any]) -> tuple[list[Any], list[Any]]:
    from ticktape.ticks import BookBatch, TradeBatch

    return (
        [b for b in batches if isinstance(b, TradeBatch)],
        [b for b in batches if isinstance(b, BookBatch)],
    )


def _buffer() -> Any:
    with warnings.catch_warnings():  # the legacy import path is where Buffer lives
        warnings.simplefilter("ignore", DeprecationWarning)
        from questdb.ingress import Buffer
    return Buffer(protocol_version=2)  # what an ILP/HTTP sender negotiates with 9.x


def _marked(trades: list[Any], books: list[Any]) -> dict[str, Any]:
    """The send marks the store writes with each row (``send_marks``), as keyword
    arguments of ``trades_frame`` / ``book_frame``; none with a tree that has none."""
    import ticktape.store.questdb as q

    marks = getattr(q, "send_marks", None)
    return {} if marks is None else {"marks": marks(time.time_ns(), trades, books)}


def child_frames(sessions: int, repeat: int) -> dict[str, Any]:
    from ticktape.store.questdb import book_frame, serialise_frame, trades_frame

    feeds = _group(sessions, 1_700_000_000_000_000)
    batches = [b for f in feeds for b in f.next_block(recv_us=1_700_000_000_250_000)]
    trades, books = _split(batches)
    tenures = {b.session_id: 1 for b in batches}
    ticks = sum(len(b) for b in batches)
    buffer = _buffer()
    build, serialise = [], []
    for _ in range(repeat + 3):
        marked = _marked(trades, books)  # on the event loop in the store, not the sender's
        t0 = time.thread_time()
        frames = [("tt_trades", trades_frame(trades, tenures, **marked))]
        frames.append(("tt_orderbook", book_frame(books, tenures, **marked)))
        t1 = time.thread_time()
        for table, frame in frames:
            serialise_frame(buffer, table, frame)
        t2 = time.thread_time()
        size = len(buffer)
        buffer.clear()
        build.append(t1 - t0)
        serialise.append(t2 - t1)
    build, serialise = build[3:], serialise[3:]  # warm-up
    return {
        "ticks": ticks,
        "rows": sum(len(f) for _, f in frames),
        "ilp_bytes": size,
        "frames_us_per_tick": round(1e6 * min(build) / ticks, 3),
        "serialise_us_per_tick": round(1e6 * min(serialise) / ticks, 3),
        "total_us_per_tick": round(1e6 * (min(build) + min(serialise)) / ticks, 3),
    }


def _jvm_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


def _jvm_gc_s(pid: int) -> float:
    """The JVM's garbage collection time so far (``jstat``), or NaN without it."""
    try:
        out = subprocess.run(
            ["jstat", "-gc", str(pid)], capture_output=True, text=True, timeout=10, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return float("nan")
    half = len(out) // 2
    return float(dict(zip(out[:half], out[half:], strict=True)).get("GCT", "nan"))


def _parts(conninfo: str, table: str) -> int:
    """The table's partition parts on disk (a split partition counts each piece)."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        return len(conn.execute(f"SHOW PARTITIONS FROM {table}").fetchall())


def _wal_txns(conninfo: str, tables: list[str]) -> int:
    return _wal(conninfo, tables)[0]


def _wal(conninfo: str, tables: list[str]) -> tuple[int, int]:
    """The tables' WAL transactions: committed (sequencer) and applied (writer)."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT sum(sequencerTxn), sum(writerTxn) FROM wal_tables() WHERE name IN "
            f"({', '.join('%s' for _ in tables)})",
            tables,
        ).fetchall()
    return int(rows[0][0] or 0), int(rows[0][1] or 0)


def _prefill(conninfo: str, tables: list[str], rows: int) -> dict[str, Any]:
    """``rows`` ticks into today's partition of the trades and book tables (5 trades to
    3 book levels), 3,000 sessions' worth, in timestamp order from midnight UTC to a
    minute ago, generated by the server (``long_sequence``: ILP from one client thread
    took 11 s per million rows); returns once QuestDB applied them."""
    import psycopg

    now_us = int(time.time() * 1e6)
    day_us = now_us - now_us % 86_400_000_000
    end_us = now_us - 60_000_000
    chunk = 5_000_000
    t0 = time.monotonic()
    counts = {tables[0]: rows * 5 // 8, tables[1]: rows * 3 // 8}
    shapes = {
        tables[0]: (
            "trade_id, price, qty, side",
            "x, 30000 + rnd_double(), rnd_double(), CASE WHEN x % 2 = 0 THEN 'buy' ELSE 'sell' END",
        ),
        tables[1]: (
            "level, bid_price, bid_qty, ask_price, ask_qty",
            "cast(x % 3 AS int), 30000 - rnd_double(), rnd_double(), 30000 + rnd_double(), "
            "rnd_double()",
        ),
    }
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table, n in counts.items():
            step = max(1, (end_us - day_us) // max(n, 1))
            names, values = shapes[table]
            for lo in range(0, n, chunk):
                k = min(chunk, n - lo)
                at = f"{day_us} + ({lo} + x) * {step}"
                conn.execute(
                    f"INSERT INTO {table} (session_id, symbol, {names}, ts, tenure, batch_seq, "
                    f"recv_us) SELECT 'p' || (x % 3000), 'BTC_USDT', {values}, "
                    f"cast({at} AS timestamp), 1, {lo} + x, {at} FROM long_sequence({k})"
                )
    sent_s = time.monotonic() - t0
    while True:  # applied: every committed transaction is in the table
        committed, applied = _wal(conninfo, tables)
        if applied >= committed:
            break
        time.sleep(0.5)
    took = time.monotonic() - t0
    return {
        "prefill_rows": sum(counts.values()),
        "prefill_sent_s": round(sent_s, 1),
        "prefill_applied_s": round(took, 1),
        "prefill_rows_per_s": round(sum(counts.values()) / took),
    }


def _logged(session_id: str) -> Any:
    from datetime import timedelta

    from ticktape.domain import DataType, Session, SessionConfig, SessionKind, utcnow

    now = utcnow()
    return Session(
        id=session_id,
        kind=SessionKind.COLLECT,
        status=SessionStatus.PENDING,
        symbols=("BTC_USDT",),
        exchange="sim",
        data_types=(DataType.TRADES, DataType.ORDERBOOK),
        config=SessionConfig(),
        created_at=now,
        owner="bench/ticksend",
        lease_expires_at=now + timedelta(hours=1),
    )


def child_ingest(
    url: str,
    pid: int,
    senders: int,
    sessions: int,
    seconds: float,
    idle_s: float,
    check_owners: bool,
    send_every_s: float = FLUSH_S,
    warm_up_s: float = 5.0,
    prefill_rows: int = 0,
    sort_ts: bool = False,
) -> dict[str, Any]:
    import asyncio

    import psycopg

    from ticktape.store.questdb import (
        QuestDBAddress,
        QuestDBStore,
    )

    prefix = f"send{uuid.uuid4().hex[:8]}_"
    store_url = with_prefix(url, prefix)
    address = QuestDBAddress.from_url(store_url)

    start_us = int(time.time() * 1e6)
    groups = [_group(sessions, start_us, seed=k * sessions) for k in range(senders)]

    async def make_tables() -> None:
        store = QuestDBStore(store_url)
        await store.open()
        try:
            if check_owners:  # the sessions' log rows, for the ownership query to find
                for feeds in groups:
                    await store.sessions.append_history(
                        [_logged(f.session_id) for f in feeds],
                        to_status=SessionStatus.FAILED,
                        reason="start_failed",
                        actor="bench",
                    )
        finally:
            await store.close()

    asyncio.run(make_tables())
    tables = [f"{prefix}trades", f"{prefix}orderbook"]
    try:
        return _ingest(
            address, pid, groups, tables, prefix, seconds, idle_s, check_owners,
            send_every_s, warm_up_s, prefill_rows, sort_ts,
        )  # fmt: skip
    finally:  # the bench's tables go: a prefilled run leaves gigabytes otherwise
        with psycopg.connect(address.conninfo, autocommit=True) as conn:
            names = conn.execute(
                "SELECT table_name FROM tables() WHERE table_name LIKE %s", [prefix + "%"]
            ).fetchall()
            for (name,) in names:
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')


def _ingest(
    address: Any,
    pid: int,
    groups: list[list[Any]],
    tables: list[str],
    prefix: str,
    seconds: float,
    idle_s: float,
    check_owners: bool,
    send_every_s: float,
    warm_up_s: float,
    prefill_rows: int,
    sort_ts: bool,
) -> dict[str, Any]:
    import psycopg
    from questdb import Sender

    from ticktape.store.questdb import book_frame, serialise_frame, trades_frame

    senders = len(groups)
    prefilled = _prefill(address.conninfo, tables, prefill_rows) if prefill_rows else {}
    log_table = f"{prefix}session_log"
    stored = [0] * senders
    blocks = max(1, round(send_every_s / FLUSH_S))
    checked = [0] * senders
    stop = threading.Event()
    errors: list[str] = []

    def sender(k: int) -> None:
        try:
            ids = [f.session_id for f in groups[k]]
            # the grouped send's ownership check: one query for the group's sessions
            # (the same shape as QuestDBTickStore's, which is private to the store)
            owners = (
                f"SELECT id, status, owner, tenure FROM {log_table} WHERE id IN "
                f"({', '.join('%s' for _ in ids)}) LATEST ON ts PARTITION BY id"
            )
            with (
                Sender.from_conf(address.ilp_conf) as s,
                psycopg.connect(address.conninfo, autocommit=True) as pg,
            ):
                due = time.monotonic()
                while not stop.is_set():
                    if check_owners:
                        checked[k] += len(pg.execute(owners, ids).fetchall())
                    # one block per flush interval: a slower pace sends more per request
                    batches = [b for f in groups[k] for _ in range(blocks) for b in f.next_block()]
                    trades, books = _split(batches)
                    tenures = {b.session_id: 1 for b in batches}
                    marked = _marked(trades, books)
                    for table, frame in (
                        (tables[0], trades_frame(trades, tenures, **marked)),
                        (tables[1], book_frame(books, tenures, **marked)),
                    ):
                        if sort_ts:  # each transaction in timestamp order
                            frame = frame.sort_values("ts", kind="stable", ignore_index=True)
                        serialise_frame(s, table, frame)
                    s.flush()
                    stored[k] += sum(len(b) for b in batches)
                    due += send_every_s
                    stop.wait(max(0.0, due - time.monotonic()))
        except Exception as exc:  # reported, and the run counts as failed
            errors.append(f"sender {k}: {exc!r}")

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    time.sleep(warm_up_s)  # the tables' first partitions, the JIT
    gc0 = _jvm_gc_s(pid)
    cpu0, txn0, ticks0, t0 = (
        _jvm_cpu_s(pid),
        _wal_txns(address.conninfo, tables),
        sum(stored),
        (time.monotonic()),
    )
    applied0 = _wal(address.conninfo, tables)[1]
    lags: list[int] = []  # transactions committed and not yet applied, once a second
    while time.monotonic() < t0 + seconds:
        time.sleep(min(1.0, max(0.0, t0 + seconds - time.monotonic())))
        committed, applied = _wal(address.conninfo, tables)
        lags.append(committed - applied)
    cpu1, (txn1, applied1), ticks1, t1 = (
        _jvm_cpu_s(pid),
        _wal(address.conninfo, tables),
        sum(stored),
        (time.monotonic()),
    )
    gc1 = _jvm_gc_s(pid)
    parts = [_parts(address.conninfo, t) for t in tables]
    stop.set()
    for t in threads:
        t.join()
    ticks = ticks1 - ticks0
    # PG round trips after idle: the wake-up a renewal pays when the server had nothing to do
    waits = []
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        for _ in range(3):
            time.sleep(idle_s)
            q0 = time.perf_counter()
            conn.execute("SELECT 1").fetchall()
            waits.append(1000 * (time.perf_counter() - q0))
    return {
        "errors": errors,
        "ticks_per_s": round(ticks / (t1 - t0)),
        "jvm_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "jvm_cpu_us_per_tick": round(1e6 * (cpu1 - cpu0) / max(ticks, 1), 2),
        "wal_txn_per_s": round((txn1 - txn0) / (t1 - t0), 1),
        "wal_applied_per_s": round((applied1 - applied0) / (t1 - t0), 1),
        "wal_lag_txn_max": max(lags, default=0),
        "wal_lag_txn_end": txn1 - applied1,
        "jvm_gc_pct": round(100 * (gc1 - gc0) / (t1 - t0), 1),
        "partition_parts": parts,
        **prefilled,
        "owner_rows_checked": sum(checked),
        "pg_after_idle_ms": [round(w, 2) for w in waits],
    }


def _run_child(src: str | None, argv: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve())
    out = subprocess.run(
        [sys.executable, __file__, *argv, "--child"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("frames", "ingest"))
    parser.add_argument("--sessions", type=int, default=1000, help="sessions per send")
    parser.add_argument("--repeat", type=int, default=30, help="frames: sends timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--code", action="append", default=[], help="NAME=SRC (repeatable)")
    parser.add_argument("--questdb-url", default="")
    parser.add_argument("--questdb-pid", type=int, default=0)
    parser.add_argument("--senders", type=int, default=3, help="ingest: instances' senders")
    parser.add_argument("--seconds", type=float, default=30.0, help="ingest: measured time")
    parser.add_argument("--idle-s", type=float, default=2.0, help="ingest: idle before a query")
    parser.add_argument(
        "--check-owners",
        action="store_true",
        help="ingest: before each send, the ownership query for its sessions (as the store)",
    )
    parser.add_argument(
        "--send-every-s",
        type=float,
        default=FLUSH_S,
        help="ingest: seconds between a sender's requests (the store's send spacing)",
    )
    parser.add_argument("--warm-up-s", type=float, default=5.0, help="ingest: before measuring")
    parser.add_argument(
        "--prefill-rows", type=int, default=0, help="ingest: rows in today's partition first"
    )
    parser.add_argument(
        "--sort-ts", action="store_true", help="ingest: each send's rows in timestamp order"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "frames":
        argv = ["frames", "--sessions", str(args.sessions), "--repeat", str(args.repeat)]
        if args.child:
            print(json.dumps(child_frames(args.sessions, args.repeat)))
            return
    else:
        if not (args.questdb_url and args.questdb_pid):
            raise SystemExit("ingest needs --questdb-url and --questdb-pid")
        argv = [
            "ingest",
            *("--questdb-url", args.questdb_url, "--questdb-pid", str(args.questdb_pid)),
            *("--senders", str(args.senders), "--sessions", str(args.sessions)),
            *("--seconds", str(args.seconds), "--idle-s", str(args.idle_s)),
            *(["--check-owners"] if args.check_owners else []),
            *("--send-every-s", str(args.send_every_s), "--warm-up-s", str(args.warm_up_s)),
            *("--prefill-rows", str(args.prefill_rows)),
            *(["--sort-ts"] if args.sort_ts else []),
        ]
        if args.child:
            got = child_ingest(
                args.questdb_url,
                args.questdb_pid,
                args.senders,
                args.sessions,
                args.seconds,
                args.idle_s,
                args.check_owners,
                args.send_every_s,
                args.warm_up_s,
                args.prefill_rows,
                args.sort_ts,
            )
            print(json.dumps(got))
            return
    codes = [tuple(c.split("=", 1)) for c in args.code] or [("this", "")]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in codes}
    for r in range(args.rounds):
        for name, src in codes:
            got = _run_child(src or None, argv)
            results[name].append(got)
            print(f"round {r + 1} {name:8s} {json.dumps(got)}", flush=True)
    key = "total_us_per_tick" if args.mode == "frames" else "jvm_cpu_us_per_tick"
    summary = {name: min(g[key] for g in got) for name, got in results.items()}
    print(f"best {key} per code: {summary}; load average {os.getloadavg()[0]:.2f}")
    print(json.dumps({"benchmark": f"ticksend-{args.mode}", "best": summary, "rounds": results}))


if __name__ == "__main__":
    main()
