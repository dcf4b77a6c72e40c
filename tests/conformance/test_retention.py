"""Conformance: retention (``SessionStore.find_finished`` / ``purge`` / ``reclaim``) on
every backend.

A purge removes a finished session with its history, ticks, gaps and results, and
never touches a session that is not terminal or ended after the cutoff; it is
idempotent. QuestDB cannot delete rows: a purged session is gone from every read at
once, and its rows go with the partitions ``reclaim`` drops, which never hold a
kept session's rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import pytest

from tests.conformance.test_result_store import _results
from tests.conformance.test_tick_store import BASE_US, OWNER, books, trades
from ticktape.domain import DataType, Session, SessionStatus, Stats, utcnow
from ticktape.errors import InvalidTransition, SessionNotFound
from ticktape.store import Store
from ticktape.store.base import SessionQuery
from ticktape.ticks import Gap, GapCause, TickCounts

Run = Callable[[Coroutine[Any, Any, Any]], Any]
StartSession = Callable[..., Session]

DAY_US = 86_400_000_000
ALL = SessionQuery(include_deleted=True, limit=500)


def _record(store: Store, run: Run, session: Session, day: int) -> None:
    """Ticks of ``session`` on day ``day`` after BASE_US (a QuestDB partition a day)."""
    start = BASE_US + day * DAY_US
    run(
        store.ticks.write(
            [trades(session.id, start_us=start), books(session.id, start_us=start)], owner=OWNER
        )
    )
    run(store.ticks.wait_visible(10.0))


def _finish(store: Store, run: Run, session: Session) -> Session:
    """End ``session`` as a runner does: ticks visible, sealed, stats = rows."""
    run(store.ticks.wait_visible(10.0))
    seal = run(store.ticks.seal(session.id))
    current = run(store.sessions.get_session(session.id))
    done: Session = run(
        store.sessions.transition(
            session.id,
            expected_version=current.version,
            to_status=SessionStatus.COMPLETED,
            actor="test",
            reason="completed",
            stats=Stats(seal.counts.trades, seal.counts.orderbook, 0),
            seal=seal,
        )
    )
    return done


def _later() -> Any:
    return utcnow() + timedelta(seconds=1)


def test_find_finished_pages_through_sessions_ended_before_the_cutoff(
    store: Store, run: Run, running_session: StartSession
) -> None:
    first = _finish(store, run, running_session(OWNER))
    second = _finish(store, run, running_session(OWNER))
    still = running_session(OWNER)
    cutoff = _later()

    found = run(store.sessions.find_finished(cutoff, limit=10))
    assert [s.id for s in found] == [first.id, second.id]
    assert all(s.is_terminal for s in found)
    page = run(store.sessions.find_finished(cutoff, limit=1))
    assert [s.id for s in page] == [first.id]
    assert page[0].ended_at is not None
    rest = run(store.sessions.find_finished(cutoff, limit=10, after=(page[0].ended_at, first.id)))
    assert [s.id for s in rest] == [second.id]
    assert first.ended_at is not None
    assert run(store.sessions.find_finished(first.ended_at, limit=10)) == []
    assert still.id not in {s.id for s in found}


def test_purge_removes_a_finished_session_with_all_its_data(
    store: Store, run: Run, running_session: StartSession
) -> None:
    kept = running_session(OWNER)
    _record(store, run, kept, day=5)
    gone = running_session(OWNER)
    _record(store, run, gone, day=0)
    run(
        store.ticks.write_gaps(
            gone.id,
            [Gap("BTC_USDT", DataType.TRADES, BASE_US, BASE_US + 5, GapCause.DISCONNECT)],
            owner=OWNER,
        )
    )
    run(store.results.write(gone.id, _results(), owner=OWNER))
    done = _finish(store, run, gone)
    assert done.stats.trades > 0
    kept_counts = run(store.ticks.count(kept.id))
    cutoff = _later()

    purged = run(store.sessions.purge([gone.id], ended_before=cutoff))
    assert purged.sessions == 1
    with pytest.raises(SessionNotFound):
        run(store.sessions.get_session(gone.id))
    with pytest.raises(SessionNotFound):
        run(store.sessions.list_events(gone.id))
    assert gone.id not in {s.id for s in run(store.sessions.list_sessions(ALL)).sessions}
    assert run(store.sessions.count_sessions(ALL)) == 1
    assert run(store.sessions.find_finished(cutoff, limit=10)) == []

    freed = run(store.sessions.reclaim(cutoff)) + purged
    run(store.ticks.wait_visible(10.0))
    # every backend removes the purged session's rows (QuestDB: with their partitions)
    assert run(store.ticks.count(gone.id)) == TickCounts()
    assert run(store.ticks.read_gaps(gone.id)) == []
    assert run(store.results.summary(gone.id)) is None
    assert freed.trades >= done.stats.trades and freed.orderbook >= done.stats.orderbook
    # and never the kept session's
    assert run(store.ticks.count(kept.id)) == kept_counts
    assert run(store.sessions.get_session(kept.id)).status is SessionStatus.RUNNING


def test_purge_never_touches_a_session_that_is_not_finished_before_the_cutoff(
    store: Store, run: Run, running_session: StartSession, make_session: Callable[..., Session]
) -> None:
    running = running_session(OWNER)
    _record(store, run, running, day=0)
    pending = run(store.sessions.create_session(make_session(), actor="test"))
    recent = _finish(store, run, running_session(OWNER))
    assert recent.ended_at is not None
    before = {s.id: s for s in run(store.sessions.list_sessions(ALL)).sessions}

    ids = [running.id, pending.id, recent.id, "no-such-session"]
    purged = run(store.sessions.purge(ids, ended_before=recent.ended_at))
    assert purged.sessions == 0
    reclaimed = run(store.sessions.reclaim(recent.ended_at))
    assert reclaimed.sessions == 0 and reclaimed.partitions == ()
    after = {s.id: s for s in run(store.sessions.list_sessions(ALL)).sessions}
    assert {i: s.version for i, s in after.items()} == {i: s.version for i, s in before.items()}
    run(store.ticks.wait_visible(10.0))
    assert run(store.ticks.count(running.id)).trades == 50


def test_purge_is_idempotent(store: Store, run: Run, running_session: StartSession) -> None:
    done = _finish(store, run, running_session(OWNER))
    cutoff = _later()
    assert run(store.sessions.purge([done.id, done.id], ended_before=cutoff)).sessions == 1
    assert run(store.sessions.purge([done.id], ended_before=cutoff)).sessions == 0
    run(store.sessions.reclaim(cutoff))
    assert run(store.sessions.reclaim(cutoff)).partitions == ()
    with pytest.raises(SessionNotFound):
        run(store.sessions.get_session(done.id))


def test_a_partition_shared_with_a_kept_session_keeps_that_sessions_rows(
    store: Store, run: Run, running_session: StartSession
) -> None:
    gone = running_session(OWNER)
    kept = running_session(OWNER)
    _record(store, run, gone, day=2)
    _record(store, run, kept, day=2)
    gone = _finish(store, run, gone)
    kept = _finish(store, run, kept)
    cutoff = _later()
    assert run(store.sessions.purge([gone.id], ended_before=cutoff)).sessions == 1
    run(store.sessions.reclaim(cutoff))
    run(store.ticks.wait_visible(10.0))
    assert run(store.ticks.count(kept.id)) == TickCounts(kept.stats.trades, kept.stats.orderbook)
    assert run(store.sessions.get_session(kept.id)).stats == kept.stats


def test_a_purge_racing_a_stop_never_removes_a_session_that_was_running(
    store: Store, run: Run, running_session: StartSession
) -> None:
    """The stop and the purge race; a purge that came first skipped the running session,
    one that came second removed a session that was already stopped."""
    session = running_session(OWNER)

    async def race() -> tuple[Any, Any]:
        stop = store.sessions.transition(
            session.id,
            expected_version=session.version,
            to_status=SessionStatus.FAILED,
            actor="test",
            reason="error",
        )
        purge = store.sessions.purge([session.id], ended_before=utcnow() + timedelta(days=1))
        got = await asyncio.gather(stop, purge, return_exceptions=True)
        return got[0], got[1]

    stopped, purged = run(race())
    assert not isinstance(purged, BaseException)
    if purged.sessions == 0:
        assert run(store.sessions.get_session(session.id)).status is SessionStatus.FAILED
    else:  # the purge saw the session terminal: the stop had committed first
        assert isinstance(stopped, Session) and stopped.status is SessionStatus.FAILED
        with pytest.raises(SessionNotFound):
            run(store.sessions.get_session(session.id))
    assert not isinstance(stopped, InvalidTransition)
