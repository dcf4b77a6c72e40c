"""The preferred reaper: each orphan has one among the live instances, which takes it at
once; the others take it only once RECONCILE_DEFER_SHARE of the interval has passed
since its lease expired — so a dead or frozen preferred reaper delays it by that much,
within the bound (docs/resilience.md, "The bound")."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from ticktape.config import RECONCILE_DEFER_SHARE, Settings
from ticktape.domain import Session, SessionStatus, new_session_id, utcnow
from ticktape.runtime.reconciler import preferred_reaper
from ticktape.store.base import LeaseScan
from ticktape.store.memory import MemoryStore
from ticktape.testing import lone_reconciler

ME, OTHER, THIRD = "me:1/a", "other:2/b", "third:3/c"
LIVE = frozenset({ME, OTHER, THIRD})


def test_every_instance_that_sees_the_same_live_owners_picks_the_same_one() -> None:
    picked: Counter[str] = Counter()
    for _ in range(600):
        sid = new_session_id()
        preferred = [o for o in sorted(LIVE) if preferred_reaper(sid, LIVE, o)]
        assert len(preferred) == 1
        picked[preferred[0]] += 1
    assert set(picked) == LIVE and min(picked.values()) > 120  # spread, about 200 each


def test_with_no_live_owners_known_every_instance_takes_every_orphan() -> None:
    assert preferred_reaper(new_session_id(), frozenset(), ME)


def test_an_instance_the_others_do_not_know_yet_counts_itself() -> None:
    """An instance is in its own candidates: two views of the live owners may then both
    pick themselves (the compare-and-set decides), never neither."""
    for _ in range(200):
        sid = new_session_id()
        assert preferred_reaper(sid, frozenset({OTHER}), ME) or preferred_reaper(
            sid, frozenset({ME}), OTHER
        )


def _id(*, mine: bool) -> str:
    while True:
        sid = new_session_id()
        if preferred_reaper(sid, LIVE, ME) is mine:
            return sid


def test_an_orphan_waits_for_its_preferred_reaper_then_any_instance_takes_it(
    make_session: Callable[..., Session],
) -> None:
    settings = Settings(heartbeat_interval_s=0.5, lease_s=2.0)
    defer = timedelta(seconds=settings.reconcile_every_s * RECONCILE_DEFER_SHARE)

    async def scenario() -> None:
        store = MemoryStore()
        await store.open()
        scan = store.sessions.scan_leases

        async def with_live_owners(now: datetime) -> LeaseScan:  # as QuestDB's scan says
            return dataclasses.replace(await scan(now), live_owners=LIVE)

        store.sessions.scan_leases = with_live_owners  # type: ignore[method-assign]
        rec = lone_reconciler(store, settings, owner=ME, instance="me:1")
        just = utcnow() - timedelta(seconds=0.01)  # expired just now
        past = utcnow() - defer - timedelta(seconds=0.05)  # expired over the grace ago
        others = make_session(id=_id(mine=False), owner="dead:9/z", lease_expires_at=just)
        mine = make_session(id=_id(mine=True), owner="dead:9/z", lease_expires_at=just)
        # its preferred reaper did not take it in time (dead, frozen): anyone does
        late = make_session(id=_id(mine=False), owner="dead:9/z", lease_expires_at=past)
        for s in (others, mine, late):
            await store.sessions.create_session(s, actor="t")
        assert await rec.reconcile() == 2
        assert (await store.sessions.get_session(mine.id)).status is SessionStatus.FAILED
        assert (await store.sessions.get_session(late.id)).status is SessionStatus.FAILED
        assert (await store.sessions.get_session(others.id)).status is SessionStatus.PENDING
        assert rec.next_expiry == just + defer  # it wakes then to take it, if still there

    asyncio.run(scenario())
