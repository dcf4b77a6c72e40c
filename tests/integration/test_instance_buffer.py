"""The instance-wide bound on buffered ticks (``TICKTAPE_INSTANCE_BUFFER_MAX_ROWS``).

The per-session bound (``TICKTAPE_BUFFER_MAX_ROWS``) does not bound an instance of many
sessions. With a slow store (every tick write waits, on a real SQLite file) and sessions
fed faster than it takes them, the rows buffered by all the sessions together stay
within the instance's bound plus one block per session (an empty buffer always takes
one block), the feeds are held back (back-pressure: puts waited for the pool), and
nothing is lost: after the stop every session's stats equal its stored rows and the
stored trade ids are contiguous apart from recorded gaps.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from tests.oracle import check_stored
from ticktape.config import Settings
from ticktape.domain import SessionStatus
from ticktape.feeds.sim import SimExchange
from ticktape.runners import Instances, TickWriter, default_runners
from ticktape.testing import eventually, instances

Run = Callable[[Coroutine[Any, Any, Any]], Any]

SESSIONS = 3
RATE = 2_000.0  # trades/s per session: blocks of 500 trades and 100 snapshots
INSTANCE_ROWS = 2_000  # far below the per-session bound: only the instance's bound can hold
WRITE_DELAY_S = 0.3


def test_the_instance_bound_holds_every_session_back_and_loses_nothing(
    run: Run, tmp_path: Path
) -> None:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/pool.db",
        buffer_max_rows=200_000,
        instance_buffer_max_rows=INSTANCE_ROWS,
    )
    probe = SimExchange("p", ("BTC_USDT",), rate_per_s=RATE)
    block_rows = sum(len(b) for b in probe.next_block())

    shared = Instances()

    async def scenario() -> None:
        async with instances(settings, default_runners(instances=shared)) as add:
            node = await add("node")
            node.store.delay("write", WRITE_DELAY_S, times=None)
            sessions = [
                await node.create(symbols=["BTC_USDT"], rate_per_s=RATE) for _ in range(SESSIONS)
            ]

            async def writer_in_use() -> TickWriter | None:
                parts = shared.find(node.owner)  # once the runs are launched
                return None if parts is None else parts.writer

            # the instance's one writer, with its pool
            pool = (await eventually(writer_in_use, what="the writer", timeout_s=30)).pool

            async def held_back() -> bool | None:
                return True if pool.waits >= SESSIONS else None

            await eventually(held_back, what="puts waiting for the instance's bound", timeout_s=30)
            for s in sessions:
                ended = await node.service.stop(s.id, wait=True, timeout_s=60)
                assert ended.status is SessionStatus.STOPPED, ended
            assert pool.peak <= INSTANCE_ROWS + SESSIONS * block_rows, pool.peak
            assert pool.rows == 0  # every run's buffer left the pool
            for s in sessions:
                await check_stored(node.raw, s.id)

    run(scenario())
