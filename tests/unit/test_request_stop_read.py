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


async def _stop_on(session_id: str, *, current: bool) -> tuple[Session, Session, list[str]]:
    """A running session stopped (as a shutdown does) on the caller's read of it: the
    current one (``current``) or a stale one, as it was created. Returns the stop's
    result, the session as it ran, and the reads the stop made of the store."""
    store = MemoryStore()
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
    reads = _counting_reads(store)
    stopped = await request_stop(
        store,
        session_id,
        actor="t",
        reason=Reason.SERVER_SHUTDOWN,
        read=running if current else created,
    )
    assert stopped.status is SessionStatus.STOPPING
    assert stopped.reason == Reason.SERVER_SHUTDOWN
    return stopped, running, reads


def test_a_current_read_is_the_stops_only_read(run: Run) -> None:
    _stopped, _running, reads = run(_stop_on("s-current", current=True))
    assert reads == []


def test_a_stale_read_loses_its_compare_and_set_and_the_stop_reads_again(run: Run) -> None:
    stopped, running, reads = run(_stop_on("s-stale", current=False))
    assert stopped.version == running.version + 1  # made on the fresh read
    assert reads == ["s-stale"]
