"""Conformance: ``SessionStore.scan_leases``, the reconciler's one read per pass, on
every backend.

It finds what ``find_expired`` finds, and the earliest effective lease expiry of the
other non-terminal sessions — the time the reconciler wakes at, so that it starts a
pass just after an orphan's lease lapses (docs/resilience.md, "The bound")."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from ticktape.domain import Session, SessionStatus, Stats
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
    assert _ids(scan.expired) == {covered.id} and scan.next_expiry is None
