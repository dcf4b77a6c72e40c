"""QuestDB: ``list_sessions`` of active statuses (``GET /api/sessions?status=running``)
is read from the index of the non-terminal sessions' newest rows, not by ``LATEST ON``
over the whole session log — so it does not grow with the finished sessions stored
(issue 13: with 100,000 of them the list's p95 was 3.7x that of an empty store at stop
28). The conformance suite checks what the list returns on every backend; this checks
how QuestDB reads it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import Run
from ticktape.domain import Reason, Session, SessionStatus, utcnow
from ticktape.store import RetryingStore
from ticktape.store.base import SessionQuery
from ticktape.store.questdb import QuestDBSessionStore

pytestmark = pytest.mark.questdb


def test_the_running_list_reads_the_active_index_not_the_whole_log(
    questdb_store: RetryingStore, run: Run[Any], make_session: Callable[..., Session]
) -> None:
    sessions = questdb_store.inner.sessions
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
            created = await questdb_store.sessions.create_session(make_session(), actor="t")
            running.append(
                await questdb_store.sessions.transition(
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
        await questdb_store.sessions.list_sessions(query)  # the index's first read is a full one

        index = sessions.heartbeat_sessions
        reads = (index.full_reads, index.window_reads)
        pages, cursor = [], None
        while True:
            page = await questdb_store.sessions.list_sessions(
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
