"""Conformance: instance leases (``SessionStore.renew_instance``) on every backend.

An instance renews all its sessions with one write per heartbeat; each session's
effective lease is the later of its own and its owner's instance lease (None
releases it), and running sessions show the progress their owner published. The
heartbeat's cost is counted here: its store writes do not grow with the number of
sessions (a per-session renewal fails ``test_a_heartbeat_costs_one_store_write``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, cast

import pytest

from ticktape.config import Settings
from ticktape.domain import Session, SessionStatus, Stats, utcnow
from ticktape.errors import TransitionRace
from ticktape.metrics import Metrics
from ticktape.runtime.handle import RunHandle
from ticktape.runtime.leases import LeaseKeeper
from ticktape.store import Store
from ticktape.store.base import SessionQuery
from ticktape.ticks import TickCounts

from .test_resume_contract import EXPIRED, NEW, NEW_LEASE, NOW, OLD, _claim, _owned

Run = Callable[[Coroutine[Any, Any, Any]], Any]
MakeSession = Callable[..., Session]

LATER = NOW + timedelta(seconds=30)


def _runs(session: Session) -> dict[str, Stats]:
    """The progress a heartbeat of an instance running ``session`` publishes."""
    return {session.id: session.stats}


def _reap(store: Store, run: Run, session: Session) -> Session:
    reaped: Session = run(
        store.sessions.transition(
            session.id,
            expected_version=session.version,
            to_status=SessionStatus.FAILED,
            actor=NEW,
            reason="owner_lost",
            stats=Stats(),
            lease_expires_at=None,
            lease_expired_before=NOW,
        )
    )
    return reaped


def test_the_instance_lease_covers_a_session_whose_own_lease_expired(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _owned(store, run, make_session, lease=EXPIRED)
    assert session.id in [s.id for s in run(store.sessions.find_expired(NOW))]
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress=_runs(session)))
    shown = run(store.sessions.get_session(session.id))
    assert shown.lease_expires_at == LATER
    assert shown.version == session.version  # a heartbeat is no transition
    assert session.id not in [s.id for s in run(store.sessions.find_expired(NOW))]
    with pytest.raises(TransitionRace):
        _reap(store, run, shown)
    with pytest.raises(TransitionRace):
        _claim(store, run, shown)
    assert run(store.sessions.get_session(session.id)).status is SessionStatus.RUNNING


def test_an_expired_instance_lease_lets_the_session_be_reaped(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _owned(store, run, make_session, lease=EXPIRED)
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress=_runs(session)))
    # replaced, even by an earlier one
    run(store.sessions.renew_instance(OLD, lease_expires_at=EXPIRED, progress=_runs(session)))
    shown = run(store.sessions.get_session(session.id))
    assert shown.lease_expires_at == EXPIRED
    assert session.id in [s.id for s in run(store.sessions.find_expired(NOW))]
    assert _reap(store, run, shown).status is SessionStatus.FAILED


def test_a_session_own_later_lease_outlives_an_expired_instance_lease(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _owned(store, run, make_session, lease=LATER)
    run(store.sessions.renew_instance(OLD, lease_expires_at=EXPIRED, progress=_runs(session)))
    assert run(store.sessions.get_session(session.id)).lease_expires_at == LATER
    assert session.id not in [s.id for s in run(store.sessions.find_expired(NOW))]


def test_a_session_its_owner_does_not_list_is_left_to_its_own_lease(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    """An instance covers what it runs: a session it owns but never launched (its
    create's answer was lost) is reaped when its own lease expires."""
    stray = _owned(store, run, make_session, SessionStatus.PENDING, lease=EXPIRED)
    live = _owned(store, run, make_session, lease=EXPIRED)
    owned = run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress=_runs(live)))
    assert {s.id for s in owned} == {stray.id, live.id}
    assert run(store.sessions.get_session(stray.id)).lease_expires_at == EXPIRED
    assert run(store.sessions.get_session(live.id)).lease_expires_at == LATER
    assert [s.id for s in run(store.sessions.find_expired(NOW))] == [stray.id]
    assert _reap(store, run, stray).status is SessionStatus.FAILED


def test_another_owner_instance_lease_covers_nothing_of_this_one(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _owned(store, run, make_session, lease=EXPIRED)
    run(store.sessions.renew_instance(NEW, lease_expires_at=LATER, progress=_runs(session)))
    assert run(store.sessions.get_session(session.id)).lease_expires_at == EXPIRED
    assert session.id in [s.id for s in run(store.sessions.find_expired(NOW))]


def test_a_released_session_is_expired_whatever_its_owner_instance_lease(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _owned(store, run, make_session, lease=LATER)
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress=_runs(session)))
    released = run(
        store.sessions.renew_lease(
            session.id, owner=OLD, lease_expires_at=None, stats=Stats(trades=3)
        )
    )
    assert released.lease_expires_at is None and released.stats == Stats(trades=3)
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress={session.id: Stats(9)}))
    shown = run(store.sessions.get_session(session.id))
    assert shown.lease_expires_at is None and shown.stats == Stats(trades=3)
    assert session.id in [s.id for s in run(store.sessions.find_expired(NOW))]
    claimed = _claim(store, run, shown)
    assert claimed.owner == NEW and claimed.lease_expires_at == NEW_LEASE
    # the old owner's instance no longer lists it: its runner must stop
    owned = run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress={}))
    assert session.id not in [s.id for s in owned]


def test_renew_instance_returns_exactly_the_non_terminal_sessions_of_that_owner(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    running = _owned(store, run, make_session, SessionStatus.RUNNING, lease=LATER)
    stopping = _owned(store, run, make_session, SessionStatus.STOPPING, lease=LATER)
    pending = _owned(store, run, make_session, SessionStatus.PENDING, lease=LATER)
    _owned(store, run, make_session, SessionStatus.STOPPED, lease=LATER)
    run(
        store.sessions.create_session(
            make_session(owner=OLD + "x", lease_expires_at=LATER), actor="t"
        )
    )  # an owner whose token merely starts with OLD's
    owned = run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress={}))
    by_id = {s.id: s for s in owned}
    assert set(by_id) == {running.id, stopping.id, pending.id}
    assert by_id[stopping.id].status is SessionStatus.STOPPING
    assert by_id[running.id] == run(store.sessions.get_session(running.id))


def test_published_progress_shows_while_running_and_stored_stats_once_terminal(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _owned(store, run, make_session, lease=LATER, stats=Stats(trades=1))
    other = _owned(store, run, make_session, lease=LATER)
    progress = {session.id: Stats(trades=40, orderbook=5, errors=1)}
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress=progress))
    events_before = run(store.sessions.list_events(session.id))
    shown = run(store.sessions.get_session(session.id))
    assert shown.stats == Stats(trades=40, orderbook=5, errors=1)
    assert run(store.sessions.get_session(other.id)).stats == Stats()  # none published
    listed = run(store.sessions.find_owned(OLD))
    assert {s.id: s.stats for s in listed}[session.id] == shown.stats
    running = SessionQuery(statuses=frozenset({SessionStatus.RUNNING}))
    page = {s.id: s for s in run(store.sessions.list_sessions(running)).sessions}
    assert (page[session.id], page[other.id].stats) == (shown, Stats())
    assert run(store.sessions.list_events(session.id)) == events_before  # not history
    # the next heartbeat replaces the whole map
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress={}))
    assert run(store.sessions.get_session(session.id)).stats == Stats(trades=1)
    run(store.sessions.renew_instance(OLD, lease_expires_at=LATER, progress=progress))
    ended = run(
        store.sessions.transition(
            shown.id,
            expected_version=shown.version,
            to_status=SessionStatus.COMPLETED,
            actor=OLD,
            reason="duration_reached",
            stats=Stats(trades=41, orderbook=5),
            lease_expires_at=None,
        )
    )
    assert ended.stats == Stats(trades=41, orderbook=5)
    assert run(store.sessions.get_session(session.id)).stats == Stats(trades=41, orderbook=5)


# --------------------------------------------------------------------------- cost


WRITES = frozenset(
    {
        "create_session",
        "transition",
        "claim",
        "renew_lease",
        "renew_instance",
        "add_event",
        "mark_deleted",
        "write",
    }
)


class _Counted:
    """A view of one half of a store (sessions or ticks) that counts its write calls."""

    def __init__(self, inner: Any, counts: dict[str, int]) -> None:
        self._inner = inner
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in WRITES:
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self._counts[name] = self._counts.get(name, 0) + 1
            return await attr(*args, **kwargs)

        return counted


class _CountingStore:
    def __init__(self, inner: Store) -> None:
        self.counts: dict[str, int] = {}
        self.sessions = _Counted(inner.sessions, self.counts)
        self.ticks = _Counted(inner.ticks, self.counts)


@pytest.mark.parametrize("sessions", [1, 40])
def test_a_heartbeat_costs_one_store_write_whatever_the_number_of_sessions(
    store: Store, run: Run, make_session: MakeSession, sessions: int
) -> None:
    owner = "cost:1/abc"
    settings = Settings(heartbeat_interval_s=2.0, lease_s=10.0)

    async def body() -> tuple[dict[str, int], list[Session], list[RunHandle]]:
        counting = _CountingStore(store)
        keeper = LeaseKeeper(cast(Store, counting), settings, Metrics(), owner)
        handles = []
        for _ in range(sessions):
            created = await store.sessions.create_session(
                make_session(owner=owner, lease_expires_at=utcnow() + timedelta(seconds=1)),
                actor=owner,
            )
            await store.sessions.transition(
                created.id,
                expected_version=created.version,
                to_status=SessionStatus.RUNNING,
                actor=owner,
                reason="started",
            )
            handle = RunHandle(created.id, written=TickCounts(trades=7))
            keeper.track(handle)
            handles.append(handle)
        before = utcnow()
        await keeper.heartbeat()
        renewed = [await store.sessions.get_session(h.session_id) for h in handles]
        for handle in handles:
            keeper.untrack(handle.session_id)
        assert all(
            s.lease_expires_at is not None
            and s.lease_expires_at >= before + timedelta(seconds=settings.lease_s)
            for s in renewed
        )
        return counting.counts, renewed, handles

    counts, renewed, handles = run(body())
    assert counts == {"renew_instance": 1}, counts
    assert all(s.stats == Stats(trades=7) for s in renewed)
    assert not any(h.lost.is_set() or h.stop.is_set() for h in handles)
