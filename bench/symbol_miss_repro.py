"""QuestDB: a committed row not found by its SYMBOL value for a moment — standalone repro.

Needs only psycopg 3 and a running QuestDB (PG wire). Makes a table of its own,
``symrepro_<random>`` (dropped at the end)::

    CREATE TABLE symrepro_x (id SYMBOL CAPACITY 65536, v LONG, ts TIMESTAMP)
        TIMESTAMP(ts) PARTITION BY MONTH BYPASS WAL   -- or WAL with --wal

For ``--seconds``: ``--writers`` connections (threads) each commit transactions one after
another — ``BEGIN``, ``--per-txn`` INSERTs of rows with new ``id`` values (fresh UUIDs),
``COMMIT`` — and only after COMMIT returned publish those ids; concurrent writers of a
non-WAL table take turns (QuestDB answers "table busy": retried at once). ``--readers``
threads each repeat: take the newest ``--ids`` published ids and look them up by the
symbol (``--query``):

- ``in``: ``SELECT id, count() FROM t WHERE id IN (…)`` (one query for all ids)
- ``latest``: ``SELECT id, v FROM t WHERE id IN (…) LATEST ON ts PARTITION BY id``
- ``eq``: ``SELECT count() FROM t WHERE id = …`` for each of the newest ``--ids`` ids

with bind parameters, or the values inlined as literals (``--literal``); on one
connection per reader, or a new connection per read (``--fresh``). Every id the read
did not find is a miss; the first misses are counted again at once by ``cast(id AS
string) = …`` (the row is there) and by ``id = …`` polled until it is found.
``--other-table`` adds a writer thread inserting into a second table of its own.

Expected: no misses (every id was committed before the read began). Seen on 9.3.4:
misses while new ids are added fast. Last line: JSON.

    python symbol_miss_repro.py --pg 'host=127.0.0.1 port=8812 user=admin password=quest \\
        dbname=qdb' --seconds 20 --writers 1 --per-txn 4 --readers 2 --query latest
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg


class Shared:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: list[str] = []
        self.commits = 0
        self.busy = 0
        self.reads = 0
        self.ids_read = 0
        self.missed = 0
        self.missed_reads = 0
        self.cases: list[dict[str, Any]] = []
        self.writing = 0  # writers still running
        self.quiet_reads = 0  # reads begun after every writer had stopped
        self.quiet_missed = 0
        self.errors: list[str] = []


def connect(conninfo: str) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)


def writer(args: argparse.Namespace, table: str, shared: Shared, until: float) -> None:
    until -= args.quiet
    interval = 1.0 / args.txn_rate if args.txn_rate else 0.0
    next_at = time.monotonic()
    with connect(args.pg) as conn, writing(shared):
        while time.monotonic() < until:
            if args.existing:  # rows of ids already stored: no new symbol value
                with shared.lock:
                    ids = random.sample(shared.ids, args.per_txn)
            else:
                ids = [uuid.uuid4().hex for _ in range(args.per_txn)]
            try:
                conn.execute("BEGIN")
                for n, sid in enumerate(ids):
                    conn.execute(
                        f"INSERT INTO {table} (id, v, ts) VALUES (%s, %s, now())", [sid, n]
                    )
                conn.execute("COMMIT")
                if args.wal:  # a WAL commit is visible once applied: wait for that
                    applied(conn, table)
            except psycopg.Error as e:
                with shared.lock:
                    shared.busy += 1
                    if "busy" not in str(e) and len(shared.errors) < 5:
                        shared.errors.append(str(e)[:200])
                conn.execute("ROLLBACK")
                continue
            with shared.lock:
                if not args.existing:
                    shared.ids.extend(ids)
                shared.commits += 1
            if interval:
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))


@contextlib.contextmanager
def writing(shared: Shared) -> Iterator[None]:
    with shared.lock:
        shared.writing += 1
    try:
        yield
    finally:
        with shared.lock:
            shared.writing -= 1


def applied(conn: psycopg.Connection[Any], table: str) -> None:
    """Wait until the WAL table has applied every transaction committed so far."""
    sql = f"SELECT writerTxn, sequencerTxn FROM wal_tables() WHERE name = '{table}'"
    row = conn.execute(sql).fetchone()
    target = row[1] if row else 0
    while (row := conn.execute(sql).fetchone()) and row[0] < target:
        time.sleep(0.001)


def other_writer(args: argparse.Namespace, table: str, until: float) -> None:
    with connect(args.pg) as conn:
        while time.monotonic() < until:
            conn.execute(
                f"INSERT INTO {table} (id, v, ts) VALUES (%s, 1, now())", [uuid.uuid4().hex]
            )


def lookup(
    conn: psycopg.Connection[Any], args: argparse.Namespace, table: str, ids: list[str]
) -> set[str]:
    """The ids of ``ids`` the symbol lookup found."""

    def where(column: str, values: list[str]) -> tuple[str, list[str]]:
        if args.literal:
            return f"{column} IN ({', '.join(repr(v) for v in values)})", []
        return f"{column} IN ({', '.join('%s' for _ in values)})", values

    if args.query == "eq":
        found = set()
        for sid in ids:
            sql = f"SELECT count() FROM {table} WHERE id = " + (
                f"'{sid}'" if args.literal else "%s"
            )
            row = conn.execute(sql, [] if args.literal else [sid]).fetchone()
            if row and row[0]:
                found.add(sid)
        return found
    cond, params = where("id", ids)
    if args.query == "latest":
        sql = f"SELECT id, v FROM {table} WHERE {cond} LATEST ON ts PARTITION BY id"
    else:
        sql = f"SELECT id, count() FROM {table} WHERE {cond}"
    return {str(r[0]) for r in conn.execute(sql, params).fetchall()}


def reader(args: argparse.Namespace, table: str, shared: Shared, until: float) -> None:
    conn = None if args.fresh else connect(args.pg)
    try:
        while time.monotonic() < until:
            with shared.lock:
                ids = shared.ids[-args.ids :]
                quiet = shared.writing == 0
            if not ids:
                time.sleep(0.01)
                continue
            c = connect(args.pg) if conn is None else conn
            try:
                found = lookup(c, args, table, ids)
                missing = [sid for sid in ids if sid not in found]
                case = None
                if missing and len(shared.cases) < args.cases:
                    sid = missing[0]
                    by_string = c.execute(
                        f"SELECT count() FROM {table} WHERE cast(id AS string) = %s", [sid]
                    ).fetchone()
                    polled = time.monotonic()
                    while time.monotonic() - polled < 10:
                        row = c.execute(
                            f"SELECT count() FROM {table} WHERE id = %s", [sid]
                        ).fetchone()
                        if row and row[0]:
                            break
                        time.sleep(0.001)
                    case = {
                        "newest_of": len(ids) - 1 - ids.index(sid),
                        "missing_in_read": len(missing),
                        "by_string": by_string[0] if by_string else None,
                        "by_symbol_after_s": round(time.monotonic() - polled, 4),
                    }
            finally:
                if conn is None:
                    c.close()
            with shared.lock:
                shared.reads += 1
                shared.ids_read += len(ids)
                shared.missed += len(missing)
                shared.missed_reads += bool(missing)
                shared.quiet_reads += quiet
                shared.quiet_missed += len(missing) if quiet else 0
                if case is not None and len(shared.cases) < args.cases:
                    shared.cases.append(case)
    finally:
        if conn is not None:
            conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", required=True, help="libpq conninfo of QuestDB's PG wire")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--per-txn", type=int, default=4, help="INSERTs (new ids) a commit")
    parser.add_argument("--txn-rate", type=float, default=0.0, help="commits/s a writer; 0: max")
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--ids", type=int, default=1500, help="newest ids a read looks up")
    parser.add_argument("--query", choices=("in", "latest", "eq"), default="latest")
    parser.add_argument("--literal", action="store_true", help="values inlined, not bound")
    parser.add_argument("--fresh", action="store_true", help="a new connection per read")
    parser.add_argument("--wal", action="store_true", help="a WAL table, not BYPASS WAL")
    parser.add_argument("--nocache", action="store_true", help="SYMBOL … NOCACHE")
    parser.add_argument("--other-table", action="store_true", help="a writer of another table")
    parser.add_argument("--capacity", type=int, default=65536, help="SYMBOL CAPACITY of id")
    parser.add_argument(
        "--quiet", type=float, default=0.0, help="s at the end with the writers stopped"
    )
    parser.add_argument(
        "--existing",
        type=int,
        default=0,
        help="store this many ids first; the writers then add rows of those ids only",
    )
    parser.add_argument("--prefill", type=int, default=0, help="distinct ids stored first")
    parser.add_argument("--cases", type=int, default=5)
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    table, other = f"symrepro_{tag}", f"symrepro_{tag}_other"
    cache = " NOCACHE" if args.nocache else ""
    wal = "WAL" if args.wal else "BYPASS WAL"
    with connect(args.pg) as conn:
        for name in (table, other):
            conn.execute(
                f"CREATE TABLE {name} (id SYMBOL CAPACITY {args.capacity}{cache}, "
                "v LONG, ts TIMESTAMP) "
                f"TIMESTAMP(ts) PARTITION BY MONTH {wal}"
            )
    shared = Shared()
    if args.prefill:  # distinct ids stored before the run, read by no one
        with connect(args.pg) as conn:
            conn.execute(
                f"INSERT INTO {table} (id, v, ts) SELECT cast(rnd_uuid4() AS string), 0, "
                f"now() FROM long_sequence({args.prefill})"
            )
    if args.existing:  # stored before the run, in one transaction
        shared.ids = [uuid.uuid4().hex for _ in range(args.existing)]
        with connect(args.pg) as conn:
            conn.execute("BEGIN")
            for sid in shared.ids:
                conn.execute(f"INSERT INTO {table} (id, v, ts) VALUES (%s, 0, now())", [sid])
            conn.execute("COMMIT")
            if args.wal:
                applied(conn, table)
    until = time.monotonic() + args.seconds
    threads = [
        *(
            threading.Thread(target=writer, args=(args, table, shared, until))
            for _ in range(args.writers)
        ),
        *(
            threading.Thread(target=reader, args=(args, table, shared, until))
            for _ in range(args.readers)
        ),
        *([threading.Thread(target=other_writer, args=(args, other, until))] * 1)[
            : int(args.other_table)
        ],
    ]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = time.monotonic() - began
    with connect(args.pg) as conn:
        for name in (table, other):
            conn.execute(f"DROP TABLE {name}")
    load = [round(x, 2) for x in os.getloadavg()]
    result = {
        "query": args.query,
        "literal": args.literal,
        "fresh": args.fresh,
        "wal": args.wal,
        "nocache": args.nocache,
        "capacity": args.capacity,
        "writers": args.writers,
        "per_txn": args.per_txn,
        "readers": args.readers,
        "other_table": args.other_table,
        "existing": args.existing,
        "prefill": args.prefill,
        "ids_per_s": round(len(shared.ids) / spent, 1),
        "commits": shared.commits,
        "busy": shared.busy,
        "reads": shared.reads,
        "ids_read": shared.ids_read,
        "missed": shared.missed,
        "missed_reads": shared.missed_reads,
        "quiet_reads": shared.quiet_reads,
        "quiet_missed": shared.quiet_missed,
        "errors": shared.errors,
        "cases": shared.cases,
        "load": load,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
