"""Ingestion: a collect session on the simulated feed at maximum rate, into a store.

Runs the real supervisor and collect runner in-process (no HTTP: the API is not
on the ingest path), for a fixed time, then stops the session and counts what
is stored and visible. Prints ticks/s stored and resident memory (start, peak,
end, sampled every 0.5 s). Last line: JSON.

    .venv/bin/python bench/ingest.py --store sqlite --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ticktape.config import Settings
from ticktape.domain import validate_spec
from ticktape.metrics import Metrics
from ticktape.runtime.supervisor import Supervisor
from ticktape.service import SessionService
from ticktape.store import open_store


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(store_url: str, seconds: float, symbols: list[str]) -> dict[str, Any]:
    settings = Settings(store_url=store_url, instance_name="bench-ingest")
    store = open_store(store_url)
    await store.open()
    metrics = Metrics()
    supervisor = Supervisor(store, settings, metrics)
    await supervisor.start()
    service = SessionService(store, supervisor, settings, metrics)
    samples: list[float] = [rss_mib()]
    try:
        spec = validate_spec(kind="collect", symbols=symbols, rate_per_s=0)
        session = await service.create(spec)
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            await asyncio.sleep(0.5)
            samples.append(rss_mib())
        stopped = await service.stop(session.id, wait=True, timeout_s=120)
        elapsed = time.perf_counter() - started
        counts = await store.ticks.count(session.id)
        samples.append(rss_mib())
    finally:
        await supervisor.shutdown()
        await store.close()
    stored = counts.trades + counts.orderbook
    return {
        "store": store_url.split(":", 1)[0],
        "seconds": round(elapsed, 2),
        "ticks_stored": stored,
        "ticks_per_s": round(stored / elapsed),
        "stats_equal_rows": stopped.stats.records_collected == stored,
        "rss_mib_start": round(samples[0], 1),
        "rss_mib_peak": round(max(samples), 1),
        "rss_mib_end": round(samples[-1], 1),
        "rss_mib_p50_while_running": round(sorted(samples)[len(samples) // 2], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", default="sqlite", help="'sqlite' (a temporary file) or a store URL"
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--symbols", default="BTC_USDT,ETH_USDT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench-ingest.db" if args.store == "sqlite" else args.store
        result = asyncio.run(run(url, args.seconds, args.symbols.split(",")))
    print(
        f"{result['store']}: {result['ticks_per_s']:,} ticks/s stored over "
        f"{result['seconds']}s; RSS start {result['rss_mib_start']} MiB, "
        f"peak {result['rss_mib_peak']} MiB, end {result['rss_mib_end']} MiB"
    )
    print(json.dumps({"benchmark": "ingest", **result}))


if __name__ == "__main__":
    main()
