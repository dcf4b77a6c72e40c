"""``SessionStore.create_session(start_lease_until=...)``: a create that its owner starts at
once writes its ``pending`` → ``running`` transition in the same atomic write, on every
backend."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ticktape.domain import Reason, Session, SessionStatus, is_valid_history
from ticktape.errors import SessionConflict
from ticktape.store import Store

Run = Callable[[Coroutine[Any, Any, Any]], Any]
MakeSession = Callable[..., Session]
P, R, SG, SD = (
    SessionStatus.PENDING,
    SessionStatus.RUNNING,
    SessionStatus.STOPPING,
    SessionStatus.STOPPED,
)
OWNER = "owner-1/abc"
LEASE = datetime(2030, 1, 1, tzinfo=UTC)


def _owned(make_session: MakeSession, **overrides: Any) -> Session:
    now = datetime.now(UTC)
    return make_session(
        owner=OWNER, lease_expires_at=now + timedelta(seconds=10), created_at=now, **overrides
    )


def _create_started(store: Store, run: Run, session: Session) -> Session:
    created: Session = run(
        store.sessions.create_session(session, actor=OWNER, start_lease_until=LEASE)
    )
    return created


def test_a_started_create_returns_the_running_session_and_get_returns_it(
    store: Store, other_handle: Store, run: Run, make_session: MakeSession
) -> None:
    draft = _owned(make_session)
    started = _create_started(store, run, draft)
    assert (started.id, started.status, started.version) == (draft.id, R, 2)
    assert (started.owner, started.lease_expires_at, started.reason) == (
        OWNER,
        LEASE,
        Reason.STARTED,
    )
    assert started.started_at is not None and started.started_at >= draft.created_at
    assert started.ended_at is None and started.created_at == draft.created_at
    for handle in (store, other_handle):  # durable and visible to every reader at once
        seen = run(handle.sessions.get_session(draft.id))
        assert (seen.status, seen.version, seen.owner, seen.started_at) == (
            R,
            2,
            OWNER,
            started.started_at,
        )


def test_a_started_create_records_both_events_in_order(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create_started(store, run, _owned(make_session))
    created, begun = run(store.sessions.list_events(session.id))
    assert (created.seq, created.from_status, created.to_status, created.reason) == (
        1,
        None,
        P,
        "created",
    )
    assert (begun.seq, begun.from_status, begun.to_status, begun.reason, begun.actor) == (
        2,
        P,
        R,
        Reason.STARTED,
        OWNER,
    )
    assert begun.at >= created.at
    assert is_valid_history([created.to_status, begun.to_status])


def test_a_started_session_moves_on_like_one_started_by_a_transition(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create_started(store, run, _owned(make_session))
    for status in (SG, SD):
        session = run(
            store.sessions.transition(
                session.id,
                expected_version=session.version,
                to_status=status,
                actor=OWNER,
                reason=f"to_{status.value}",
            )
        )
    assert (session.status, session.version) == (SD, 4)
    events = run(store.sessions.list_events(session.id))
    assert [e.to_status for e in events] == [P, R, SG, SD]


def test_a_started_create_with_a_used_key_returns_that_session_and_writes_nothing(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    first: Session = run(
        store.sessions.create_session(
            _owned(make_session, idempotency_key="k-start"), actor="creator"
        )
    )
    again = _create_started(store, run, _owned(make_session, idempotency_key="k-start"))
    assert again == first and again.status is P and again.version == 1
    assert len(run(store.sessions.list_events(first.id))) == 1


def test_a_started_create_with_an_existing_id_conflicts_and_writes_nothing(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    first = _create_started(store, run, _owned(make_session))
    with pytest.raises(SessionConflict):
        _create_started(store, run, _owned(make_session, id=first.id))
    assert run(store.sessions.get_session(first.id)).version == 2
    assert len(run(store.sessions.list_events(first.id))) == 2
