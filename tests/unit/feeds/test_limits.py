"""The shared per-IP rate limits of the connectors, on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ticktape.feeds.binance import BinanceEndpoints, BinanceFeed, depth_weight
from ticktape.feeds.limits import CONNECT_LIMITS, REST_LIMITS, RateLimiter, shared_limiter
from ticktape.feeds.mexc import MexcEndpoints, MexcFeed

Run = Callable[[Coroutine[Any, Any, Any]], Any]


class FakeClock:
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let the other tasks run, as a real sleep does


def _limiter(clock: FakeClock, limit: int, window_s: float) -> RateLimiter:
    return RateLimiter(limit, window_s, clock=clock, sleep=clock.sleep)


def test_attempts_past_the_budget_wait_for_the_window(run: Run) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        limiter = _limiter(clock, 3, 10.0)
        times = []
        for _ in range(7):
            await limiter.acquire()
            times.append(clock.now - 1_000.0)
        assert times == [0, 0, 0, 10, 10, 10, 20]
        assert limiter.waited_s == pytest.approx(20.0)  # the 4th waited 10 s, the 7th 10 s

    run(scenario())


def test_many_concurrent_attempts_never_exceed_the_budget_in_any_window(run: Run) -> None:
    """300 sessions reconnecting at once: every window of 300 s holds at most 240 attempts,
    and all of them get through (in arrival order)."""

    async def scenario() -> None:
        clock = FakeClock()
        limit, window = CONNECT_LIMITS["binance"]
        limiter = _limiter(clock, limit, window)
        taken: list[tuple[float, int]] = []

        async def session(n: int) -> None:
            await limiter.acquire()
            taken.append((clock.now, n))

        await asyncio.gather(*(session(n) for n in range(300)))
        assert sorted(n for _, n in taken) == list(range(300))
        assert [n for _, n in taken] == list(range(300))  # first come, first served
        times = sorted(t for t, _ in taken)
        for i, start in enumerate(times):
            inside = sum(1 for t in times[i:] if t < start + window)
            assert inside <= limit
        assert times[limit - 1] == times[0] and times[limit] == times[0] + window

    run(scenario())


def test_weighted_requests_share_one_budget(run: Run) -> None:
    """Binance's REST budget is in request weight: a 1000-level snapshot weighs 20."""

    async def scenario() -> None:
        clock = FakeClock()
        weight, window = REST_LIMITS["binance"]
        limiter = _limiter(clock, weight, window)
        snapshots = weight // depth_weight(1000)  # 60 snapshots a minute
        for _ in range(snapshots):
            assert await limiter.acquire(depth_weight(1000)) == 0
        assert limiter.used() == weight
        assert await limiter.acquire(depth_weight(1000)) == pytest.approx(window)
        with pytest.raises(ValueError, match="cannot take"):
            await limiter.acquire(weight + 1)

    run(scenario())


def test_the_limiter_is_shared_by_every_feed_of_an_exchange_host(run: Run) -> None:
    async def scenario() -> None:
        a = shared_limiter("connect", "binance", "wss://fstream.binance.com/market/ws", (240, 300))
        b = shared_limiter("connect", "binance", "wss://fstream.binance.com/public/ws", (240, 300))
        other = shared_limiter("connect", "binance", "wss://example.test/ws", (240, 300))
        mexc = shared_limiter("connect", "mexc", "wss://fstream.binance.com/ws", (240, 300))
        assert a is b
        assert other is not a and mexc is not a

    run(scenario())


def test_connectors_declare_their_documented_rest_costs() -> None:
    binance = BinanceFeed("s", ("BTCUSDT",), endpoints=BinanceEndpoints(rest="http://x"))
    assert (binance.rest_url, binance.snapshot_weight) == ("http://x", 20)
    assert [depth_weight(n) for n in (5, 50, 100, 500, 1000)] == [2, 2, 5, 10, 20]
    mexc = MexcFeed("s", ("BTC_USDT",), endpoints=MexcEndpoints(rest="http://y"))
    assert (mexc.rest_url, mexc.snapshot_weight) == ("http://y", 1)


def test_a_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit >= 1"):
        RateLimiter(0, 1.0)
    with pytest.raises(ValueError, match="window_s > 0"):
        RateLimiter(1, 0.0)
