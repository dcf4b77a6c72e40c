"""The parts of the store contract that resume on owner loss relies on, on every backend.

``SessionStore.claim`` (take over a session whose owner is gone), releasing a lease
with ``renew_lease`` (hand-over on shutdown) and ``TickStore.position`` (where a
resumed recording continues). Clause by clause, as in ``ticktape.store.base``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ticktape.domain import TERMINAL_STATUSES, Session, SessionStatus, Stats
from ticktape.errors import InvalidTransition, LeaseLost, SessionNotFound, TransitionRace
from ticktape.store import Store
from ticktape.store.base import TickPosition
from ticktape.ticks import BookBatch, TickBatch, TradeBatch

from .test_tick_store import BASE_US, books, trades

Run = Callable[[Coroutine[Any, Any, Any]], Any]
MakeSession = Callable[..., Session]

NOW = datetime(2030, 6, 1, tzinfo=UTC)
EXPIRED = NOW - timedelta(seconds=5)
NEW_LEASE = NOW + timedelta(seconds=10)
OLD, NEW = "host-a:1/aaaa", "host-b:2/bbbb"
PATH_TO = {
    SessionStatus.PENDING: [],
    SessionStatus.RUNNING: [SessionStatus.RUNNING],
    SessionStatus.STOPPING: [SessionStatus.RUNNING, SessionStatus.STOPPING],
    SessionStatus.STOPPED: [SessionStatus.RUNNING, SessionStatus.STOPPING, SessionStatus.STOPPED],
    SessionStatus.COMPLETED: [SessionStatus.RUNNING, SessionStatus.COMPLETED],
    SessionStatus.FAILED: [SessionStatus.RUNNING, SessionStatus.FAILED],
}


def _owned(
    store: Store,
    run: Run,
    make_session: MakeSession,
    status: SessionStatus = SessionStatus.RUNNING,
    *,
    lease: datetime | None = EXPIRED,
    stats: Stats | None = None,
    **overrides: Any,
) -> Session:
    """A session owned by OLD, driven to ``status``, with ``lease`` as its stored lease."""
    session: Session = run(
        store.sessions.create_session(
            make_session(owner=OLD, lease_expires_at=lease, **overrides), actor="t"
        )
    )
    path = PATH_TO[status]
    for i, target in enumerate(path):
        session = run(
            store.sessions.transition(
                session.id,
                expected_version=session.version,
                to_status=target,
                actor="t",
                reason=f"to_{target.value}",
                stats=stats if i == len(path) - 1 else None,
            )
        )
    return session


def _claim(store: Store, run: Run, session: Session, **kw: Any) -> Session:
    args: dict[str, Any] = {
        "expected_version": session.version,
        "owner": NEW,
        "lease_expires_at": NEW_LEASE,
        "actor": NEW,
        "reason": "owner_changed",
        "detail": f"from {OLD}",
        "lease_expired_before": NOW,
    }
    args.update(kw)
    claimed: Session = run(store.sessions.claim(session.id, **args))
    return claimed


def _snapshot(store: Store, run: Run, session_id: str) -> tuple[Session, list[Any]]:
    return (
        run(store.sessions.get_session(session_id)),
        run(store.sessions.list_events(session_id)),
    )


# --------------------------------------------------------------------------- claim


@pytest.mark.parametrize("status", [SessionStatus.RUNNING, SessionStatus.STOPPING])
def test_claim_replaces_owner_and_lease_and_keeps_everything_else(
    store: Store, run: Run, make_session: MakeSession, status: SessionStatus
) -> None:
    before = _owned(store, run, make_session, status, stats=Stats(trades=7, orderbook=2))
    claimed = _claim(store, run, before)
    assert claimed == before.evolve(
        owner=NEW, lease_expires_at=NEW_LEASE, version=before.version + 1
    )
    assert run(store.sessions.get_session(before.id)) == claimed


def test_claim_of_a_pending_session_keeps_it_pending(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    created = _owned(store, run, make_session, SessionStatus.PENDING, lease=None)
    claimed = _claim(store, run, created)  # no lease counts as expired
    assert (claimed.status, claimed.owner, claimed.version) == (SessionStatus.PENDING, NEW, 2)


def test_claim_records_an_event_at_the_current_status(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    before = _owned(store, run, make_session)
    _claim(store, run, before)
    events = run(store.sessions.list_events(before.id))
    last = events[-1]
    assert (last.seq, last.from_status, last.to_status) == (
        len(events),
        SessionStatus.RUNNING,
        SessionStatus.RUNNING,
    )
    assert (last.actor, last.reason, last.detail) == (NEW, "owner_changed", f"from {OLD}")


def test_claim_is_visible_to_another_handle_at_once(
    store: Store, other_handle: Store, run: Run, make_session: MakeSession
) -> None:
    other = other_handle
    claimed = _claim(store, run, _owned(store, run, make_session))
    assert run(other.sessions.get_session(claimed.id)) == claimed


def test_claim_of_a_session_without_a_lease_succeeds(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    before = _owned(store, run, make_session, lease=None)
    assert _claim(store, run, before).owner == NEW


@pytest.mark.parametrize("lease", [NOW, NOW + timedelta(seconds=1)], ids=["now", "later"])
def test_claim_of_a_live_lease_races_and_changes_nothing(
    store: Store, run: Run, make_session: MakeSession, lease: datetime
) -> None:
    before = _owned(store, run, make_session, lease=lease)
    snapshot = _snapshot(store, run, before.id)
    with pytest.raises(TransitionRace):
        _claim(store, run, before)
    assert _snapshot(store, run, before.id) == snapshot


def test_claim_without_a_lease_condition_takes_a_live_lease(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    before = _owned(store, run, make_session, lease=NOW + timedelta(hours=1))
    assert _claim(store, run, before, lease_expired_before=None).owner == NEW


def test_claim_with_a_stale_version_races_and_changes_nothing(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    before = _owned(store, run, make_session)
    snapshot = _snapshot(store, run, before.id)
    with pytest.raises(TransitionRace):
        _claim(store, run, before, expected_version=before.version - 1)
    assert _snapshot(store, run, before.id) == snapshot


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_claim_of_a_terminal_session_is_invalid_whatever_the_version(
    store: Store, run: Run, make_session: MakeSession, terminal: SessionStatus
) -> None:
    ended = _owned(store, run, make_session, terminal)
    snapshot = _snapshot(store, run, ended.id)
    for version in (ended.version, ended.version + 7):
        with pytest.raises(InvalidTransition):
            _claim(store, run, ended, expected_version=version)
    assert _snapshot(store, run, ended.id) == snapshot


def test_claim_of_an_unknown_id_raises_session_not_found(store: Store, run: Run) -> None:
    with pytest.raises(SessionNotFound):
        run(
            store.sessions.claim(
                "no-such-session",
                expected_version=1,
                owner=NEW,
                lease_expires_at=NEW_LEASE,
                actor=NEW,
                reason="owner_changed",
            )
        )


def test_concurrent_claims_exactly_one_wins(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    before = _owned(store, run, make_session)

    async def race() -> list[Any]:
        return await asyncio.gather(
            *(
                store.sessions.claim(
                    before.id,
                    expected_version=before.version,
                    owner=f"claimer-{i}",
                    lease_expires_at=NEW_LEASE,
                    actor=f"claimer-{i}",
                    reason="owner_changed",
                    lease_expired_before=NOW,
                )
                for i in range(12)
            ),
            return_exceptions=True,
        )

    results = run(race())
    won = [r for r in results if isinstance(r, Session)]
    lost = [r for r in results if not isinstance(r, Session)]
    assert len(won) == 1 and len(lost) == 11
    assert all(type(r) is TransitionRace for r in lost), lost  # the documented conflict only
    stored = run(store.sessions.get_session(before.id))
    assert (stored.owner, stored.version) == (won[0].owner, before.version + 1)
    assert len(run(store.sessions.list_events(before.id))) == len(PATH_TO[before.status]) + 2


def test_a_claim_and_a_transition_on_one_version_cannot_both_win(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    before = _owned(store, run, make_session)

    async def race() -> list[Any]:
        return await asyncio.gather(
            store.sessions.transition(
                before.id,
                expected_version=before.version,
                to_status=SessionStatus.FAILED,
                actor="reaper",
                reason="owner_lost",
                lease_expired_before=NOW,
            ),
            store.sessions.claim(
                before.id,
                expected_version=before.version,
                owner=NEW,
                lease_expires_at=NEW_LEASE,
                actor=NEW,
                reason="owner_changed",
                lease_expired_before=NOW,
            ),
            return_exceptions=True,
        )

    transitioned, claimed = run(race())
    # exactly one wins, and the loser raised the documented conflict, nothing else: a
    # claim of a session that went terminal is InvalidTransition (checked first), a
    # transition of one claimed meanwhile is TransitionRace (its version moved on)
    if isinstance(claimed, Session):
        assert type(transitioned) is TransitionRace, transitioned
    else:
        assert isinstance(transitioned, Session), transitioned
        assert type(claimed) is InvalidTransition, claimed


def test_after_a_claim_the_previous_owner_is_fenced_and_the_new_one_is_not(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    claimed = _claim(store, run, _owned(store, run, make_session))
    with pytest.raises(LeaseLost):
        run(store.sessions.renew_lease(claimed.id, owner=OLD, lease_expires_at=NEW_LEASE))
    with pytest.raises(LeaseLost):
        run(store.ticks.write([trades(claimed.id)], owner=OLD))
    run(store.sessions.renew_lease(claimed.id, owner=NEW, lease_expires_at=NEW_LEASE))
    written = run(store.ticks.write([trades(claimed.id)], owner=NEW))
    assert written.counts.trades == 50


def test_a_claim_by_the_owner_itself_opens_a_tenure_whose_rows_all_count(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    """An instance whose own lease ran out (a store outage outlived it) claims its session
    back to resume it: the claim seals the tenure it ends, and every row written after it
    counts, whatever its batch numbers. (QuestDB once kept the sealed tenure for a claim by
    the same owner, so the resumed runner's rows past the fence were never counted: the
    chaos run's ``count_mismatch`` after a QuestDB restart.)"""
    session = _owned(store, run, make_session)
    before = [replace(trades(session.id, n=50, first_id=1 + 50 * i), seq=i) for i in range(2)]
    run(store.ticks.write(before, owner=OLD))
    run(store.ticks.wait_visible(30))
    seal = run(store.ticks.seal(session.id))
    assert seal.counts.trades == 100
    claimed = _claim(store, run, session, owner=OLD, actor=OLD, seal=seal)
    assert claimed.owner == OLD
    after = [replace(trades(session.id, n=50, first_id=101 + 50 * i), seq=i) for i in range(4)]
    for batch in after:  # the resumed runner numbers its blocks afresh, past the fence too
        assert run(store.ticks.write([batch], owner=OLD)).counts.trades == 50
    run(store.ticks.wait_visible(30))
    assert run(store.ticks.count(session.id)).trades == 300


# --------------------------------------------------------------------------- release


def test_renew_lease_to_the_past_releases_the_session(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    live = _owned(store, run, make_session, lease=NOW + timedelta(hours=1))
    released = run(store.sessions.renew_lease(live.id, owner=OLD, lease_expires_at=EXPIRED))
    assert released.lease_expires_at == EXPIRED
    assert run(store.sessions.get_session(live.id)).lease_expires_at == EXPIRED
    assert live.id in [s.id for s in run(store.sessions.find_expired(NOW))]
    assert _claim(store, run, released).owner == NEW


# --------------------------------------------------------------------------- position


def test_position_of_an_unknown_session_or_one_without_ticks_is_empty(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    assert run(store.ticks.position("no-such-session")) == TickPosition()
    empty = _owned(store, run, make_session)
    assert run(store.ticks.position(empty.id)) == TickPosition()


def _write(store: Store, run: Run, owner: str, batches: list[TickBatch]) -> None:
    run(store.ticks.write(batches, owner=owner))
    run(store.ticks.wait_visible(10.0))


def _us(ts: datetime | None) -> int:
    assert ts is not None
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_position_has_the_newest_tick_and_the_highest_trade_id_per_symbol(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _owned(
        store, run, make_session, lease=NOW, symbols=("BTC_USDT", "ETH_USDT", "SOL_USDT")
    )
    btc: TradeBatch = trades(session.id, "BTC_USDT", n=30, first_id=101, step_us=10)
    eth: TradeBatch = trades(session.id, "ETH_USDT", n=5, first_id=1, step_us=1000)
    late_book: BookBatch = books(session.id, "SOL_USDT", n=3, start_us=BASE_US + 10_000)
    _write(store, run, OLD, [btc, eth, late_book])
    position = run(store.ticks.position(session.id))
    assert position.last_trade_ids == {"BTC_USDT": 130, "ETH_USDT": 5}
    assert _us(position.last_ts) == BASE_US + 10_000 + 2 * 5000  # the newest snapshot


def test_position_counts_trades_when_they_are_newest(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _owned(store, run, make_session, lease=NOW)
    _write(
        store,
        run,
        OLD,
        [books(session.id, n=2), trades(session.id, n=10, start_us=BASE_US + 1_000_000)],
    )
    position = run(store.ticks.position(session.id))
    assert _us(position.last_ts) == BASE_US + 1_000_000 + 9 * 1000
    assert position.last_trade_ids == {"BTC_USDT": 10}


def test_position_of_a_books_only_session_has_no_trade_ids(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _owned(store, run, make_session, lease=NOW)
    _write(store, run, OLD, [books(session.id, n=4)])
    assert run(store.ticks.position(session.id)) == TickPosition(
        datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=BASE_US + 3 * 5000), {}
    )


def test_position_is_per_session(store: Store, run: Run, make_session: MakeSession) -> None:
    first = _owned(store, run, make_session, lease=NOW)
    second = _owned(store, run, make_session, lease=NOW)
    _write(store, run, OLD, [trades(first.id, n=50, start_us=BASE_US + 5_000_000)])
    _write(store, run, OLD, [trades(second.id, n=3)])
    position = run(store.ticks.position(second.id))
    assert position.last_trade_ids == {"BTC_USDT": 3}
    assert _us(position.last_ts) == BASE_US + 2 * 1000
