"""Query shapes of a grouped tick count with fenced sessions (QuestDB).

A count, seal or position group reads one query per tick table for all its sessions.
Each closed tenure of a session has a fence (``store/questdb/_fence.py``): rows of that
tenure past its last counted batch are left out. Written as one OR term per fenced
session (``AND NOT ((session_id = … AND tenure = … AND batch_seq > …) OR …)``), QuestDB
evaluates every term on every row. The store now reads the group without the terms
(set lookups only) and again, with their terms, only the sessions whose largest batch
of a fenced tenure is past its fence. This times, on a table of ``--rows`` rows over
``--sessions`` sessions each with a fence (half of the rows in the fenced tenure):
the query without fences (the floor), the OR-term shape, and the store's shape when no
session has late rows. Prints one line each and, last, one JSON line; drops its table.

    .venv/bin/python bench/fence_terms.py --questdb-url 'questdb://127.0.0.1:8812' --rows 2000000 --sessions 300
"""  # noqa: E501

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import psycopg

from ticktape.store.questdb import QuestDBAddress


def best_of(conn: psycopg.Connection[Any], sql: str, params: list[Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        conn.execute(sql, params).fetchall()
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questdb-url", required=True)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    address = QuestDBAddress.from_url(args.questdb_url)
    table = f"bench_fence_terms_{os.getpid()}"
    n, s = args.rows, args.sessions
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (session_id SYMBOL CAPACITY 4096, tenure LONG, "
            "batch_seq LONG, ts TIMESTAMP) timestamp(ts) PARTITION BY DAY WAL"
        )
        try:
            # sessions s0..s{S-1}; tenure 2 (closed, fenced) and 3 (current) alternate;
            # batches rise with time, so every fence keeps its tenure's earlier rows
            conn.execute(
                f"INSERT INTO {table} SELECT 's' || (x % {s}), 2 + (x % 2), x / {s * 10}, "
                "timestamp_sequence(to_timestamp('2026-12-01', 'yyyy-MM-dd'), 10) "
                f"FROM long_sequence({n})"
            )
            conn.execute(f"SELECT wait_wal_table('{table}')")
            ids = [f"s{i}" for i in range(s)]
            top = n // (s * 10)  # the largest batch: every fence at or past it
            marks = ", ".join("%s" for _ in ids)
            base = (
                f"SELECT session_id, tenure, count(), max(batch_seq) FROM {table} "
                f"WHERE session_id IN ({marks})"
            )
            terms = " OR ".join("(session_id = %s AND tenure = %s AND batch_seq > %s)" for _ in ids)
            fences = [x for sid in ids for x in (sid, 2, top)]
            floor = best_of(conn, base, ids, args.rounds)
            or_terms = best_of(conn, f"{base} AND NOT ({terms})", ids + fences, args.rounds)
            # the store's shape with no late rows: the query without fences, then a check
            # of each fenced tenure's largest batch in Python (no second query)
            began = time.perf_counter()
            for _ in range(args.rounds):
                rows = conn.execute(base, ids).fetchall()
                late = [r for r in rows if r[1] == 2 and r[3] is not None and r[3] > top]
                assert not late
            store_shape = (time.perf_counter() - began) / args.rounds
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    print(f"{'no fence terms (floor)':>30}: {floor * 1000:9.1f} ms")
    print(f"{f'one OR term per session ({s})':>30}: {or_terms * 1000:9.1f} ms")
    print(f"{'store: lookups + check':>30}: {store_shape * 1000:9.1f} ms (mean)")
    result = {
        "benchmark": "fence_terms",
        "rows": n,
        "sessions": s,
        "floor_s": round(floor, 4),
        "or_terms_s": round(or_terms, 4),
        "store_shape_s": round(store_shape, 4),
        "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
