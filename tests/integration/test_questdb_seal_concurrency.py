"""A seal's queries that need no order among them run at once, on a real server.

A reap's seal is most of the reconciler's pass (docs/resilience.md, "Reaping and the
timing bound"): one read of both tick tables queries each table at once (only the
reads are ordered: each starts after the one before has answered), and the gaps
table's read runs beside them. Here the backend's testing hook
:attr:`~ticktape.store.questdb.QuestDBTickStore.after_read` holds the first query to
answer until the other has answered too: run one after the other, the first waits in
vain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Run
from tests.integration.questdb_fencing import counts, reap, start
from tests.integration.test_questdb_split_send import _feed
from ticktape.store import RetryingStore
from ticktape.store.questdb import QuestDBTickStore

pytestmark = pytest.mark.questdb

HELD_S = 20.0  # how long the first query's answer waits for the other's, at most


def _questdb(store: RetryingStore) -> QuestDBTickStore:
    ticks = store.inner.ticks
    assert isinstance(ticks, QuestDBTickStore)
    return ticks


@pytest.mark.parametrize(
    "labels",
    [("count ticks", "count ticks"), ("count ticks", "seal gaps")],
    ids=["both-tick-tables", "ticks-and-gaps"],
)
def test_a_seals_independent_queries_are_in_flight_together(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
    labels: tuple[str, str],
) -> None:
    lost, reaper = stores
    sealer = _questdb(reaper)

    async def scenario() -> None:
        session = await start(lost, make_session, "lost")
        written = _feed(session.id).next_block()
        await lost.ticks.write(written, owner="lost")
        other = asyncio.Event()
        held: list[str] = []  # the label of the answer held, once one is
        together = False

        async def hold(what: str) -> None:
            nonlocal together
            if what not in labels:
                return
            if not held:  # the first answer of the pair waits...
                held.append(what)
                try:
                    await asyncio.wait_for(other.wait(), HELD_S)
                    together = True
                except TimeoutError:
                    pass
            elif labels[0] == labels[1] or what != held[0]:  # ...for the other's
                other.set()

        sealer.after_read = hold
        try:
            seal, _ = await reap(reaper, session)
        finally:
            sealer.after_read = None
        assert together, f"{labels[0]!r} and {labels[1]!r} answered one after the other"
        assert seal.counts == counts(written)

    run(scenario())


def test_a_seal_group_logs_where_its_time_went(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One info line per count group holding a seal: its queue wait, the tenures' read,
    the reads of the tick tables and the gaps' read (what a slow reap's seal spent)."""
    lost, reaper = stores

    async def scenario() -> None:
        session = await start(lost, make_session, "lost")
        await lost.ticks.write(_feed(session.id).next_block(), owner="lost")
        with caplog.at_level(logging.INFO, logger="ticktape.store.questdb"):
            await reap(reaper, session)

    run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("seal group")]
    assert len(lines) == 1, lines
    assert "1 sessions, 1 sealing (1 checked)" in lines[0]
    assert "2 reads of the tick tables" in lines[0]
