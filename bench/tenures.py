"""The QuestDB tick store's tenure read (seals and counts) with a long history in the log.

A seal or count group first reads each session's tenure and fences from its newest
session-log row: one ``WHERE id IN (…) LATEST ON ts PARTITION BY id`` query per group
(``store/questdb/_ticks.py``). This times that query, as the store sends it, for groups
of 1, 100 and ``--active`` active sessions — on a log holding only them; then with
``--history`` finished sessions appended after them (the worst case: the query must
look past the whole history to reach their rows, as for sessions that ran while the
history grew); then for as many active sessions created after the history. Beside
it, ``count()`` of one session through the store (the whole grouped count: the tenure
read and one query per tick table), for scale. Prints one line per phase and, last,
one JSON line.

    .venv/bin/python bench/tenures.py --questdb-url URL --history 100000 --active 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
import uuid
from typing import Any

import psycopg

from capacity import seed_history_bulk
from codes import with_prefix
from lifecycle import percentile
from ticktape.store.questdb import QuestDBStore
from ticktape.testing import draft_session


async def _create_active(store: QuestDBStore, count: int, concurrency: int = 32) -> list[str]:
    ids: list[str] = []
    drafts = [draft_session(owner="bench/tenures") for _ in range(count)]

    async def worker(part: list[Any]) -> None:
        for session in part:
            ids.append((await store.sessions.create_session(session, actor="bench")).id)

    await asyncio.gather(*(worker(drafts[i::concurrency]) for i in range(concurrency)))
    return ids


def _time_query(store: QuestDBStore, ids: list[str], sizes: list[int], repeat: int) -> Any:
    """p50 / p95 ms of the tenure query per group size (random groups of ``ids``), and
    how many of the sessions asked for it did not find (``missing``: none should be,
    every id is an acknowledged create)."""
    table = f"{store.address.prefix}session_log"
    figures: dict[str, Any] = {}
    missing: set[str] = set()
    with psycopg.connect(store.address.conninfo, autocommit=True) as conn:
        for size in sizes:
            took = []
            for _ in range(repeat):
                group = random.sample(ids, min(size, len(ids)))
                marks = ", ".join("%s" for _ in group)
                sql = (
                    f"SELECT id, tenure, fences FROM {table} WHERE id IN ({marks}) "
                    "LATEST ON ts PARTITION BY id"
                )
                started = time.perf_counter()
                rows = conn.execute(sql, group).fetchall()
                took.append((time.perf_counter() - started) * 1000)
                missing |= set(group) - {str(row[0]) for row in rows}
            figures[str(size)] = {
                "p50_ms": round(statistics.median(took), 2),
                "p95_ms": round(percentile(took, 95), 2),
            }
    figures["missing"] = len(missing)
    return figures


async def _time_count(store: QuestDBStore, ids: list[str], repeat: int) -> dict[str, float]:
    took = []
    for _ in range(repeat):
        started = time.perf_counter()
        await store.ticks.count(random.choice(ids))
        took.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(statistics.median(took), 2),
        "p95_ms": round(percentile(took, 95), 2),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    url = with_prefix(args.questdb_url, f"ten{uuid.uuid4().hex[:8]}_")
    store = QuestDBStore(url)
    await store.open()
    sizes = sorted({1, 100, args.active})
    phases: dict[str, Any] = {}
    try:
        older = await _create_active(store, args.active)  # each id an acknowledged create

        async def phase(name: str, ids: list[str]) -> None:
            query = await asyncio.to_thread(_time_query, store, ids, sizes, args.repeat)
            count = await _time_count(store, ids, args.repeat)
            phases[name] = {
                "tenure_query": query,
                "count_one": count,
                "load_avg": round(os.getloadavg()[0], 1),
            }
            print(f"{name:28s} {json.dumps(phases[name])}", flush=True)

        await phase("empty log", older)
        rate = await seed_history_bulk(url, args.history, args.seed_batch)
        print(f"seeded {args.history} finished sessions ({rate:.0f}/s)", flush=True)
        await phase("history, active before it", older)
        newer = await _create_active(store, args.active)
        await phase("history, active after it", newer)
    finally:
        await store.close()
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questdb-url", required=True)
    parser.add_argument("--history", type=int, default=100_000, help="finished sessions")
    parser.add_argument("--active", type=int, default=1000, help="active sessions per phase")
    parser.add_argument("--repeat", type=int, default=30, help="queries per group size")
    parser.add_argument("--seed-batch", type=int, default=2000, help="sessions a commit")
    args = parser.parse_args()
    phases = asyncio.run(main_async(args))
    print(json.dumps({"benchmark": "tenures", "history": args.history, "phases": phases}))


if __name__ == "__main__":
    main()
