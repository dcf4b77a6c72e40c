"""Seals announced together are counted together, on a real server.

At a shutdown an instance's runners reach their seals over seconds; counted in groups
as they came, the first few formed groups of their own and every group read both tick
tables' whole partition again (four reads of 81 M rows each in the 19-minute hold of
stop 20, while the server's two network workers had nothing left for a connect or a
lease renewal). :meth:`~ticktape.store.base.TickStore.expect_seals` says how many are
coming: the count group then waits for them all, however far apart they come, less
those :meth:`~ticktape.store.base.TickStore.seal_not_coming` takes off (runs that ended
without one), or until the announced bound.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import Run
from ticktape.store import RetryingStore
from ticktape.store.base import Seal
from ticktape.store.questdb import QuestDBTickStore

pytestmark = pytest.mark.questdb

ARRIVAL_GAP_S = 0.1  # between two runners reaching their seals
MOVED_BOUND_S = 0.5
WAVE_GAP_S = 2.5  # between two waves of seals: longer than the 1 s quiet that ended a wait


@dataclass
class Counting:
    """An instance's store on QuestDB and the groups its seals were counted in, in order
    (``QuestDBTickStore.on_count_group``)."""

    store: RetryingStore
    groups: list[list[str]] = field(default_factory=list)


@pytest.fixture
def counting(stores: tuple[RetryingStore, RetryingStore]) -> Counting:
    seen = Counting(stores[0])
    ticks = seen.store.inner.ticks
    assert isinstance(ticks, QuestDBTickStore)
    ticks.on_count_group = seen.groups.append
    return seen


async def _seals_arriving_apart(store: RetryingStore, ids: list[str]) -> list[Seal]:
    tasks = []
    for sid in ids:
        tasks.append(asyncio.create_task(store.ticks.seal(sid, acknowledged=True)))
        await asyncio.sleep(ARRIVAL_GAP_S)
    return await asyncio.gather(*tasks)


def test_expected_seals_arriving_apart_are_counted_in_one_group(
    counting: Counting, run: Run[Any]
) -> None:
    store, groups = counting.store, counting.groups

    async def scenario() -> None:
        # unannounced, the first seal is counted alone: the arrivals here are apart
        alone = [f"alone-{n}" for n in range(4)]
        await _seals_arriving_apart(store, alone)
        assert len(groups) > 1, groups
        groups.clear()

        announced = [f"shut-{n}" for n in range(8)]
        store.ticks.expect_seals(len(announced), 60.0)
        seals = await _seals_arriving_apart(store, announced)
        assert groups == [announced], groups
        assert all(s.counts.trades == s.counts.orderbook == 0 for s in seals)

    run(scenario())


def test_expected_seals_arriving_in_waves_are_counted_in_one_group(
    counting: Counting, run: Run[Any]
) -> None:
    store, groups = counting.store, counting.groups

    async def scenario() -> None:
        # a shutdown's stop requests commit in waves, and the runners woken by one wave
        # seal together, seconds before the next wave's: a wait that gave up after a
        # quiet second took the first wave alone and scanned the tables once per wave
        first, second = [f"wave1-{n}" for n in range(3)], [f"wave2-{n}" for n in range(3)]
        store.ticks.expect_seals(len(first) + len(second), 60.0)
        waves = [asyncio.create_task(_seals_arriving_apart(store, first))]
        await asyncio.sleep(WAVE_GAP_S)
        waves.append(asyncio.create_task(_seals_arriving_apart(store, second)))
        await asyncio.wait_for(asyncio.gather(*waves), 40.0)
        assert groups == [first + second], groups

    run(scenario())


def test_seals_that_are_not_coming_are_not_waited_for(counting: Counting, run: Run[Any]) -> None:
    store, groups = counting.store, counting.groups

    async def scenario() -> None:
        store.ticks.expect_seals(5, 60.0)
        came = [f"came-{n}" for n in range(3)]
        arriving = asyncio.create_task(_seals_arriving_apart(store, came))
        # two of the five runs ended without a seal (a lost lease): their supervisor
        # says so, and the three that came are counted without waiting for the bound
        store.ticks.seal_not_coming()
        store.ticks.seal_not_coming()
        await asyncio.wait_for(arriving, 20.0)
        assert groups == [came], groups
        # the expectation is spent: a later seal is counted at once, alone
        await asyncio.wait_for(store.ticks.seal("later", acknowledged=True), 20.0)
        assert groups[1:] == [["later"]], groups

    run(scenario())


def test_a_moved_bound_ends_the_wait(counting: Counting, run: Run[Any]) -> None:
    store, groups = counting.store, counting.groups

    async def scenario() -> None:
        # a shutdown announces its seals for the whole grace, then, its stop requests
        # recorded, says the rest are due within half of what is left
        store.ticks.expect_seals(3, 60.0)
        first = asyncio.create_task(store.ticks.seal("first", acknowledged=True))
        store.ticks.seals_due_within(MOVED_BOUND_S)
        await asyncio.wait_for(first, 20.0)  # the two others stalled: not waited for
        assert groups == [["first"]], groups

    run(scenario())
