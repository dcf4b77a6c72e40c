"""QuestDB: ``list_sessions`` of active statuses (``GET /api/sessions?status=running``)
is read from the index of the non-terminal sessions' newest rows, not by ``LATEST ON``
over the whole session log — so it does not grow with the finished sessions stored
(issue 13: with 100,000 of them the list's p95 was 3.7x that of an empty store at stop
28). The conformance suite checks what the list returns on every backend; this checks
how QuestDB reads it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import Run, _drop_tables, isolated_questdb_url
from ticktape.domain import Reason, Session, SessionStatus, utcnow
from ticktape.store import RetryingStore, open_store
from ticktape.store.base import SessionQuery
from ticktape.store.questdb import QuestDBSessionStore

pytestmark = pytest.mark.questdb


@pytest.fixture
def qdb(questdb_url: str, run: Run[Any]) -> Iterator[RetryingStore]:
    url = isolated_questdb_url(questdb_url)
    store = open_store(url)
    run(store.open())
    yield store
    run(store.close())
    _drop_tables(url)


def test_the_running_list_reads_the_active_index_not_the_whole_log(
    qdb: RetryingStore, run: Run[Any], make_session: Callable[..., Session]
) -> None:
    sessions = qdb.inner.sessions
    assert isinstance(sessions, QuestDBSessionStore)

    async def scenario() -> list[list[str]]:
        await sessions.append_history(
            [make_session() for _ in range(40)],
            to_status=SessionStatus.FAILED,
            reason=Reason.OWNER_LOST,
            actor="t",
        )
        running = []
        for _ in range(5):
            created = await qdb.sessions.create_session(make_session(), actor="t")
            running.append(
                await qdb.sessions.transition(
                    created.id,
                    expected_version=created.version,
                    to_status=SessionStatus.RUNNING,
                    actor="a/1",
                    reason=Reason.STARTED,
                    owner="a/1",
                    lease_expires_at=utcnow() + timedelta(seconds=30),
                )
            )
        query = SessionQuery(statuses=frozenset({SessionStatus.RUNNING}), limit=2)
        await qdb.sessions.list_sessions(query)  # the index's first read is a full one

        index = sessions.heartbeat_sessions
        reads = (index.full_reads, index.window_reads)
        pages, cursor = [], None
        while True:
            page = await qdb.sessions.list_sessions(
                SessionQuery(statuses=query.statuses, limit=2, cursor=cursor)
            )
            pages.append([s.id for s in page.sessions])
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        expected = sorted(running, key=lambda s: (s.created_at, s.id), reverse=True)
        assert [sid for p in pages for sid in p] == [s.id for s in expected]
        # each page read the index's window (a few seconds of rows), none the whole log
        assert (index.full_reads, index.window_reads) == (reads[0], reads[1] + len(pages))
        return pages

    pages = run(scenario())
    assert [len(p) for p in pages] == [2, 2, 1]
