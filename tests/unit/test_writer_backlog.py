"""A store behind the feeds is visible: the instance's buffered ticks and its waits.

The instance's tick writer bounds what all its sessions buffer (``RowPool``,
``TICKTAPE_INSTANCE_BUFFER_MAX_ROWS``); a feed block that does not fit waits
(back-pressure, nothing dropped). Here the bound is 6 rows and nothing is written (the
flush interval is an hour and no buffer becomes due), so the third block waits: the
metrics show the rows held and the waits, and the writer logs it once per
``BUFFER_WAIT_LOG_EVERY_S``, not once per wait.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import pytest

from tests.unit.writer_stubs import HOUR, Client, trades
from ticktape.config import Settings
from ticktape.metrics import Metrics
from ticktape.runners import TickWriter
from ticktape.runtime.handle import RunHandle
from ticktape.store.base import Store


async def _waiting(task: asyncio.Task[None]) -> None:
    for _ in range(20):  # a few turns of the loop: the put reaches its wait
        await asyncio.sleep(0)
    assert not task.done()


def test_buffered_ticks_and_waits_under_the_instance_bound_are_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        settings = Settings(
            store_url="memory://",
            flush_interval_s=HOUR,
            flush_eager_rows=1_000,
            instance_buffer_max_rows=6,
        )
        metrics = Metrics()
        writer = TickWriter(cast(Store, object()), settings, metrics, "owner")

        def sample(name: str) -> float | None:
            return metrics.registry.get_sample_value(name)

        a = writer.register(RunHandle("a"), Client())
        b = writer.register(RunHandle("b"), Client())
        await a.buffer.put([trades("a")])
        await b.buffer.put([trades("b")])
        assert sample("ticktape_tick_buffer_rows") == 6
        assert sample("ticktape_tick_buffer_waits_total") == 0

        first = asyncio.create_task(a.buffer.put([trades("a")]))
        await _waiting(first)
        second = asyncio.create_task(b.buffer.put([trades("b")]))
        await _waiting(second)
        assert sample("ticktape_tick_buffer_waits_total") == 2
        assert sample("ticktape_tick_buffer_rows") == 6  # bounded: the waiting rows wait
        lines = [r for r in caplog.records if "tick buffers full" in r.getMessage()]
        assert len(lines) == 1  # the second wait came within BUFFER_WAIT_LOG_EVERY_S
        assert lines[0].levelno == logging.WARNING
        assert "6 ticks held for the store (bound 6" in lines[0].getMessage()

        # room again: what waited goes in (nothing was dropped)
        await a.buffer.shed()
        await asyncio.wait_for(first, 30.0)
        assert a.buffer.rows == 3 and sample("ticktape_tick_buffer_rows") == 6
        for task in (second,):
            task.cancel()
        await asyncio.gather(second, return_exceptions=True)
        for reg in (a, b):
            await reg.buffer.shed()
            reg.buffer.detach()
            writer.unregister(reg)
        assert sample("ticktape_tick_buffer_rows") == 0

    with caplog.at_level(logging.WARNING, logger="ticktape.runners.writer"):
        asyncio.run(scenario())
