"""QuestDB: ``list_sessions`` of active statuses (``GET /api/sessions?status=running``)
is read from the index of the non-terminal sessions' newest rows, not by ``LATEST ON``
over the whole session log — so it does not grow with the finished sessions stored
(issue 13: with 100,000 of them the list's p95 was 3.7x that of an empty store at stop
28). The conformance suite checks what the list returns on every backend; this checks
how QuestDB reads it."""

from __future__ import annotations

import asyncio
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


RUNNING = SessionQuery(statuses=frozenset({SessionStatus.RUNNING}))


def _questdb(store: RetryingStore) -> QuestDBSessionStore:
    sessions = store.inner.sessions
    assert isinstance(sessions, QuestDBSessionStore)
    return sessions


async def _start(store: RetryingStore, session: Session) -> Session:
    """``session`` created and running, owned by ``a/1``."""
    created = await store.sessions.create_session(session, actor="t")
    return await store.sessions.transition(
        created.id,
        expected_version=created.version,
        to_status=SessionStatus.RUNNING,
        actor="a/1",
        reason=Reason.STARTED,
        owner="a/1",
        lease_expires_at=utcnow() + timedelta(seconds=30),
    )


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
        running = [await _start(questdb_store, make_session()) for _ in range(5)]
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


def test_once_the_log_is_quiet_the_window_holds_none_of_its_last_burst(
    questdb_store: RetryingStore, run: Run[Any], make_session: Callable[..., Session]
) -> None:
    # A burst of finished sessions (a bulk import, many ending at once) and then no
    # writes: the window's bound used to trail the newest row by the overlap forever,
    # so every list read the burst's last seconds again until the next write.
    sessions = _questdb(questdb_store)
    index = sessions.heartbeat_sessions

    async def start() -> str:
        # stamped now (make_session's default created_at is the test's start)
        return (await _start(questdb_store, make_session(created_at=utcnow()))).id

    lists: list[tuple[int, list[str]]] = []  # (rows the list's window read, ids listed)

    async def listed() -> None:
        page = await questdb_store.sessions.list_sessions(RUNNING)
        lists.append((index.window_rows, [s.id for s in page.sessions]))

    async def scenario() -> tuple[str, str]:
        live = await start()
        await sessions.append_history(
            [make_session() for _ in range(40)],
            to_status=SessionStatus.FAILED,
            reason=Reason.OWNER_LOST,
            actor="t",
        )
        await listed()  # the index's first read: the whole log (no window read yet)
        await listed()  # within the overlap: the window holds the burst
        index.clock = lambda: utcnow() + 2 * index.overlap  # the documented testing hook
        for _ in range(3):  # quiet for the overlap: the bound moves up to the newest row
            await listed()
        late = await start()
        await listed()
        return live, late

    live, late = run(scenario())
    assert [ids for _, ids in lists] == [[live]] * 5 + [[late, live]]
    # the burst's 40 and the running session until the bound has moved past them, then
    # nothing, then the new session alone (its newest row)
    assert [rows for rows, _ in lists][1:] == [41, 41, 41, 0, 1]
    assert index.full_reads == 1


def test_lists_that_arrive_during_a_read_share_the_next_one_and_see_every_start(
    questdb_store: RetryingStore, run: Run[Any], make_session: Callable[..., Session]
) -> None:
    sessions = _questdb(questdb_store)
    index = sessions.heartbeat_sessions

    async def listed() -> list[str]:
        page = await questdb_store.sessions.list_sessions(RUNNING)
        return [s.id for s in page.sessions]

    async def scenario() -> tuple[str, str, list[list[str]], list[list[str]], int]:
        first = (await _start(questdb_store, make_session(created_at=utcnow()))).id
        await listed()  # the index's first read, a full one
        reads = index.full_reads + index.window_reads
        # eight lists at once: the first reads, the seven queued behind it share the next
        together = await asyncio.gather(*(listed() for _ in range(8)))
        # a start acknowledged before a list arrives is in that list, shared read or not
        later = (await _start(questdb_store, make_session(created_at=utcnow()))).id
        after = await asyncio.gather(*(listed() for _ in range(8)))
        return first, later, together, after, index.full_reads + index.window_reads - reads

    first, later, together, after, reads = run(scenario())
    assert together == [[first]] * 8
    assert after == [[later, first]] * 8
    assert reads == 4  # two reads for each eight lists
    assert index.shared_reads == 12
