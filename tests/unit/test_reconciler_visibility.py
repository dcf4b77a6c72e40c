"""A reconciler pass does not seal an orphan while its owner's acknowledged ticks are
not all visible: QuestDB applies each tick table's WAL on its own, and a seal made then
could count trades whose order books land later and are fenced out (found by
bench/chaos.py at stop 16). It looks again in the next pass, which starts at once;
past ``reconcile_visibility_patience_s`` after the lease expired, or when waiting
cannot help (a suspended table), it seals what is visible."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from ticktape.config import Settings
from ticktape.domain import Session, SessionStatus, utcnow
from ticktape.errors import StoreError, TicksNotVisible
from ticktape.runtime.reconciler import Reconciler, visibility_budget
from ticktape.store.base import Seal
from ticktape.store.memory import MemoryStore
from ticktape.testing import lone_reconciler
from ticktape.ticks import TickCounts

ME = "me:1/a"
SETTINGS = Settings(heartbeat_interval_s=0.5, lease_s=2.0)


class _Visibility:
    """Stands in for the store's wait: answers with ``error`` until it is cleared, and
    counts the seals made meanwhile."""

    def __init__(self, store: MemoryStore, error: Exception | None) -> None:
        self.error = error
        self.waits = 0
        self.timeouts: list[float] = []
        self.committed_by: list[datetime | None] = []
        self.notes: list[datetime] = []  # when note_committed was called
        self.seals: list[str] = []
        seal = store.ticks.seal

        async def wait_visible(timeout_s: float, *, committed_by: datetime | None = None) -> None:
            self.waits += 1
            self.timeouts.append(timeout_s)
            self.committed_by.append(committed_by)
            if self.error is not None:
                raise self.error

        async def note_committed() -> None:
            self.notes.append(utcnow())

        async def counted_seal(session_id: str):  # type: ignore[no-untyped-def]
            self.seals.append(session_id)
            return await seal(session_id)

        store.ticks.wait_visible = wait_visible  # type: ignore[method-assign]
        store.ticks.note_committed = note_committed  # type: ignore[method-assign]
        store.ticks.seal = counted_seal  # type: ignore[method-assign]


async def _setup(error: Exception | None) -> tuple[MemoryStore, Reconciler, _Visibility]:
    store = MemoryStore()
    await store.open()
    rec = lone_reconciler(store, SETTINGS, owner=ME, instance="me:1")
    return store, rec, _Visibility(store, error)


def test_an_orphan_is_not_sealed_until_its_owners_ticks_are_visible(
    make_session: Callable[..., Session],
) -> None:
    async def scenario() -> None:
        store, rec, vis = await _setup(TicksNotVisible("ticks not visible after 0.06s"))
        just = utcnow() - timedelta(seconds=0.01)
        orphan = make_session(owner="dead:9/z", lease_expires_at=just)
        await store.sessions.create_session(orphan, actor="t")

        assert await rec.reconcile() == 0
        assert vis.seals == []  # nothing counted while a table lags
        assert (await store.sessions.get_session(orphan.id)).status is SessionStatus.PENDING
        next_expiry = rec.next_expiry
        assert next_expiry is not None and next_expiry <= utcnow()  # looks again at once
        assert rec.next_wait() <= SETTINGS.reconcile_every_s * 0.1

        vis.error = None  # the tables caught up
        assert await rec.reconcile() == 1
        assert vis.seals == [orphan.id] and vis.waits == 2
        assert (await store.sessions.get_session(orphan.id)).status is SessionStatus.FAILED

    asyncio.run(scenario())


def test_past_the_patience_the_seal_counts_what_is_visible(
    make_session: Callable[..., Session],
) -> None:
    patience = timedelta(seconds=SETTINGS.reconcile_visibility_patience_s)

    async def scenario() -> None:
        store, rec, vis = await _setup(TicksNotVisible("ticks not visible after 0.06s"))
        just = utcnow() - timedelta(seconds=0.01)
        long_ago = utcnow() - patience - timedelta(seconds=0.05)
        waiting = make_session(owner="dead:9/z", lease_expires_at=just)
        overdue = make_session(owner="dead:9/z", lease_expires_at=long_ago)
        for s in (waiting, overdue):
            await store.sessions.create_session(s, actor="t")

        assert await rec.reconcile() == 1
        assert vis.seals == [overdue.id]
        assert (await store.sessions.get_session(overdue.id)).status is SessionStatus.FAILED
        assert (await store.sessions.get_session(waiting.id)).status is SessionStatus.PENDING

    asyncio.run(scenario())


def test_a_store_that_cannot_catch_up_alone_has_its_orphans_sealed_at_once(
    make_session: Callable[..., Session],
) -> None:
    async def scenario() -> None:
        suspended = StoreError("QuestDB table trades is suspended: its WAL is not being applied")
        store, rec, vis = await _setup(suspended)
        orphan = make_session(owner="dead:9/z", lease_expires_at=utcnow() - timedelta(seconds=0.01))
        await store.sessions.create_session(orphan, actor="t")

        assert await rec.reconcile() == 1
        assert vis.seals == [orphan.id]
        assert (await store.sessions.get_session(orphan.id)).status is SessionStatus.FAILED

    asyncio.run(scenario())


def test_the_patience_is_one_lease() -> None:
    assert SETTINGS.reconcile_visibility_patience_s == SETTINGS.lease_s


def test_a_seals_cut_is_named_in_the_reaps_detail(
    make_session: Callable[..., Session],
) -> None:
    """A seal that cut a lost owner's last, half-landed write (QuestDB) says so where the
    reap records the crash: the transition's detail."""

    async def scenario() -> None:
        store, rec, _ = await _setup(None)
        plain = store.ticks.seal

        async def cut_seal(session_id: str) -> Seal:
            seal = await plain(session_id)
            return Seal(seal.counts, seal.fence, TickCounts(120, 0))

        store.ticks.seal = cut_seal  # type: ignore[method-assign]
        orphan = make_session(owner="dead:9/z", lease_expires_at=utcnow() - timedelta(seconds=1))
        await store.sessions.create_session(orphan, actor="t")

        assert await rec.reconcile() == 1
        reaped = (await store.sessions.list_events(orphan.id))[-1]
        assert reaped.reason == "owner_lost"
        assert reaped.detail is not None
        assert reaped.detail.endswith(
            "; the owner's last write had landed in part and was left out: "
            "120 trades, 0 book snapshots"
        )

    asyncio.run(scenario())


def test_a_pass_waits_for_visibility_until_the_bound_leaves_only_the_pass_budget() -> None:
    """One wait as long as the bound's slack allows (its target fixed when it begins),
    not a short one whose every retry starts over with a later target."""
    now = utcnow()
    slack = SETTINGS.reconcile_every_s - SETTINGS.reconcile_pass_budget_s
    floor = SETTINGS.reconcile_visibility_s
    assert visibility_budget(SETTINGS, [now], now) == slack > floor
    later = now + timedelta(seconds=0.1)
    assert visibility_budget(SETTINGS, [now, now - timedelta(seconds=0.1)], later) == (
        pytest.approx(slack - 0.2)
    )
    assert visibility_budget(SETTINGS, [now - timedelta(seconds=slack)], now) == floor
    assert visibility_budget(SETTINGS, [], now) == floor
    assert visibility_budget(SETTINGS, [now + timedelta(seconds=60)], now) == (
        SETTINGS.reconcile_every_s
    )


def test_the_pass_gives_a_just_expired_orphans_ticks_the_bounds_slack(
    make_session: Callable[..., Session],
) -> None:
    async def scenario() -> None:
        store, rec, vis = await _setup(None)
        orphan = make_session(owner="dead:9/z", lease_expires_at=utcnow())
        await store.sessions.create_session(orphan, actor="t")

        assert await rec.reconcile() == 1
        slack = SETTINGS.reconcile_every_s - SETTINGS.reconcile_pass_budget_s
        (timeout,) = vis.timeouts
        assert SETTINGS.reconcile_visibility_s < timeout <= slack

    asyncio.run(scenario())


def test_the_pass_line_names_its_slowest_seal_and_commit(
    make_session: Callable[..., Session], caplog: pytest.LogCaptureFixture
) -> None:
    """A late reap's time split between the seal and the compare-and-set (stop 24's
    chaos run logged only their sum): the pass line names the slowest of each, as
    measured into the phase metrics."""

    async def scenario() -> None:
        store, rec, _ = await _setup(None)
        orphan = make_session(owner="dead:9/z", lease_expires_at=utcnow() - timedelta(seconds=1))
        await store.sessions.create_session(orphan, actor="t")
        assert await rec.reconcile() == 1

    with caplog.at_level("WARNING", logger="ticktape.runtime.reconciler"):
        asyncio.run(scenario())
    (line,) = [r.getMessage() for r in caplog.records if "reconciler pass" in r.getMessage()]
    seal = float(line.split("slowest seal ")[1].split(" s")[0])
    commit = float(line.split("slowest commit ")[1].split(" s")[0])
    sealed_and_committed = float(line.split("seal+commit ")[1].split(" s")[0])
    assert seal + commit <= sealed_and_committed + 0.0001  # each rounded to 0.1 ms


def test_the_seals_wait_for_what_was_committed_once_the_lost_owner_stopped_writing(
    make_session: Callable[..., Session],
) -> None:
    """An owner that cannot renew fences itself before its lease expires, so its
    acknowledged ticks were committed ``lost_owner_quiet_s`` before the latest expiry
    among the pass's orphans: the wait's target is what was committed then, not what
    the live instances committed since (a target that moves under load)."""

    async def scenario() -> None:
        store, rec, vis = await _setup(None)
        now = utcnow()
        early = make_session(owner="dead:9/z", lease_expires_at=now - timedelta(seconds=0.3))
        late = make_session(owner="dead:9/z", lease_expires_at=now - timedelta(seconds=0.01))
        for s in (early, late):
            await store.sessions.create_session(s, actor="t")

        assert await rec.reconcile() == 2
        quiet = timedelta(seconds=SETTINGS.lost_owner_quiet_s)
        assert vis.committed_by == [late.lease_expires_at - quiet]  # covers both owners
        assert quiet.total_seconds() == (SETTINGS.lease_s - SETTINGS.self_fence_after_s) / 2 > 0

    asyncio.run(scenario())


def test_an_earlier_incarnations_sessions_wait_for_everything_committed(
    make_session: Callable[..., Session],
) -> None:
    """Sessions taken at start-up from this instance's earlier incarnation have leases
    that may not have expired: their wait has no earlier target than now."""

    async def scenario() -> None:
        store, rec, vis = await _setup(None)
        mine = make_session(owner="me:1/old", lease_expires_at=utcnow() + timedelta(seconds=5))
        await store.sessions.create_session(mine, actor="t")

        assert await rec.reconcile(startup=True) == 1
        assert vis.committed_by == [None]

    asyncio.run(scenario())


def test_a_pass_just_before_a_lease_expires_notes_what_the_tick_store_committed(
    make_session: Callable[..., Session],
) -> None:
    """Within ``lost_owner_quiet_s`` of the earliest lease expiry a pass notes what is
    committed (the target of that owner's seals, should it be lost); a pass earlier
    than that, or with no lease about to expire, does not."""

    async def scenario() -> None:
        store, rec, vis = await _setup(None)
        quiet = SETTINGS.lost_owner_quiet_s
        soon = make_session(
            owner="other:2/b", lease_expires_at=utcnow() + timedelta(seconds=quiet * 3)
        )
        await store.sessions.create_session(soon, actor="t")

        assert await rec.reconcile() == 0
        assert vis.notes == []  # its owner may still write
        sooner = make_session(
            owner="other:3/c", lease_expires_at=utcnow() + timedelta(seconds=quiet / 2)
        )
        await store.sessions.create_session(sooner, actor="t")
        assert await rec.reconcile() == 0
        assert rec.next_expiry == sooner.lease_expires_at
        assert len(vis.notes) == 1 and vis.waits == 0  # noted; nothing expired, no wait

    asyncio.run(scenario())
