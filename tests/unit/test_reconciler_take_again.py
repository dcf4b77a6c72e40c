"""A reap or claim whose compare-and-set loses to a change that leaves the session an
orphan of the same owner — a stop asked through the API between the seal and the
commit, the usual case in bench/chaos.py — is tried again in the same pass, with the
session read again and a new seal: the next pass may start most of an interval later,
past the reap bound (found at stop 27: a claim 48 ms over the compressed bound, after
a stop request raced it). A take lost to someone who ended, took or renewed the session
is not tried again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from ticktape.config import RECONCILE_TAKE_ATTEMPTS, Settings
from ticktape.domain import Reason, Session, SessionStatus, utcnow
from ticktape.errors import TransitionRace
from ticktape.store.base import Seal
from ticktape.store.memory import MemoryStore
from ticktape.store.transitions import request_stop
from ticktape.testing import lone_reconciler

ME, DEAD = "me:1/a", "dead:9/z"
SETTINGS = Settings(heartbeat_interval_s=0.5, lease_s=2.0)


def _between_seal_and_commit(
    store: MemoryStore, change: Callable[[str], Awaitable[object]], *, times: int = 1
) -> list[str]:
    """Makes ``change`` happen right after each of the first ``times`` seals; returns
    the list of sealed session ids, filled as seals are made."""
    sealed: list[str] = []
    seal = store.ticks.seal

    async def racing_seal(session_id: str, *, acknowledged: bool = False) -> Seal:
        made = await seal(session_id, acknowledged=acknowledged)
        sealed.append(session_id)
        if len(sealed) <= times:
            await change(session_id)
        return made

    store.ticks.seal = racing_seal  # type: ignore[method-assign]
    return sealed


async def _orphan(store: MemoryStore, make_session: Callable[..., Session]) -> Session:
    await store.open()
    lease = utcnow() - timedelta(seconds=0.01)  # expired just now
    created = await store.sessions.create_session(make_session(), actor="t")
    return await store.sessions.transition(
        created.id,
        expected_version=created.version,
        to_status=SessionStatus.RUNNING,
        actor=DEAD,
        reason=Reason.STARTED,
        owner=DEAD,
        lease_expires_at=lease,
    )


def test_a_stop_asked_between_seal_and_commit_does_not_put_the_reap_off_to_the_next_pass(
    make_session: Callable[..., Session],
) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        orphan = await _orphan(store, make_session)

        async def stop(session_id: str) -> None:
            await request_stop(store, session_id, actor="api:2/b", reason=Reason.USER_STOP)

        sealed = _between_seal_and_commit(store, stop)
        rec = lone_reconciler(store, SETTINGS, owner=ME, instance="me:1")
        assert await rec.reconcile() == 1  # in this pass
        assert sealed == [orphan.id, orphan.id]  # sealed again after the race
        final = await store.sessions.get_session(orphan.id)
        assert final.status is SessionStatus.FAILED and final.reason == Reason.OWNER_LOST
        moves = [e.to_status for e in await store.sessions.list_events(orphan.id)]
        assert moves[-2:] == [SessionStatus.STOPPING, SessionStatus.FAILED]

    asyncio.run(scenario())


def test_the_attempts_are_bounded(make_session: Callable[..., Session]) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        orphan = await _orphan(store, make_session)
        transition = store.sessions.transition
        lost: list[str] = []

        async def always_lost(session_id: str, **kwargs: Any) -> Session:
            lost.append(session_id)  # the session stays an orphan of the same owner
            raise TransitionRace(session_id, kwargs["expected_version"])

        store.sessions.transition = always_lost  # type: ignore[method-assign]
        sealed = _between_seal_and_commit(store, _nothing, times=0)
        rec = lone_reconciler(store, SETTINGS, owner=ME, instance="me:1")
        assert await rec.reconcile() == 0
        assert sealed == lost == [orphan.id] * RECONCILE_TAKE_ATTEMPTS
        assert not (await store.sessions.get_session(orphan.id)).is_terminal
        store.sessions.transition = transition  # type: ignore[method-assign]
        assert await rec.reconcile() == 1  # the next pass, with nothing racing it

    asyncio.run(scenario())


async def _nothing(session_id: str) -> None:
    return None


def test_a_take_lost_to_a_renewal_or_an_end_is_not_tried_again(
    make_session: Callable[..., Session],
) -> None:
    async def scenario(change: str) -> None:
        store = MemoryStore()
        orphan = await _orphan(store, make_session)

        async def renew_or_end(session_id: str) -> None:
            current = await store.sessions.get_session(session_id)
            if change == "renewed":  # the owner was frozen and came back in time
                await store.sessions.renew_lease(
                    session_id,
                    owner=DEAD,
                    lease_expires_at=utcnow() + timedelta(seconds=SETTINGS.lease_s),
                )
            else:  # another reconciler reaped it first
                await store.sessions.transition(
                    session_id,
                    expected_version=current.version,
                    to_status=SessionStatus.FAILED,
                    actor="other:2/b",
                    reason=Reason.OWNER_LOST,
                    lease_expires_at=None,
                )

        sealed = _between_seal_and_commit(store, renew_or_end)
        rec = lone_reconciler(store, SETTINGS, owner=ME, instance="me:1")
        assert await rec.reconcile() == 0
        assert sealed == [orphan.id]  # one seal: the race was lost for good
        final = await store.sessions.get_session(orphan.id)
        assert final.is_terminal is (change == "ended")

    for change in ("renewed", "ended"):
        asyncio.run(scenario(change))
