"""``TickStore.trade_span`` and ``trade_buckets`` (the dashboard's price chart) on every
backend: the buckets agree with the raw trades ``read_trades`` returns."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from ticktape.domain import Session
from ticktape.errors import ValidationError
from ticktape.store import Store
from ticktape.store.base import MAX_DATA_LIMIT, TickQuery, TradeBucket
from ticktape.ticks import Trade, TradeBatch

Run = Callable[[Coroutine[Any, Any, Any]], Any]
StartSession = Callable[..., Session]

BASE_US = 1_709_294_437_123_457  # 2024-03-01T12:00:37.123457Z: on no bucket edge
OWNER = "owner-1"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


def _irregular(session_id: str, symbol: str, n: int, seed: int, first_id: int) -> TradeBatch:
    """``n`` trades at irregular, distinct times over about 40 s; bursts and quiet gaps."""
    rng = np.random.default_rng(seed)
    gaps = rng.choice(np.array([1, 7, 250, 3_000, 90_000, 1_500_000]), n)
    ts = BASE_US + np.cumsum(gaps).astype(np.int64)
    return TradeBatch(
        session_id=session_id,
        symbol=symbol,
        ts_us=ts,
        trade_id=np.arange(first_id, first_id + n, dtype=np.int64),
        price=rng.uniform(100.0, 70_000.0, n) + 1e-9,
        qty=rng.exponential(0.3, n),
        side=rng.choice(np.array([1, -1], dtype=np.int8), n),
    )


def _expected(trades: list[Trade], width_us: int) -> list[TradeBucket]:
    """The buckets computed here from raw trades, independently of the backends."""
    groups: dict[int, list[Trade]] = {}
    for t in trades:
        us = _us(t.ts)
        groups.setdefault(us - us % width_us, []).append(t)
    out = []
    for start in sorted(groups):
        rows = sorted(groups[start], key=lambda t: (t.ts, t.trade_id))
        prices = [t.price for t in rows]
        out.append(
            TradeBucket(
                EPOCH + timedelta(microseconds=start),
                prices[0],
                max(prices),
                min(prices),
                prices[-1],
                len(rows),
                sum(t.qty for t in rows),
            )
        )
    return out


def _same(got: list[TradeBucket], want: list[TradeBucket]) -> None:
    assert [(b.start, b.open, b.high, b.low, b.close, b.count) for b in got] == [
        (b.start, b.open, b.high, b.low, b.close, b.count) for b in want
    ]
    for g, w in zip(got, want, strict=True):  # a sum's rounding depends on its order
        assert g.volume == pytest.approx(w.volume, rel=1e-12)


@pytest.fixture
def recorded(store: Store, run: Run, running_session: StartSession) -> tuple[Session, list[Trade]]:
    s = running_session(owner=OWNER)
    btc = _irregular(s.id, "BTC_USDT", 400, seed=11, first_id=1)
    eth = _irregular(s.id, "ETH_USDT", 150, seed=12, first_id=5_000)
    run(store.ticks.write([btc, eth], owner=OWNER))
    other = running_session(owner=OWNER)  # never shows up in s's buckets
    run(store.ticks.write([_irregular(other.id, "BTC_USDT", 50, seed=13, first_id=1)], owner=OWNER))
    run(store.ticks.wait_visible(10.0))
    raw: list[Trade] = run(
        store.ticks.read_trades(TickQuery(s.id, symbol="BTC_USDT", limit=MAX_DATA_LIMIT))
    )
    assert len(raw) == 400
    return s, raw


@pytest.mark.parametrize(
    "width_us", [1, 1_000, 5_000, 200_000, 1_000_000, 15_000_000, 3_600_000_000, 86_400_000_000]
)
def test_buckets_agree_with_the_raw_trades(
    store: Store, run: Run, recorded: tuple[Session, list[Trade]], width_us: int
) -> None:
    s, raw = recorded
    got = run(store.ticks.trade_buckets(TickQuery(s.id, symbol="BTC_USDT"), width_us))
    _same(got, _expected(raw, width_us))
    assert sum(b.count for b in got) == len(raw)
    assert all(_us(b.start) % width_us == 0 for b in got)


def test_buckets_of_a_range_and_a_limit(
    store: Store, run: Run, recorded: tuple[Session, list[Trade]]
) -> None:
    s, raw = recorded
    start, end = raw[37].ts, raw[290].ts  # not on bucket edges
    inside = [t for t in raw if start <= t.ts < end]
    query = TickQuery(s.id, symbol="BTC_USDT", start=start, end=end)
    want = _expected(inside, 1_000_000)
    _same(run(store.ticks.trade_buckets(query, 1_000_000)), want)
    limited = TickQuery(s.id, symbol="BTC_USDT", start=start, end=end, limit=3)
    _same(run(store.ticks.trade_buckets(limited, 1_000_000)), want[:3])


def test_buckets_of_nothing(store: Store, run: Run, recorded: tuple[Session, list[Trade]]) -> None:
    s, raw = recorded
    assert run(store.ticks.trade_buckets(TickQuery(s.id, symbol="XRP_USDT"), 1_000)) == []
    assert run(store.ticks.trade_buckets(TickQuery("no-such-session", symbol="BTC_USDT"), 1)) == []
    after = TickQuery(s.id, symbol="BTC_USDT", start=raw[-1].ts + timedelta(microseconds=1))
    assert run(store.ticks.trade_buckets(after, 1_000)) == []


def test_trade_span(store: Store, run: Run, recorded: tuple[Session, list[Trade]]) -> None:
    s, raw = recorded
    assert run(store.ticks.trade_span(s.id, "BTC_USDT")) == (raw[0].ts, raw[-1].ts)
    assert run(store.ticks.trade_span(s.id, "XRP_USDT")) is None
    assert run(store.ticks.trade_span("no-such-session", "BTC_USDT")) is None


@pytest.mark.parametrize(
    ("symbol", "width_us", "limit"),
    [(None, 1_000, 10), ("BTC_USDT", 0, 10), ("BTC_USDT", 7_000, 10), ("BTC_USDT", 1_000, 0)],
)
def test_bad_bucket_queries_are_refused(
    store: Store, run: Run, symbol: str | None, width_us: int, limit: int
) -> None:
    with pytest.raises(ValidationError):
        run(store.ticks.trade_buckets(TickQuery("x", symbol=symbol, limit=limit), width_us))
