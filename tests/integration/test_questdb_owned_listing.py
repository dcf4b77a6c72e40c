"""QuestDB: a session ``find_owned`` lists, passed as a transition's ``read``, is that
transition's first compare-and-set's base (a shutdown lists its sessions, then requests
their stops): those transitions read no session again, and a session changed after the
listing still loses its compare-and-set and is decided on a fresh read. The store keeps
nothing of a listing: a transition not given the read reads the session itself."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Run
from ticktape.domain import Reason, Session, SessionStatus, utcnow
from ticktape.errors import TransitionRace
from ticktape.store.questdb import QuestDBStore
from ticktape.testing import draft_session

pytestmark = pytest.mark.questdb
SESSIONS = 12


async def _running(store: QuestDBStore, owner: str, until: datetime) -> Session:
    """A session created running, owned by ``owner`` with its lease until ``until``."""
    return await store.sessions.create_session(
        draft_session(owner=owner, lease_expires_at=until), actor="t", start_lease_until=until
    )


def test_stops_after_a_listing_read_only_the_sessions_changed_since(
    qdb_url: str, run: Run[Any]
) -> None:
    store = QuestDBStore(qdb_url)

    async def scenario() -> None:
        await store.open()
        try:
            until = utcnow() + timedelta(seconds=60)
            mine = [await _running(store, "me/1", until) for _ in range(SESSIONS)]
            await _running(store, "you/1", until)
            listed = {s.id: s for s in await store.sessions.find_owned("me/1")}
            assert set(listed) == {s.id for s in mine}
            # changed after the listing: a note (a new row, the same version), and a
            # claim back by the same owner (a new version, the same status)
            noted, claimed = mine[0].id, mine[1].id
            await store.sessions.add_event(noted, actor="t", reason="noted meanwhile")
            current = await store.sessions.get_session(claimed)
            await store.sessions.claim(
                claimed,
                expected_version=current.version,
                owner="me/1",
                lease_expires_at=until,
                actor="t",
                reason="claimed meanwhile",
            )
            reads: list[list[str]] = []
            store.sessions.on_read_many = reads.append  # the documented testing hook
            results = await asyncio.gather(
                *(
                    store.sessions.transition(
                        sid,
                        expected_version=s.version,
                        to_status=SessionStatus.STOPPING,
                        actor="me/1",
                        reason=Reason.SERVER_SHUTDOWN,
                        read=s,
                    )
                    for sid, s in listed.items()
                ),
                return_exceptions=True,
            )
            store.sessions.on_read_many = None
            by_id = dict(zip(listed, results, strict=True))
            # the claim moved the version: that stop is refused, to be decided again
            assert isinstance(by_id.pop(claimed), TransitionRace)
            for sid, stopped in by_id.items():
                assert not isinstance(stopped, BaseException), (sid, stopped)
                assert stopped.status is SessionStatus.STOPPING
                assert stopped.version == listed[sid].version + 1
            # the listed rows were the reads; the two changed sessions' appends lost on
            # them and only those two were read again
            assert sorted({sid for batch in reads for sid in batch}) == sorted([noted, claimed])
            events = await store.sessions.list_events(noted)
            assert [e.reason for e in events[-2:]] == ["noted meanwhile", Reason.SERVER_SHUTDOWN]
            assert (await store.sessions.get_session(claimed)).status is SessionStatus.RUNNING
        finally:
            await store.close()

    run(scenario())


def test_a_listing_leaves_nothing_behind_for_a_transition_not_given_it(
    qdb_url: str, run: Run[Any]
) -> None:
    store = QuestDBStore(qdb_url)

    async def scenario() -> None:
        await store.open()
        try:
            until = utcnow() + timedelta(seconds=60)
            created = await _running(store, "me/1", until)
            [listed] = await store.sessions.find_owned("me/1")
            assert listed == created and listed.stored_row is not None
            reads: list[list[str]] = []
            store.sessions.on_read_many = reads.append  # the documented testing hook
            stopping = await store.sessions.transition(
                created.id,
                expected_version=listed.version,
                to_status=SessionStatus.STOPPING,
                actor="me/1",
                reason=Reason.SERVER_SHUTDOWN,
            )
            store.sessions.on_read_many = None
            assert stopping.status is SessionStatus.STOPPING
            # the compare-and-set's base was read from the store, not from the listing
            assert reads == [[created.id]], reads
            # a read at an older version is not used: the store reads and refuses
            reads.clear()
            store.sessions.on_read_many = reads.append
            with pytest.raises(TransitionRace):
                await store.sessions.transition(
                    created.id,
                    expected_version=listed.version,
                    to_status=SessionStatus.FAILED,
                    actor="me/1",
                    reason=Reason.SERVER_SHUTDOWN,
                    read=listed,
                )
            store.sessions.on_read_many = None
            assert reads == [[created.id]], reads
        finally:
            await store.close()

    run(scenario())
