"""Ingestion: a collect session on the simulated feed at maximum rate, into a store.

Runs the real supervisor and collect runner in-process (no HTTP: the API is not
on the ingest path), for a fixed time, then stops the session and counts what
is stored and visible. Prints ticks/s stored (a tick is a trade or an order-book
snapshot; on QuestDB a snapshot is one row per level, so rows/s is printed too)
and resident memory (start, peak, end, sampled every 0.5 s). On QuestDB it also
measures the client's own ``dataframe()`` rate, the ceiling. Last line: JSON.

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
from ticktape.runners import default_runners
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
    supervisor = Supervisor(store, settings, metrics, default_runners())
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
    depth = spec.config.book_depth
    return {
        "rows_per_s": round((counts.trades + counts.orderbook * depth) / elapsed)
        if store_url.startswith("questdb://")
        else round(stored / elapsed),
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


def questdb_ceiling(store_url: str, rows: int = 1_000_000, rounds: int = 3) -> dict[str, Any]:
    """The QuestDB client's own ``dataframe()`` rate into a scratch table: the ceiling.

    Same layout as ``tt_trades``, built once and sent ``rounds`` times; the figure is
    rows acknowledged per second of ``dataframe()`` + ``flush()``.
    """
    import numpy as np
    import pandas as pd
    import psycopg
    from questdb import Sender

    from ticktape.store.questdb import QuestDBAddress

    address = QuestDBAddress.from_url(store_url)
    table = f"{address.prefix}ceiling"
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} (session_id SYMBOL, symbol SYMBOL, trade_id LONG, "
            "price DOUBLE, qty DOUBLE, side SYMBOL, ts TIMESTAMP, tenure LONG, batch_seq LONG) "
            "TIMESTAMP(ts) PARTITION BY DAY WAL "
            "DEDUP UPSERT KEYS(ts, session_id, symbol, trade_id, tenure)"
        )
    rates = []
    with Sender.from_conf(address.ilp_conf) as sender:
        for r in range(rounds):
            ids = np.arange(r * rows, (r + 1) * rows, dtype=np.int64)
            frame = pd.DataFrame(
                {
                    "session_id": pd.Categorical(["ceiling"] * rows),
                    "symbol": pd.Categorical(np.where(ids % 2 == 0, "BTC_USDT", "ETH_USDT")),
                    "trade_id": ids,
                    "price": 100.0 + (ids % 1000) * 0.01,
                    "qty": np.full(rows, 0.5),
                    "side": pd.Categorical(np.where(ids % 3 == 0, "buy", "sell")),
                    "ts": pd.to_datetime(1_700_000_000_000_000 + ids, unit="us", utc=True),
                    "tenure": np.full(rows, 2, dtype=np.int64),  # the fence columns ticktape
                    "batch_seq": ids // 1000,  # writes too (store/questdb/_fence.py)
                }
            )
            started = time.perf_counter()
            sender.dataframe(
                frame, table_name=table, symbols=["session_id", "symbol", "side"], at="ts"
            )
            sender.flush()
            rates.append(rows / (time.perf_counter() - started))
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    return {
        "client_dataframe_rows_per_s": round(sorted(rates)[len(rates) // 2]),
        "rows_per_call": rows,
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
        if url.startswith("questdb://"):
            result |= questdb_ceiling(url)
            print(
                f"ceiling: the QuestDB client's own dataframe() sends "
                f"{result['client_dataframe_rows_per_s']:,} rows/s on this machine"
            )
    print(
        f"{result['store']}: {result['ticks_per_s']:,} ticks/s stored over "
        f"{result['seconds']}s; RSS start {result['rss_mib_start']} MiB, "
        f"peak {result['rss_mib_peak']} MiB, end {result['rss_mib_end']} MiB"
    )
    print(json.dumps({"benchmark": "ingest", **result}))


if __name__ == "__main__":
    main()
