"""Many simulated sessions of an instance cost one wake-up per block period, not one each.

The block clock's waits (``Ticker.waits``) count the wake-ups: with a generator per
session, every session asked one per block; with the instance's driver, the driver asks
one per period whatever the number of sessions. The flushes wait on a clock of another
period here (``flush_interval_s``), so only the feeds are counted. Every session's
recording is then checked by the oracle: same ticks, counts equal to stored rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from tests.oracle import check_stored
from ticktape.config import Settings
from ticktape.domain import SessionStatus
from ticktape.feeds.clock import ticker
from ticktape.feeds.sim import BLOCK_PERIOD_S
from ticktape.runners.collect import instance_driver
from ticktape.testing import eventually, instances

Run = Callable[[Coroutine[Any, Any, Any]], Any]

SESSIONS = 40
PERIODS = 6


def fed_trades(registry: Any) -> float:
    """Trades the instance's sim feeds handed out (0 before the first: a misspelt name
    never reaches the counts waited for)."""
    value = registry.get_sample_value(
        "ticktape_feed_rows_received_total", {"exchange": "sim", "data_type": "trades"}
    )
    return 0.0 if value is None else float(value)


def test_many_sim_sessions_cost_one_driver_wake_up_per_block_period(run: Run) -> None:
    settings = Settings(store_url="memory://", flush_interval_s=1.0)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with instances(settings) as add:
            node = await add("node")
            sessions = [await node.create(symbols=["BTC_USDT"], seed=i) for i in range(SESSIONS)]
            registry = node.metrics.registry

            async def all_fed() -> bool | None:  # each session's first block at least
                return True if fed_trades(registry) >= SESSIONS * 5 else None

            await eventually(all_fed, what="every session's first block", timeout_s=30)
            driver = instance_driver(node.metrics)
            clock = ticker(BLOCK_PERIOD_S, loop)
            waits, turns, t0 = clock.waits, driver.turns, loop.time()
            fed = fed_trades(registry)
            await asyncio.sleep(PERIODS * BLOCK_PERIOD_S)  # the span being measured
            periods = (loop.time() - t0) / BLOCK_PERIOD_S
            assert clock.waits - waits <= periods + 2  # a per-session chain: ~40 per period
            assert driver.sessions == SESSIONS
            assert 1 <= driver.turns - turns <= periods + 2
            fed_now = fed_trades(registry)
            assert fed_now - fed >= SESSIONS * 5 * (PERIODS - 2)  # every session was fed
            for s in sessions:
                ended = await node.service.stop(s.id, wait=True, timeout_s=30)
                assert ended.status is SessionStatus.STOPPED, ended
            assert driver.sessions == 0
            for s in sessions:
                await check_stored(node.raw, s.id)

    run(scenario())
