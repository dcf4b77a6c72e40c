"""QuestDB: a wait for the ticks committed by a past time waits for what the tick tables
had committed as of a WAL state read at or after it, not for what was committed since
(``TickStore.wait_visible(committed_by=...)``, ``note_committed``; the reconciler's
seals of a lost owner's sessions, docs/resilience.md "Sealing")."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Run
from ticktape.domain import utcnow
from ticktape.feeds.sim import SimExchange
from ticktape.store import RetryingStore, open_store
from ticktape.store.questdb import QuestDBTickStore

pytestmark = pytest.mark.questdb


@pytest.fixture
def store(qdb_url: str, run: Run[Any]) -> Iterator[RetryingStore]:
    opened = open_store(qdb_url)  # calls go through the retry layer, as the runtime's do
    assert isinstance(opened, RetryingStore)
    run(opened.open())
    yield opened
    run(opened.close())


def test_a_wait_for_what_was_committed_by_a_time_uses_the_state_noted_then(
    store: RetryingStore, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    ticks = store.ticks
    marks = store.inner.ticks
    assert isinstance(marks, QuestDBTickStore)
    session = make_session(owner="me")
    run(store.sessions.create_session(session, actor="test"))
    sim = SimExchange(session.id, session.symbols, rate_per_s=0, start_us=1_700_000_000_000_000)

    async def scenario() -> tuple[Any, ...]:
        await ticks.write(sim.next_block(), owner="me")
        await ticks.wait_visible(30)
        before = utcnow()
        await ticks.note_committed()
        noted = marks.commit_marks.as_of(before)
        await ticks.write(sim.next_block(), owner="me")  # committed after the note
        after = utcnow()
        await ticks.wait_visible(30)  # everything so far: a state read after the write
        later = marks.commit_marks.as_of(after)
        # what was committed by ``before`` was applied already: one look, no waiting
        await ticks.wait_visible(0.0, committed_by=before)
        return noted, later, marks.commit_marks.as_of(before)

    noted, later, again = run(scenario())
    assert noted is not None and later is not None
    assert set(noted) == set(later) and len(noted) == 2  # both tick tables
    assert all(later[t] > noted[t] for t in noted)  # the second write's commits
    assert again == noted  # still the mark for that time, not a later read's
