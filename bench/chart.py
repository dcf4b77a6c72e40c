"""Chart buckets: what the dashboard's price chart costs on a long session.

Writes ``--trades`` trades of one symbol (one every ``--step-ms``) for a session in
a fresh store, then times ``TickStore.trade_buckets`` at the width the chart route
picks for ``--points`` (the whole session in one chart: no range, as the route asks;
and the same as an explicit range), and a zoom to 1 % of it,
against reading the same trades raw (``read_trades`` in pages of the API's maximum,
which is what a client drawing from raw trades would have to do). Checks that the
buckets hold every trade. Last line: JSON.

    .venv/bin/python bench/chart.py --store sqlite --trades 1000000
    .venv/bin/python bench/chart.py --store 'questdb://127.0.0.1:8812?ilp=http://127.0.0.1:9000'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ticktape.api.charts import width_for
from ticktape.domain import Reason, Session, SessionStatus, new_session_id, utcnow, validate_spec
from ticktape.store import open_store
from ticktape.store.base import MAX_DATA_LIMIT, TickQuery
from ticktape.ticks import TradeBatch

OWNER = "bench-chart"
T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


async def _timed(coro_factory: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await coro_factory()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


async def run(store_url: str, trades: int, step_ms: int, points: int) -> dict[str, Any]:
    store = open_store(store_url)
    await store.open()
    try:
        spec = validate_spec(kind="collect", symbols=["BTC_USDT"], data_types=["trades"])
        draft = Session(
            id=new_session_id(),
            kind=spec.kind,
            status=SessionStatus.PENDING,
            symbols=spec.symbols,
            exchange=spec.exchange,
            data_types=spec.data_types,
            config=spec.config,
            created_at=utcnow(),
            reason=Reason.CREATED,
        )
        created = await store.sessions.create_session(draft, actor="bench")
        session = await store.sessions.transition(
            created.id,
            expected_version=created.version,
            to_status=SessionStatus.RUNNING,
            actor="bench",
            reason="started",
            owner=OWNER,
            lease_expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        rng = np.random.default_rng(1)
        chunk = 100_000
        started = time.perf_counter()
        for first in range(0, trades, chunk):
            n = min(chunk, trades - first)
            ids = np.arange(first + 1, first + n + 1, dtype=np.int64)
            batch = TradeBatch(
                session.id,
                "BTC_USDT",
                T0_US + (ids - 1) * step_ms * 1000,
                ids,
                60_000 + np.cumsum(rng.normal(0, 5, n)),
                rng.exponential(0.2, n),
                rng.choice(np.array([1, -1], dtype=np.int8), n),
            )
            await store.ticks.write([batch], owner=OWNER)
        await store.ticks.wait_visible(120.0)
        write_s = time.perf_counter() - started

        start_us, end_us = T0_US, T0_US + (trades - 1) * step_ms * 1000 + 1
        # As the chart route asks for a whole session: no range (width from the span).
        whole = TickQuery(session.id, "BTC_USDT", None, None, limit=points)
        width = width_for(start_us, end_us, points)
        whole_s, buckets = await _timed(lambda: store.ticks.trade_buckets(whole, width), 3)
        assert sum(b.count for b in buckets) == trades, "the buckets lost trades"
        ranged = TickQuery(session.id, "BTC_USDT", _dt(start_us), _dt(end_us), limit=points)
        ranged_s, same = await _timed(lambda: store.ticks.trade_buckets(ranged, width), 3)
        assert same == buckets
        zoom_start = start_us + (end_us - start_us) // 2
        zoom_end = zoom_start + (end_us - start_us) // 100
        zoom = TickQuery(session.id, "BTC_USDT", _dt(zoom_start), _dt(zoom_end), limit=points)
        zoom_width = width_for(zoom_start, zoom_end, points)
        zoom_s, zoomed = await _timed(lambda: store.ticks.trade_buckets(zoom, zoom_width), 5)

        async def read_all() -> int:
            seen, after = 0, _dt(start_us)
            while True:
                page = await store.ticks.read_trades(
                    TickQuery(session.id, "BTC_USDT", after, None, MAX_DATA_LIMIT)
                )
                seen += len(page)
                if len(page) < MAX_DATA_LIMIT:
                    return seen
                after = page[-1].ts + timedelta(microseconds=1)

        raw_s, raw_count = await _timed(read_all, 1)
        assert raw_count == trades
    finally:
        await store.close()
    return {
        "store": store_url.split(":", 1)[0],
        "trades": trades,
        "write_s": round(write_s, 2),
        "points": points,
        "width_us": width,
        "buckets": len(buckets),
        "whole_chart_ms": round(whole_s * 1000, 1),
        "whole_chart_as_range_ms": round(ranged_s * 1000, 1),
        "zoom_1pct_width_us": zoom_width,
        "zoom_1pct_buckets": len(zoomed),
        "zoom_1pct_ms": round(zoom_s * 1000, 1),
        "read_raw_trades_ms": round(raw_s * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite", help="sqlite, memory or a store URL")
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--step-ms", type=int, default=10, help="time between trades")
    parser.add_argument("--points", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = {"sqlite": f"sqlite:///{Path(tmp) / 'chart.db'}", "memory": "memory://"}.get(
            args.store, args.store
        )
        result = asyncio.run(run(url, args.trades, args.step_ms, args.points))
    for key, value in result.items():
        print(f"{key:>22}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
