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
from ticktape.domain import Reason, SessionStatus, validate_spec
from ticktape.feeds.clock import ticker
from ticktape.feeds.sim import BLOCK_PERIOD_S
from ticktape.runners import Instances, default_runners
from ticktape.service import paper_spec
from ticktape.strategies import default_registry, validate_paper
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
    shared = Instances()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with instances(settings, default_runners(instances=shared)) as add:
            node = await add("node")
            sessions = [await node.create(symbols=["BTC_USDT"], seed=i) for i in range(SESSIONS)]
            registry = node.metrics.registry

            async def all_fed() -> bool | None:  # each session's first block at least
                return True if fed_trades(registry) >= SESSIONS * 5 else None

            await eventually(all_fed, what="every session's first block", timeout_s=30)
            parts = shared.find(node.owner)
            assert parts is not None and parts.running_driver is not None
            driver = parts.running_driver
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


def test_a_paper_session_is_fed_by_the_instance_driver_and_its_strategy_sees_the_recording(
    run: Run,
) -> None:
    settings = Settings(store_url="memory://", flush_interval_s=1.0)
    shared = Instances()

    async def scenario() -> None:
        async with instances(settings, default_runners(instances=shared)) as add:
            node = await add("node")
            recording = validate_spec(
                kind="collect", symbols=["BTC_USDT"], duration="3s", rate_per_s=1000.0, seed=3
            )
            strategy = {"strategy": "market_maker", "params": {"qty": 0.5, "max_inventory": 2.0}}
            paper = validate_paper(
                {"symbols": ["BTC_USDT"], "seed": 3, **strategy}, default_registry()
            )
            session = await node.service.create(paper_spec(recording, paper))

            async def driven() -> bool | None:
                parts = shared.find(node.owner)
                driver = None if parts is None else parts.running_driver
                return True if driver is not None and driver.sessions == 1 else None

            await eventually(driven, what="the paper session on the driver", timeout_s=30)

            async def completed() -> bool | None:
                got = await node.raw.sessions.get_session(session.id)
                return True if got.status is SessionStatus.COMPLETED else None

            await eventually(completed, what="the paper session's end", timeout_s=60)
            done = await node.raw.sessions.get_session(session.id)
            assert done.stats.records_collected > 0
            events = await node.raw.sessions.list_events(session.id)
            assert not [e for e in events if e.reason == Reason.COUNT_MISMATCH]
            results = await node.raw.results.summary(session.id)
            assert results is not None and results.fills > 0  # the strategy saw the blocks
            await check_stored(node.raw, session.id)

    run(scenario())
