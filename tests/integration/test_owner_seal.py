"""An owner's seal says whether every tick write of its run was acknowledged.

A run whose every write was answered with success, and then waited for visibility,
cannot have a write that landed in part: its supervisor seals with
``acknowledged=True`` and the QuestDB backend leaves out the check of the last send
(two to four more scans of today's partition per tick table at a shutdown). A run one
of whose writes was answered with an error (it may have landed in part, or later) is
sealed with ``acknowledged=False`` and checked, like every reaper's and claimant's seal.
Both stores: the flag is the supervisor's; only QuestDB acts on it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from tests.oracle import check_stored_counts
from ticktape.config import Settings
from ticktape.domain import SessionStatus
from ticktape.errors import StoreError
from ticktape.store.questdb import QuestDBTickStore
from ticktape.testing import eventually, instances

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def test_an_owner_seals_acknowledged_only_when_every_write_of_its_run_was(
    run: Run, store_url: str
) -> None:
    settings = Settings(store_url=store_url, heartbeat_interval_s=0.5, lease_s=5.0)

    async def scenario() -> None:
        async with instances(settings) as add:
            a = await add("a")
            clean = await a.create(seed=1)
            failed = await a.create(seed=2)
            # one write of ``failed`` stores its rows, yet its writer is answered with an
            # error (not a transient one: the store handle does not retry it) — as a write
            # whose answer was lost; the writer sends those batches again
            fault = a.store.fail(
                "write",
                when=lambda **kw: kw["batches"][0].session_id == failed.id,
                error=StoreError("injected: the answer was lost"),
                after=True,
            )
            seals = a.store.delay("seal", 0.0, times=None)  # records each seal's arguments

            async def recorded() -> bool | None:
                if fault.hits == 0:
                    return None
                counts = [await a.raw.ticks.count(s.id) for s in (clean, failed)]
                return all(c.trades for c in counts) or None

            await eventually(recorded, what="both recording, one write failed", timeout_s=60)
            ticks = a.raw.inner.ticks
            checks = ticks.seal_checks if isinstance(ticks, QuestDBTickStore) else 0

            ended = await a.service.stop(clean.id, wait=True, timeout_s=30)
            assert ended.status is SessionStatus.STOPPED, ended
            assert [c["acknowledged"] for c in seals.calls] == [True]
            if isinstance(ticks, QuestDBTickStore):
                assert ticks.seal_checks == checks  # no check of the last send
            await check_stored_counts(a.raw, clean.id)

            ended = await a.service.stop(failed.id, wait=True, timeout_s=30)
            assert ended.status is SessionStatus.STOPPED, ended
            assert [c["acknowledged"] for c in seals.calls] == [True, False]
            if isinstance(ticks, QuestDBTickStore):
                assert ticks.seal_checks == checks + 1  # checked, as a reaper's seal is
            await check_stored_counts(a.raw, failed.id)

    run(scenario())
