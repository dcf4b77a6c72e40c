"""The instance's shared clock: waits due in the same period end on one timer, together."""

from __future__ import annotations

import asyncio
import math

from ticktape.feeds.clock import ticker

PERIOD = 0.05


def test_waits_due_within_one_period_end_together_on_one_timer() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        clock = ticker(PERIOD)
        assert ticker(PERIOD) is clock  # one per loop and period
        k = math.floor(loop.time() / PERIOD) + 2
        # 99 waits of 99 "sessions", due at scattered moments of the same period
        waits = [clock.at((k - 1) * PERIOD + PERIOD * j / 100) for j in range(1, 100)]
        ended = clock.at((k - 1) * PERIOD + PERIOD / 2)
        ended.set_result(None)  # ended otherwise (a stop): the grid point skips it
        await asyncio.wait_for(asyncio.gather(*waits), 30)
        assert clock.fired == 1  # one timer for all of them
        assert loop.time() >= k * PERIOD - loop._clock_resolution  # not before the grid point
        await asyncio.wait_for(clock.after(loop.time()), 30)  # the next point: within a period
        assert clock.fired == 2

    asyncio.run(scenario())
