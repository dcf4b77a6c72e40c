"""Whether a tick table's lookup of a new ``session_id`` symbol can miss applied rows.

The session log's ``id`` symbol lookup misses for a moment while new ids are added fast
(``bench/log_visibility.py``, docs/questdb.md). This asks the same of the tick tables
(WAL, written over ILP, ``session_id SYMBOL CAPACITY 65536``): it starts its own QuestDB
(root ``--root``, deleted at the end), creates the store's tables, and for each rate of
``--rates`` (new session ids a second) runs ``--seconds``: ``--writers`` threads, each
flushing every ``--interval`` s one ILP request to ``tt_trades`` with ``--rows`` rows of
each of its new ids (their first rows) and one more row of each of ``--older`` ids it
made before. Meanwhile ``--checkers`` tasks repeat: copy what every acknowledged flush
sent (the rows per id), wait until the table has applied every transaction committed so
far (``wal_tables()``), then count the newest ``--ids`` ids' rows the way the seal does
(``session_id, tenure, count(), max(batch_seq) … WHERE session_id IN (…)``, grouped).
An id counted with fewer rows than were applied before the read is a miss; a row of an
id not asked for, or more rows of one than its acknowledged flushes sent by the read's
end, is ``wrong`` (an index's lookup answering with other ids' rows); for the first
misses the same id is counted again by ``session_id = %s``, by ``cast(session_id AS
string) = %s`` and from ``GROUP BY session_id`` over the whole table, and the symbol
lookup is polled until it agrees. Every ``--full-every``-th read also counts all ids of
the read by string and by the whole table's ``GROUP BY`` (these scan the table).

Prints one line per rate; last line: JSON.

    flock /work/bench.lock .venv/bin/python bench/tick_visibility.py --root /tmp/x-qdb \\
        --rates 100,400,1600 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from log_visibility import _ms

SEAL_SQL = (
    "SELECT session_id, tenure, count(), max(batch_seq) FROM tt_trades "
    "WHERE session_id IN ({marks})"
)


class Sent:
    """Rows per id of every acknowledged flush, shared by the writer threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[str, int] = {}
        self.order: list[str] = []  # ids in the order their first flush was acknowledged
        self.flushes = 0
        self.flush_s: list[float] = []

    def acked(self, counts: dict[str, int], new: list[str], spent: float) -> None:
        with self.lock:
            for sid, n in counts.items():
                self.rows[sid] = self.rows.get(sid, 0) + n
            self.order.extend(new)
            self.flushes += 1
            self.flush_s.append(spent)

    def total(self) -> dict[str, int]:
        """Rows per id acknowledged so far."""
        with self.lock:
            return dict(self.rows)

    def newest(self, n: int) -> dict[str, int]:
        with self.lock:
            return {sid: self.rows[sid] for sid in self.order[-n:]}


def writer(
    conf: str, sent: Sent, per_flush: float, interval: float, rows: int, older: int, until: float
) -> None:
    from questdb import Sender, TimestampNanos

    seq = itertools.count(1)
    mine: list[str] = []
    owed = 0.0
    with Sender.from_conf(conf) as sender:
        next_at = time.monotonic()
        while time.monotonic() < until:
            owed += per_flush
            new = [uuid.uuid4().hex for _ in range(int(owed))]
            owed -= len(new)
            counts: dict[str, int] = {}
            for sid in [*new, *mine[-older:]]:
                n = rows if sid in new else 1
                for _ in range(n):
                    batch = next(seq)
                    sender.row(
                        "tt_trades",
                        symbols={"session_id": sid, "symbol": "BTC_USDT", "side": "buy"},
                        columns={
                            "trade_id": batch,
                            "price": 100.0,
                            "qty": 1.0,
                            "tenure": 1,
                            "batch_seq": batch,
                        },
                        at=TimestampNanos.now(),
                    )
                counts[sid] = n
            began = time.perf_counter()
            sender.flush()
            sent.acked(counts, new, time.perf_counter() - began)
            mine.extend(new)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))


async def applied(conn: Any) -> float:
    """Wait until tt_trades has applied every transaction committed before the call."""
    began = time.perf_counter()
    sql = "SELECT writerTxn, sequencerTxn FROM wal_tables() WHERE name = 'tt_trades'"
    target = (await (await conn.execute(sql)).fetchone())[1]
    while True:
        if (await (await conn.execute(sql)).fetchone())[0] >= target:
            break
        await asyncio.sleep(0.002)
    return time.perf_counter() - began


async def count_one(conn: Any, where: str, sid: str) -> int:
    cur = await conn.execute(f"SELECT count() FROM tt_trades WHERE {where} = %s", [sid])
    return int((await cur.fetchone())[0])


async def checker(
    conninfo: str, sent: Sent, ids: int, full_every: int, until: float, out: dict[str, Any]
) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, prepare_threshold=None
    ) as conn:
        for n in itertools.count():
            if time.monotonic() >= until:
                return
            expected = sent.newest(ids)
            if not expected:
                await asyncio.sleep(0.01)
                continue
            out["wait_s"].append(await applied(conn))
            keys = list(expected)
            began = time.perf_counter()
            cur = await conn.execute(SEAL_SQL.format(marks=", ".join("%s" for _ in keys)), keys)
            got: dict[str, int] = {}
            for sid, _tenure, count, _last in await cur.fetchall():
                got[str(sid)] = got.get(str(sid), 0) + int(count)
            out["read_s"].append(time.perf_counter() - began)
            out["reads"] += 1
            out["ids_read"] += len(keys)
            short = [sid for sid in keys if got.get(sid, 0) < expected[sid]]
            # rows the read must never return: an id not asked for, or more rows of one
            # than its acknowledged flushes sent by now (what an index returning other
            # sessions' rows would show: docs/questdb.md, the LATEST ON bug)
            after = sent.total()
            wrong = [sid for sid in got if sid not in expected or got[sid] > after.get(sid, 0)]
            if wrong:  # a flush applied before its writer recorded it: look again
                await asyncio.sleep(0.1)
                after = sent.total()
                wrong = [s for s in got if s not in expected or got[s] > after.get(s, 0)]
            out["wrong"] += len(wrong)
            if wrong and len(out["wrong_cases"]) < 6:
                sid = wrong[0]
                out["wrong_cases"].append(
                    {
                        "asked": sid in expected,
                        "in_list": got[sid],
                        "sent_before": expected.get(sid, 0),
                        "sent_after": after.get(sid, 0),
                        "by_string": await count_one(conn, "cast(session_id AS string)", sid),
                    }
                )
            out["missed"] += len(short)
            out["missed_reads"] += bool(short)
            if short and len(out["cases"]) < 6:
                sid = short[0]
                case: dict[str, Any] = {
                    "applied_rows": expected[sid],
                    "in_list": got.get(sid, 0),
                    "by_symbol": await count_one(conn, "session_id", sid),
                    "by_string": await count_one(conn, "cast(session_id AS string)", sid),
                    "newest_of": len(keys) - 1 - keys.index(sid),
                }
                cur = await conn.execute(
                    "SELECT coalesce(sum(c), 0) FROM (SELECT session_id, count() c FROM tt_trades) "
                    "WHERE cast(session_id AS string) = %s",
                    [sid],
                )
                case["group_by"] = int((await cur.fetchone())[0])
                polled = time.monotonic()
                for _ in range(1000):  # ~10 s at most
                    if await count_one(conn, "session_id", sid) >= expected[sid]:
                        break
                    await asyncio.sleep(0.01)
                case["by_symbol_after_s"] = round(time.monotonic() - polled, 3)
                out["cases"].append(case)
            if full_every and n % full_every == 0:
                # every id of the read counted by string and by the whole table's GROUP BY
                marks = ", ".join("%s" for _ in keys)
                began = time.perf_counter()
                cur = await conn.execute(
                    "SELECT cast(session_id AS string), count() FROM tt_trades "
                    f"WHERE cast(session_id AS string) IN ({marks})",
                    keys,
                )
                by_string = {str(s): int(c) for s, c in await cur.fetchall()}
                out["string_s"].append(time.perf_counter() - began)
                cur = await conn.execute("SELECT session_id, count() FROM tt_trades")
                grouped = {str(s): int(c) for s, c in await cur.fetchall()}
                out["full_reads"] += 1
                for name, counted in (("by_string", by_string), ("group_by", grouped)):
                    out[f"{name}_missed"] += sum(
                        1 for sid in keys if counted.get(sid, 0) < expected[sid]
                    )


async def one_rate(
    args: argparse.Namespace, server: Any, rate: float, newest: list[str]
) -> dict[str, Any]:
    """One rate's run; ``newest`` gets the ids it made."""
    sent = Sent()
    until = time.monotonic() + args.seconds
    per_flush = rate * args.interval / args.writers
    threads = [
        threading.Thread(
            target=writer,
            args=(
                server.ilp_conf,
                sent,
                per_flush,
                args.interval,
                args.rows,
                args.older,
                until,
            ),
        )
        for _ in range(args.writers)
    ]
    for t in threads:
        t.start()
    out: dict[str, Any] = {
        "reads": 0,
        "ids_read": 0,
        "missed": 0,
        "missed_reads": 0,
        "wrong": 0,
        "wrong_cases": [],
        "full_reads": 0,
        "by_string_missed": 0,
        "group_by_missed": 0,
        "cases": [],
        "wait_s": [],
        "read_s": [],
        "string_s": [],
    }
    began = time.monotonic()
    await asyncio.gather(
        *(
            checker(server.pg_conninfo, sent, args.ids, args.full_every, until, out)
            for _ in range(args.checkers)
        )
    )
    for t in threads:
        await asyncio.to_thread(t.join)
    spent = time.monotonic() - began
    newest.extend(sent.order)
    out["rate_asked"] = rate
    out["new_ids_per_s"] = round(len(sent.order) / spent, 1)
    out["ids"] = len(sent.order)
    out["flushes"] = sent.flushes
    out["flush"] = _ms(sent.flush_s)
    out["wait_applied"] = _ms(out.pop("wait_s"))
    out["seal_read"] = _ms(out.pop("read_s"))
    out["by_string_read"] = _ms(out.pop("string_s"))  # the same ids, every --full-every-th
    return out


async def read_costs(conninfo: str, ids: list[str], repeats: int) -> dict[str, Any]:
    """The seal's read of ``ids`` by the symbol and by string, alternated, nothing landing."""
    import psycopg

    spent: dict[str, list[float]] = {"by_symbol": [], "by_string": []}
    marks = ", ".join("%s" for _ in ids)
    async with await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, prepare_threshold=None
    ) as conn:
        for _ in range(repeats):
            for name, column in (
                ("by_symbol", "session_id"),
                ("by_string", "cast(session_id AS string)"),
            ):
                began = time.perf_counter()
                cur = await conn.execute(
                    SEAL_SQL.replace("session_id IN", f"{column} IN").format(marks=marks), ids
                )
                await cur.fetchall()
                spent[name].append(time.perf_counter() - began)
        rows = await (await conn.execute("SELECT count() FROM tt_trades")).fetchone()
    out: dict[str, Any] = {name: _ms(values) for name, values in spent.items()}
    out["rows"] = rows[0] if rows else None
    out["ids"] = len(ids)
    out["ratio_p50"] = round(out["by_string"]["p50_ms"] / out["by_symbol"]["p50_ms"], 2)
    return out


async def run(args: argparse.Namespace, server: Any) -> list[dict[str, Any]]:
    from ticktape.store import open_store

    store = open_store(server.store_url)
    await store.open()  # the store's own tables
    await store.close()
    if args.prefill_ticks:
        from shutdown import prefill

        took = await asyncio.to_thread(prefill, server.store_url, args.prefill_ticks)
        print(f"prefilled {args.prefill_ticks:,} rows a tick table in {took:.1f}s", flush=True)
    results: list[dict[str, Any]] = []
    newest: list[str] = []
    for rate in args.rates:
        result = await one_rate(args, server, rate, newest)
        result["load"] = [round(x, 2) for x in os.getloadavg()]
        results.append(result)
        cases = result.pop("cases")
        print(json.dumps(result), flush=True)
        for case in cases:
            print("  case:", case, flush=True)
        result["cases"] = cases
    if args.cost_reads and newest:
        costs = await read_costs(server.pg_conninfo, newest[-1000:], args.cost_reads)
        costs["load"] = [round(x, 2) for x in os.getloadavg()]
        print("read costs", json.dumps(costs), flush=True)
        results.append({"read_costs": costs})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--workers", type=int, default=2, help="network workers")
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[100.0, 400.0, 1600.0],
        help="new session ids a second, one run each",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--writers", type=int, default=4, help="ILP sender threads")
    parser.add_argument("--interval", type=float, default=0.1, help="s between flushes")
    parser.add_argument("--rows", type=int, default=3, help="first rows of each new id")
    parser.add_argument("--older", type=int, default=50, help="older ids given a row a flush")
    parser.add_argument("--checkers", type=int, default=2)
    parser.add_argument("--ids", type=int, default=1500, help="newest ids counted per read")
    parser.add_argument("--full-every", type=int, default=10, help="0: never")
    parser.add_argument(
        "--prefill-ticks", type=int, default=0, help="rows of other sessions a tick table first"
    )
    parser.add_argument(
        "--cost-reads",
        type=int,
        default=0,
        help="then time the seal's read of 1,000 ids by symbol and by string, this often each",
    )
    args = parser.parse_args()

    from ticktape import questdb_server as qs

    root = Path(args.root)
    try:
        config = qs.QuestDBServerConfig.with_free_ports(root, network_workers=args.workers)
        with qs.start(config) as server:  # stopped on the way out
            results = asyncio.run(run(args, server))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"workers": args.workers, "runs": results}))


if __name__ == "__main__":
    main()
