"""Start→get latency and lookup success over real HTTP, per store, side by side.

For each store it starts a ``ticktape serve`` subprocess (or uses ``--url``),
then runs N pairs "POST /api/sessions, then GET /api/sessions/{id} at once" at
concurrency C, stopping each session afterwards (not timed). Prints one line of
figures per store and, last, one JSON line with all of them.

    .venv/bin/python bench/lifecycle.py --stores sqlite -n 10000 -c 1 -c 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ticktape.testing import ServerProcess

BODY = {"kind": "collect", "symbols": ["BTC_USDT"], "rate_per_s": 1}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def run_pairs(url: str, pairs: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    found = 0
    errors: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(pairs):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency * 2)

    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:

        async def worker() -> None:
            nonlocal found
            while not queue.empty():
                queue.get_nowait()
                t0 = time.perf_counter()
                created = await client.post("/api/sessions", json=BODY)
                latencies.append((time.perf_counter() - t0) * 1000)
                if created.status_code != 201:
                    errors.append(f"start {created.status_code}: {created.text[:200]}")
                    continue
                sid = created.json()["id"]
                got = await client.get(f"/api/sessions/{sid}")
                if got.status_code == 200 and got.json()["id"] == sid:
                    found += 1
                else:
                    errors.append(f"get {got.status_code}")
                await client.post(f"/api/sessions/{sid}/stop")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "pairs": pairs,
        "concurrency": concurrency,
        "start_ms_p50": round(statistics.median(latencies), 2),
        "start_ms_p95": round(percentile(latencies, 95), 2),
        "start_ms_p99": round(percentile(latencies, 99), 2),
        "lookup_success_pct": round(100.0 * found / pairs, 4),
        "pairs_per_s": round(pairs / elapsed, 1),
        "errors": errors[:5],
    }


def store_url_for(name: str, workdir: Path, questdb_url: str | None) -> str:
    if name == "sqlite":
        return f"sqlite:///{workdir}/bench-lifecycle.db"
    if name == "questdb":
        if not questdb_url:
            raise SystemExit(
                "--questdb-url is needed for the questdb store (e.g. from `ticktape questdb start`)"
            )
        return questdb_url
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite", help="comma list: sqlite,questdb")
    parser.add_argument("--questdb-url", default=None)
    parser.add_argument("--url", default=None, help="use this running server instead")
    parser.add_argument("-n", "--pairs", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, action="append")
    args = parser.parse_args()
    levels = args.concurrency or [1, 32]
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stores.split(","):
            server = None
            url = args.url
            if url is None:
                server = ServerProcess(
                    store_url_for(name, Path(tmp), args.questdb_url),
                    Path(tmp),
                    env={"TICKTAPE_LOG_LEVEL": "warning"},
                )
                server.start()
                url = server.url
            try:
                for c in levels:
                    figures = asyncio.run(run_pairs(url, args.pairs, c))
                    results.setdefault(name, []).append(figures)
                    print(
                        f"{name:8s} c={c:<3d} p50={figures['start_ms_p50']}ms "
                        f"p95={figures['start_ms_p95']}ms p99={figures['start_ms_p99']}ms "
                        f"found={figures['lookup_success_pct']}% "
                        f"({figures['pairs_per_s']} pairs/s)",
                        flush=True,
                    )
            finally:
                if server is not None:
                    server.stop()
    print(json.dumps({"benchmark": "lifecycle", "results": results}))


if __name__ == "__main__":
    main()
