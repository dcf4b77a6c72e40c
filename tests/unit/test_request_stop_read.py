"""``request_stop(read=)``: a stop decided on the caller's own read of the session
(the shutdown's hand-over read) — no second read when it is current, a second round
on a fresh read when it is not."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from ticktape.domain import Reason, Session, SessionStatus, utcnow
from ticktape.store.memory import MemoryStore
from ticktape.store.transitions import request_stop
from ticktape.testing import draft_session

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def _counting_reads(store: MemoryStore) -> list[str]:
    reads: list[str] = []
    get = store.sessions.get_session

    async def counted(session_id: str) -> Session:
        reads.append(session_id)
        return await get(session_id)

    store.sessions.get_session = counted  # type: ignore[method-assign]
    return reads


async def _running(store: MemoryStore, session_id: str) -> tuple[Session, Session]:
    """The session as created (pending) and as it is now (running, a newer version)."""
    created = await store.sessions.create_session(
        draft_session(id=session_id, owner="o", lease_expires_at=utcnow() + timedelta(seconds=30)),
        actor="t",
    )
    running = await store.sessions.transition(
        session_id,
        expected_version=created.version,
        to_status=SessionStatus.RUNNING,
        actor="o",
        reason=Reason.STARTED,
        lease_expires_at=utcnow() + timedelta(seconds=30),
    )
    return created, running


def test_a_current_read_is_the_stops_only_read(run: Run) -> None:
    async def body() -> None:
        store = MemoryStore()
        _created, running = await _running(store, "s-current")
        reads = _counting_reads(store)
        stopped = await request_stop(
            store, "s-current", actor="t", reason=Reason.SERVER_SHUTDOWN, read=running
        )
        assert stopped.status is SessionStatus.STOPPING
        assert stopped.reason == Reason.SERVER_SHUTDOWN
        assert reads == []

    run(body())


def test_a_stale_read_loses_its_compare_and_set_and_the_stop_reads_again(run: Run) -> None:
    async def body() -> None:
        store = MemoryStore()
        created, running = await _running(store, "s-stale")
        reads = _counting_reads(store)
        stopped = await request_stop(
            store, "s-stale", actor="t", reason=Reason.SERVER_SHUTDOWN, read=created
        )
        assert stopped.status is SessionStatus.STOPPING
        assert stopped.version == running.version + 1  # made on the fresh read
        assert reads == ["s-stale"]

    run(body())
