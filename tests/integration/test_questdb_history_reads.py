"""QuestDB: the reads a heartbeat and a keyed create make do not grow with the history.

``renew_instance`` lists the instance's sessions from the session log's recent rows
(``_scan.ActiveSessions``, on the heartbeat's own connection) instead of ``LATEST ON``
over the whole log, and an idempotency key is found through ``tt_session_keys``
instead of a scan of the log. Both must still see every change: these tests check
what each one answers after the changes that could hide from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.conftest import Run
from ticktape.domain import ACTIVE_STATUSES, SessionStatus, Stats, utcnow
from ticktape.store import RetryingStore, open_store
from ticktape.store.base import SessionQuery
from ticktape.store.questdb import QuestDBAddress, QuestDBSessionStore

pytestmark = pytest.mark.questdb

LATER = timedelta(seconds=60)


@pytest.fixture
def qdb(qdb_url: str, run: Run[Any]) -> Iterator[RetryingStore]:
    store = open_store(qdb_url)
    run(store.open())
    yield store
    run(store.close())


def _inner(store: RetryingStore) -> QuestDBSessionStore:
    sessions = store.inner.sessions
    assert isinstance(sessions, QuestDBSessionStore)
    return sessions


def _sql(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    address = QuestDBAddress.from_url(url)
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        cur = conn.execute(sql.replace("tt_", address.prefix), params)
        return cur.fetchall() if cur.description else []


def test_heartbeats_read_the_recent_rows_and_see_every_change_of_their_sessions(
    qdb: RetryingStore, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    now = utcnow()
    sessions = _inner(qdb)
    # the window's bound follows the newest row at once: every heartbeat after the first
    # reads only the rows written since the previous one (the documented testing hook)
    sessions.heartbeat_sessions.overlap = timedelta(0)
    kept, claimed, ended = (
        make_session(owner="a/1", lease_expires_at=now + LATER, created_at=utcnow())
        for _ in range(3)
    )
    # stamped an hour before every row the heartbeats read: a commit that lagged its ts
    late = make_session(
        owner="a/1", lease_expires_at=now + LATER, created_at=now - timedelta(hours=1)
    )

    async def owned() -> set[str]:
        listed = await qdb.sessions.renew_instance("a/1", lease_expires_at=now + LATER, progress={})
        return {s.id for s in listed}

    async def scenario() -> list[set[str]]:
        seen = []
        for s in (kept, claimed, ended):
            await qdb.sessions.create_session(s, actor="t")
        seen.append(await owned())  # the first heartbeat reads the whole log
        seen.append(await owned())  # nothing changed: a window read
        await qdb.sessions.claim(
            claimed.id,
            expected_version=claimed.version,
            owner="b/1",
            lease_expires_at=now + LATER,
            actor="b/1",
            reason="claimed",
        )
        await qdb.sessions.transition(
            ended.id,
            expected_version=ended.version,
            to_status=SessionStatus.FAILED,
            actor="t",
            reason="error",
        )
        seen.append(await owned())
        await qdb.sessions.create_session(late, actor="t")
        seen.append(await owned())
        return seen

    seen = run(scenario())
    assert seen == [
        {kept.id, claimed.id, ended.id},
        {kept.id, claimed.id, ended.id},
        {kept.id},
        {kept.id, late.id},
    ]
    # the late row changed the count below the window's bound: the whole log read again
    assert sessions.heartbeat_sessions.full_reads == 2
    assert sessions.heartbeat_sessions.window_reads == 2


def test_a_heartbeat_shows_the_current_row_of_a_session_that_changed(
    qdb: RetryingStore, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    now = utcnow()
    session = make_session(owner="a/1", lease_expires_at=now + LATER)

    async def scenario() -> tuple[Any, Any]:
        await qdb.sessions.create_session(session, actor="t")
        await qdb.sessions.renew_instance(
            "a/1", lease_expires_at=now + LATER, progress={session.id: Stats()}
        )
        await qdb.sessions.transition(
            session.id,
            expected_version=session.version,
            to_status=SessionStatus.STOPPING,
            actor="t",
            reason="stop_requested",
        )
        listed = await qdb.sessions.renew_instance(
            "a/1", lease_expires_at=now + LATER, progress={session.id: Stats(trades=4)}
        )
        return listed, await qdb.sessions.get_session(session.id)

    listed, current = run(scenario())
    assert listed == [current]
    assert current.status is SessionStatus.STOPPING and current.stats == Stats(trades=4)


def test_keys_stored_before_the_keys_table_existed_are_found_after_reopening(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    async def first_life() -> Any:
        store = open_store(qdb_url)
        await store.open()
        try:
            return await store.sessions.create_session(
                make_session(idempotency_key="old-key"), actor="t"
            )
        finally:
            await store.close()

    first = run(first_life())
    # a store written before tt_session_keys existed: the key is only in the log
    _sql(qdb_url, "DROP TABLE tt_session_keys")

    async def second_life() -> Any:
        store = open_store(qdb_url)
        await store.open()  # builds tt_session_keys from the log
        try:
            return await store.sessions.create_session(
                make_session(idempotency_key="old-key"), actor="t"
            )
        finally:
            await store.close()

    assert run(second_life()) == first
    assert _sql(qdb_url, "SELECT idempotency_key, id FROM tt_session_keys") == [
        ("old-key", first.id)
    ]
    assert not [
        r for r in _sql(qdb_url, "SELECT table_name FROM tables()") if "_fill_" in str(r[0])
    ]


def test_a_key_row_whose_session_was_never_committed_is_ignored(
    qdb_url: str, qdb: RetryingStore, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    # what a group commit leaves when its keys were committed and then its COMMIT failed
    _sql(
        qdb_url,
        "INSERT INTO tt_session_keys VALUES (%s, %s, %s, %s)",
        ("orphan-key", "never-committed", utcnow(), utcnow()),
    )
    draft = make_session(idempotency_key="orphan-key")
    created = run(qdb.sessions.create_session(draft, actor="t"))
    assert created.id == draft.id
    again = run(qdb.sessions.create_session(make_session(idempotency_key="orphan-key"), actor="t"))
    assert again == created


def test_the_count_of_active_sessions_follows_every_change_between_counts(
    qdb: RetryingStore, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    now = utcnow()
    sessions = _inner(qdb)
    sessions.active_sessions.overlap = timedelta(0)  # every later count reads a window
    active = SessionQuery(statuses=ACTIVE_STATUSES, include_deleted=True)
    a, b = (make_session(created_at=utcnow()) for _ in range(2))
    late = make_session(created_at=now - timedelta(hours=1))  # a commit that lagged its ts

    async def scenario() -> list[int]:
        counts = [await qdb.sessions.count_sessions(active)]
        for s in (a, b):
            await qdb.sessions.create_session(s, actor="t")
        counts.append(await qdb.sessions.count_sessions(active))
        await qdb.sessions.transition(
            a.id,
            expected_version=a.version,
            to_status=SessionStatus.FAILED,
            actor="t",
            reason="error",
        )
        counts.append(await qdb.sessions.count_sessions(active))
        await qdb.sessions.create_session(late, actor="t")
        counts.append(await qdb.sessions.count_sessions(active))
        return counts

    assert run(scenario()) == [0, 2, 1, 2]
    assert sessions.active_sessions.window_reads >= 2
