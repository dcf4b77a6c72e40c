"""Export benchmark: rows/s and memory of a streamed export of a large session.

Writes ``--rows`` trades (and ``--rows / 5`` book snapshots of depth 10) of one
session straight into a SQLite store, then exports them as the API does
(``ticktape.export``: keyset pages of 10,000 rows, one CSV chunk / Parquet row
group each) into a null sink, for each format. Reports rows/s and the process's
resident memory during the export: its peak, and its growth over the level
before the export began (constant memory: the growth does not depend on the
session's size).

    .venv/bin/python bench/export.py --rows 5000000

Prints figures and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from datetime import timedelta
from typing import Any

import numpy as np

from ticktape.domain import (
    DataType,
    Session,
    SessionConfig,
    SessionKind,
    SessionStatus,
    new_session_id,
    utcnow,
)
from ticktape.export import ExportFormat, book_pages, encode, trade_pages
from ticktape.store import open_store
from ticktape.store.base import TickQuery
from ticktape.ticks import BookBatch, TradeBatch

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
BATCH = 50_000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE / 2**20


async def run(rows: int, workdir: str) -> dict[str, Any]:
    store = open_store(f"sqlite:///{workdir}/export.db")
    await store.open()
    try:
        owner = "bench"
        created = await store.sessions.create_session(
            Session(
                new_session_id(), SessionKind.COLLECT, SessionStatus.PENDING,
                ("BTC_USDT", "ETH_USDT"), "sim", (DataType.TRADES, DataType.ORDERBOOK),
                SessionConfig(book_depth=10), utcnow(),
            ),
            actor=owner,
        )  # fmt: skip
        s = await store.sessions.transition(
            created.id, expected_version=created.version, to_status=SessionStatus.RUNNING,
            actor=owner, reason="started", owner=owner,
            lease_expires_at=utcnow() + timedelta(hours=2),
        )  # fmt: skip
        rng = np.random.default_rng(0)
        t0 = 1_700_000_000_000_000
        started = time.perf_counter()
        for i in range(0, rows, BATCH):
            n = min(BATCH, rows - i)
            ids = np.arange(i + 1, i + 1 + n, dtype=np.int64)
            symbol = "BTC_USDT" if (i // BATCH) % 2 == 0 else "ETH_USDT"
            trades = TradeBatch(
                s.id, symbol, t0 + ids * 10, ids, rng.uniform(1, 7e4, n), rng.exponential(1, n),
                np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8), recv_us=t0 + ids * 10 + 900,
            )  # fmt: skip
            k = n // 5
            books = BookBatch(
                s.id, symbol, t0 + ids[::5][:k] * 10 + 1, rng.uniform(1, 7e4, (k, 10)),
                rng.exponential(1, (k, 10)), rng.uniform(1, 7e4, (k, 10)),
                rng.exponential(1, (k, 10)),
            )  # fmt: skip
            await store.ticks.write([trades, books], owner=owner)
        write_s = time.perf_counter() - started
        counts = await store.ticks.count(s.id)
        print(
            f"wrote {counts.trades:,} trades and {counts.orderbook:,} snapshots in {write_s:.1f}s"
        )
        result: dict[str, Any] = {"trades": counts.trades, "snapshots": counts.orderbook}
        query = TickQuery(s.id)
        for data in ("trades", "orderbook"):
            for fmt in (ExportFormat.CSV, ExportFormat.PARQUET):
                base = rss_mb()
                peak = base
                size = 0
                started = time.perf_counter()
                if data == "trades":
                    chunks = encode(trade_pages(store.ticks.read_trades, query), fmt)
                else:
                    pages = book_pages(store.ticks.read_orderbook, query)
                    chunks = encode(pages, fmt, depth=10)
                async for chunk in chunks:
                    size += len(chunk)
                    peak = max(peak, rss_mb())
                elapsed = time.perf_counter() - started
                n = counts.trades if data == "trades" else counts.orderbook
                key = f"{data}_{fmt.value}"
                result[f"{key}_rows_per_s"] = round(n / elapsed)
                result[f"{key}_mb"] = round(size / 2**20, 1)
                result[f"{key}_rss_peak_mb"] = round(peak, 1)
                result[f"{key}_rss_growth_mb"] = round(peak - base, 1)
                print(
                    f"export {data:9} {fmt.value:7}: {n / elapsed:10,.0f} rows/s, "
                    f"{size / 2**20:8.1f} MB, RSS peak {peak:7.1f} MB "
                    f"(+{peak - base:.1f} MB over the start of the export)"
                )
        return result
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5_000_000, help="trades in the session")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    machine = f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}"
    print(f"machine: {machine}; load average (1 min) at start: {load:.2f}")
    with tempfile.TemporaryDirectory() as workdir:
        result = asyncio.run(run(args.rows, workdir))
    result.update(machine=machine, load_avg_1m_at_start=round(load, 2), rows=args.rows)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
