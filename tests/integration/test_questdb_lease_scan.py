"""QuestDB: the reconciler's scan (``scan_leases``) reads the full session of the
expired ones only, whatever the number of live sessions (O(expired) parsing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import LoopTurns, Run
from ticktape.domain import Stats, utcnow
from ticktape.store import RetryingStore
from ticktape.store.questdb import QuestDBSessionStore

pytestmark = pytest.mark.questdb


def test_the_scan_parses_only_the_expired_sessions(
    questdb_store: RetryingStore, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    now = utcnow()
    live = [
        make_session(owner="a/1", lease_expires_at=now - timedelta(seconds=5)) for _ in range(40)
    ]
    lapsed = make_session(owner="b/1", lease_expires_at=now - timedelta(seconds=1))

    async def scenario() -> tuple[list[list[str]], Any]:
        for s in [*live, lapsed]:
            await questdb_store.sessions.create_session(s, actor="t")
        # the live ones are covered by their owner's instance lease
        await questdb_store.sessions.renew_instance(
            "a/1",
            lease_expires_at=now + timedelta(seconds=30),
            progress={s.id: Stats() for s in live},
        )
        sessions = questdb_store.inner.sessions
        assert isinstance(sessions, QuestDBSessionStore)
        reads: list[list[str]] = []
        sessions.on_read_many = reads.append  # the documented testing hook
        scan = await questdb_store.sessions.scan_leases(now)
        return reads, scan

    reads, scan = run(scenario())
    assert [s.id for s in scan.expired] == [lapsed.id]
    assert reads == [[lapsed.id]]  # one read, of the expired session alone
    assert scan.next_expiry == now + timedelta(seconds=30)
    assert scan.live_owners == {"a/1"}  # the instance leases live at `now`


def _scanner(questdb_store: RetryingStore) -> QuestDBSessionStore:
    sessions = questdb_store.inner.sessions
    assert isinstance(sessions, QuestDBSessionStore)
    # the window's bound follows the newest row at once: every scan after the first reads
    # only the rows written since the previous one (the documented testing hook)
    sessions.active_sessions.overlap = timedelta(0)
    return sessions


def test_steady_scans_read_only_new_rows_and_keep_the_sessions_they_saw(
    questdb_store: RetryingStore, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    now = utcnow()
    sessions = _scanner(questdb_store)
    covered = make_session(owner="a/1", lease_expires_at=now - timedelta(seconds=5), created_at=now)

    async def scenario() -> None:
        await questdb_store.sessions.create_session(covered, actor="t")
        await questdb_store.sessions.renew_instance(
            "a/1", lease_expires_at=now + timedelta(seconds=30), progress={covered.id: Stats()}
        )
        assert (await questdb_store.sessions.scan_leases(now)).expired == []  # the full read
        for _ in range(3):  # later rows move the window past every row of `covered`
            other = make_session(owner="b/1", lease_expires_at=now + timedelta(seconds=60))
            await questdb_store.sessions.create_session(
                replace(other, created_at=utcnow()), actor="t"
            )
            scan = await questdb_store.sessions.scan_leases(now)
            assert scan.expired == [] and scan.next_expiry == now + timedelta(seconds=30)
        await questdb_store.sessions.renew_instance(
            "a/1", lease_expires_at=now + timedelta(seconds=30), progress={}
        )
        scan = await questdb_store.sessions.scan_leases(now)
        assert [s.id for s in scan.expired] == [covered.id]

    run(scenario())
    assert sessions.active_sessions.full_reads == 1
    assert sessions.active_sessions.window_reads == 4


def test_a_row_that_lands_behind_the_window_makes_the_next_scan_read_the_whole_log(
    questdb_store: RetryingStore, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    now = utcnow()
    sessions = _scanner(questdb_store)
    live = make_session(owner="a/1", lease_expires_at=now + timedelta(seconds=60), created_at=now)
    # stamped an hour before every row the scans read: a commit that lagged its timestamp
    late = make_session(
        owner="a/1",
        lease_expires_at=now - timedelta(seconds=5),
        created_at=now - timedelta(hours=1),
    )

    async def scenario() -> list[str]:
        await questdb_store.sessions.create_session(live, actor="t")
        assert (await questdb_store.sessions.scan_leases(now)).expired == []
        assert (await questdb_store.sessions.scan_leases(now)).expired == []  # a window read
        await questdb_store.sessions.create_session(late, actor="t")
        return [s.id for s in (await questdb_store.sessions.scan_leases(now)).expired]

    assert run(scenario()) == [late.id]
    assert sessions.active_sessions.full_reads == 2  # the count below the bound changed


def test_a_renewal_yields_the_loop_between_the_sessions_it_views(
    questdb_store: RetryingStore, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    # The heartbeat's view of an instance's sessions (applying the instance lease and
    # progress to each) is sliced: with a slice of 0 the renewal yields the event loop
    # between every two sessions it views, and still answers with every one of them as
    # get_session shows it. Each session's progress notes the other task's turn count
    # when the view compares it: no two sessions are viewed in the same turn.
    own_lease = utcnow() + timedelta(seconds=10)  # covered by the instance lease from now on
    owned = [make_session(owner="a/1", lease_expires_at=own_lease) for _ in range(30)]
    others = [make_session(owner="b/1", lease_expires_at=own_lease) for _ in range(10)]
    turns = LoopTurns()
    viewed_at: list[int] = []

    class Noted(Stats):
        def __ne__(self, other: object) -> bool:
            viewed_at.append(turns.count)
            return (self.trades, self.orderbook, self.errors) != (
                getattr(other, "trades", None),
                getattr(other, "orderbook", None),
                getattr(other, "errors", None),
            )

    async def scenario() -> None:
        for s in [*owned, *others]:
            await questdb_store.sessions.create_session(s, actor="t")
        sessions = questdb_store.inner.sessions
        assert isinstance(sessions, QuestDBSessionStore)
        sessions.slice_s = 0.0  # the documented testing hook
        until = utcnow() + timedelta(seconds=60)
        progress = {s.id: Noted(i, 2 * i, 0) for i, s in enumerate(owned)}
        renewal = questdb_store.sessions.renew_instance(
            "a/1", lease_expires_at=until, progress=progress
        )
        got = await turns.during(renewal)
        assert len(viewed_at) == len(owned)
        assert len(set(viewed_at)) == len(owned)  # one session per turn of the loop
        assert sorted(s.id for s in got) == sorted(s.id for s in owned)
        for s in got:
            stored = await questdb_store.sessions.get_session(s.id)
            assert replace(s, stats=stored.stats) == stored
            assert (stored.stats.trades, stored.stats.orderbook) == (
                progress[s.id].trades,
                progress[s.id].orderbook,
            )
            assert stored.lease_expires_at == until

    run(scenario())
