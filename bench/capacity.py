"""Capacity: reads with a long history, per store, side by side (``history`` mode).

For each store it starts a ``ticktape serve`` subprocess on an empty store, starts
``--running`` sessions through the API (sim feed, 1 symbol, the sim's default
rate), and measures over real HTTP the p95 of ``GET /api/sessions/{id}`` (of a
running session) and ``GET /api/sessions?status=running``. Then it stores
``--history`` finished sessions (created and failed through the store contract,
from this process, ``--seed-concurrency`` at a time) and measures the same reads
again: the issue's target is "within 2x of the empty store". Prints one line per
store and phase and, last, one JSON line with all figures.

    .venv/bin/python bench/capacity.py --stores sqlite,questdb --questdb-url URL \\
        --history 100000

The ramp of running sessions the issue also describes is not built yet (see the
closing note of issue 13).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.parse
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from lifecycle import Connection, percentile, store_url_for
from ticktape.domain import DataType, Session, SessionConfig, SessionKind, SessionStatus, utcnow
from ticktape.store import open_store
from ticktape.testing import ServerProcess

START = {"kind": "collect", "symbols": ["BTC_USDT"]}  # the sim's default rate


async def timed_gets(url: str, paths: list[str], requests: int) -> dict[str, float]:
    parsed = urllib.parse.urlsplit(url)
    conn = Connection(parsed.hostname or "127.0.0.1", parsed.port or 80)
    latencies: list[float] = []
    for i in range(requests):
        t0 = time.perf_counter()
        status, body = await conn.request("GET", paths[i % len(paths)])
        latencies.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise SystemExit(f"GET {paths[i % len(paths)]}: {status} {body[:200]!r}")
    if conn.writer is not None:
        conn.writer.close()
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
    }


async def start_sessions(url: str, count: int) -> list[str]:
    parsed = urllib.parse.urlsplit(url)
    conn = Connection(parsed.hostname or "127.0.0.1", parsed.port or 80)
    ids = []
    for _ in range(count):
        status, body = await conn.request("POST", "/api/sessions", json.dumps(START).encode())
        if status != 201:
            raise SystemExit(f"start: {status} {body[:200]!r}")
        ids.append(json.loads(body)["id"])
    if conn.writer is not None:
        conn.writer.close()
    return ids


async def seed_history(store_url: str, count: int, concurrency: int) -> float:
    """Store ``count`` finished sessions (created, then failed); returns sessions/s."""
    store = open_store(store_url)
    await store.open()
    remaining = count
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            now = utcnow()
            session = await store.sessions.create_session(
                Session(
                    id=str(uuid.uuid4()),
                    kind=SessionKind.COLLECT,
                    status=SessionStatus.PENDING,
                    symbols=("BTC_USDT",),
                    exchange="sim",
                    data_types=(DataType.TRADES,),
                    config=SessionConfig(),
                    created_at=now,
                    # owned by no live instance but leased: no reconciler reaps it first
                    owner="bench/seed",
                    lease_expires_at=now + timedelta(hours=1),
                ),
                actor="bench",
            )
            await store.sessions.transition(
                session.id,
                expected_version=session.version,
                to_status=SessionStatus.FAILED,
                actor="bench",
                reason="start_failed",
                lease_expires_at=None,
            )

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await store.close()
    return count / (time.perf_counter() - started)


async def reads(url: str, ids: list[str], requests: int) -> dict[str, Any]:
    return {
        "get_session": await timed_gets(url, [f"/api/sessions/{i}" for i in ids], requests),
        "list_running": await timed_gets(url, ["/api/sessions?status=running"], requests),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite", help="comma list: sqlite,questdb")
    parser.add_argument("--questdb-url", default=None)
    parser.add_argument("--history", type=int, default=100_000, help="finished sessions")
    parser.add_argument("--running", type=int, default=10, help="running sessions")
    parser.add_argument("--requests", type=int, default=500, help="per read and phase")
    parser.add_argument("--seed-concurrency", type=int, default=64)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stores.split(","):
            store_url = store_url_for(name, Path(tmp), args.questdb_url)
            if name == "sqlite":
                store_url = f"sqlite:///{tmp}/bench-capacity.db"
            server = ServerProcess(
                store_url,
                Path(tmp),
                env={
                    "TICKTAPE_LOG_LEVEL": "warning",
                    "TICKTAPE_CREATE_RATE_PER_MIN": "100000000",
                    "TICKTAPE_MAX_RUNNING_PER_STORE": "100000000",
                    "TICKTAPE_MAX_RUNNING_PER_INSTANCE": "100000000",
                },
            )
            server.start()
            try:
                ids = asyncio.run(start_sessions(server.url, args.running))
                empty = asyncio.run(reads(server.url, ids, args.requests))
                print(f"{name:8s} empty store      {json.dumps(empty)}", flush=True)
                rate = asyncio.run(seed_history(store_url, args.history, args.seed_concurrency))
                print(f"{name:8s} seeded {args.history} finished sessions ({rate:.0f}/s)")
                full = asyncio.run(reads(server.url, ids, args.requests))
                print(f"{name:8s} with history     {json.dumps(full)}", flush=True)
                ratio = {
                    read: round(full[read]["p95_ms"] / max(empty[read]["p95_ms"], 0.01), 2)
                    for read in empty
                }
                print(f"{name:8s} p95 ratio history/empty {json.dumps(ratio)} (target <= 2)")
                results[name] = {
                    "running": args.running,
                    "history": args.history,
                    "seed_per_s": round(rate, 1),
                    "empty": empty,
                    "with_history": full,
                    "p95_ratio": ratio,
                }
            finally:
                server.stop()
    print(json.dumps({"benchmark": "capacity-history", "results": results}))


if __name__ == "__main__":
    main()
