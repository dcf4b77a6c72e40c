"""Conformance: ``SessionStore.scan_leases``, the reconciler's one read per pass, on
every backend.

It finds what ``find_expired`` finds, and the earliest effective lease expiry of the
other non-terminal sessions — the time the reconciler wakes at, so that it starts a
pass just after an orphan's lease lapses (docs/resilience.md, "The bound")."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import pytest

from ticktape.domain import Session, SessionStatus, Stats, utcnow
from ticktape.errors import LeaseLost
from ticktape.store import Store

from .test_resume_contract import EXPIRED, NOW, OLD, _owned

Run = Callable[[Coroutine[Any, Any, Any]], Any]
MakeSession = Callable[..., Session]

SOON = NOW + timedelta(seconds=3)
LATER = NOW + timedelta(seconds=30)


def _ids(sessions: list[Session]) -> set[str]:
    return {s.id for s in sessions}


def test_an_empty_store_has_nothing_expired_and_no_next_expiry(store: Store, run: Run) -> None:
    scan = run(store.sessions.scan_leases(NOW))
    assert scan.expired == [] and scan.next_expiry is None


def test_the_scan_finds_what_find_expired_finds_and_the_earliest_live_lease(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    stray = _owned(store, run, make_session, SessionStatus.PENDING, lease=EXPIRED)  # unlisted
    covered = _owned(store, run, make_session, lease=EXPIRED)  # listed: the instance lease
    own = _owned(store, run, make_session, lease=SOON)  # unlisted: its own lease
    assert own.id not in _ids(run(store.sessions.find_expired(NOW)))
    ended = _owned(store, run, make_session, SessionStatus.STOPPED, lease=None)
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress={covered.id: Stats()}))
    scan = run(store.sessions.scan_leases(NOW))
    assert _ids(scan.expired) == _ids(run(store.sessions.find_expired(NOW))) == {stray.id}
    assert ended.id not in _ids(scan.expired)
    assert scan.expired[0] == run(store.sessions.get_session(stray.id))  # the full session
    assert scan.next_expiry == SOON  # before the instance lease that covers `covered`


def test_the_next_expiry_is_an_instance_lease_that_covers_a_session(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    covered = _owned(store, run, make_session, lease=EXPIRED)
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress={covered.id: Stats()}))
    scan = run(store.sessions.scan_leases(NOW))
    assert scan.expired == [] and scan.next_expiry == LATER
    # the instance stops listing it: it falls back to its own lease, expired already
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress={}))
    scan = run(store.sessions.scan_leases(NOW))
    assert _ids(scan.expired) == {covered.id}
    # nothing live is left: no next expiry, or one no later than what was known (a
    # backend may answer a lower bound: SQLite counts the owner's instance lease)
    assert scan.next_expiry is None or scan.next_expiry <= LATER


def test_a_note_with_an_owner_goes_in_only_while_that_owner_holds_the_session(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    """``add_event(owner=...)``: a runner that lost its lease never adds a note after
    the session was reaped or claimed (the terminal event stays the last)."""
    session = _owned(store, run, make_session, lease=LATER)
    note = run(store.sessions.add_event(session.id, actor=OLD, reason="lease_lost", owner=OLD))
    assert note.reason == "lease_lost"
    with pytest.raises(LeaseLost):  # someone else's
        run(store.sessions.add_event(session.id, actor="x", reason="lease_lost", owner="x/1"))
    ended = run(
        store.sessions.transition(
            session.id,
            expected_version=session.version,
            to_status=SessionStatus.FAILED,
            actor="reaper",
            reason="owner_lost",
            stats=Stats(),
            lease_expires_at=None,
        )
    )
    with pytest.raises(LeaseLost):  # terminal
        run(store.sessions.add_event(session.id, actor=OLD, reason="zombie_stopped", owner=OLD))
    events = run(store.sessions.list_events(session.id))
    assert events[-1].to_status is SessionStatus.FAILED and events[-1].reason == "owner_lost"
    assert ended.status is SessionStatus.FAILED
    # without an owner a note is still added after the end (store_retried, for one)
    run(store.sessions.add_event(session.id, actor="store", reason="store_retried"))
    assert run(store.sessions.list_events(session.id))[-1].reason == "store_retried"


def test_a_session_seen_live_is_found_once_its_owner_stops_covering_it_after_later_rows(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    """A scan may read only what changed since the previous one (QuestDB does): a
    session whose rows are all older than that must still be checked on every pass."""
    covered = _owned(store, run, make_session, lease=EXPIRED)
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress={covered.id: Stats()}))
    assert run(store.sessions.scan_leases(NOW)).expired == []
    for _ in range(3):  # later rows: other sessions start and end
        _owned(store, run, make_session, SessionStatus.STOPPED, lease=None)
        assert run(store.sessions.scan_leases(NOW)).expired == []
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress={}))
    assert _ids(run(store.sessions.scan_leases(NOW)).expired) == {covered.id}


def test_a_session_stamped_before_rows_an_earlier_scan_saw_is_found(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    """A row may land after a scan with a timestamp older than rows that scan read (a
    commit that lagged its timestamp, a writer's clock behind): the next scan finds it."""
    _owned(store, run, make_session, lease=LATER)  # its transition rows: stamped now
    assert run(store.sessions.scan_leases(NOW)).expired == []
    # created_at (its first row's timestamp) long before the rows the scan read
    stray = make_session(
        owner=OLD, lease_expires_at=EXPIRED, created_at=utcnow() - timedelta(days=30)
    )
    run(store.sessions.create_session(stray, actor="t"))
    assert _ids(run(store.sessions.scan_leases(NOW)).expired) == {stray.id}


def test_a_session_that_ended_since_the_last_scan_is_not_found(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _owned(store, run, make_session, lease=LATER)
    assert run(store.sessions.scan_leases(NOW)).expired == []
    run(
        store.sessions.transition(
            session.id,
            expected_version=session.version,
            to_status=SessionStatus.FAILED,
            actor="t",
            reason="error",
            stats=Stats(),
            lease_expires_at=None,
        )
    )
    assert run(store.sessions.scan_leases(NOW)).expired == []
    assert run(store.sessions.scan_leases(NOW)).next_expiry in (None, LATER)
