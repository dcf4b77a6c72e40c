"""The change feed over the in-memory store: fan-out, order, dedupe, bounds."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.conftest import Run
from ticktape.api.push import ChangeFeed, Subscription
from ticktape.domain import DataType, Session, SessionStatus, Stats, utcnow
from ticktape.store.base import ChangePage
from ticktape.store.memory import MemoryStore
from ticktape.testing import draft_session

INTERVAL_S = 0.01
OWNER = "inst:1"


def _session() -> Session:
    return draft_session(
        data_types=(DataType.TRADES,),
        owner=OWNER,
        lease_expires_at=utcnow() + timedelta(seconds=60),
    )


class CountingSource:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.calls = 0

    async def __call__(self, since: str | None) -> ChangePage:
        self.calls += 1
        return await self.store.sessions.list_changed(since)


async def _next(sub: Subscription) -> Session | None:
    return await asyncio.wait_for(sub.next(), 5.0)


def test_every_subscriber_sees_changes_in_order_and_lease_renewals_are_skipped(
    run: Run[Any],
) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        feed = ChangeFeed(CountingSource(store), interval_s=INTERVAL_S)
        first, second = await feed.subscribe(), await feed.subscribe()
        created = await store.sessions.create_session(_session(), actor="t")
        await store.sessions.renew_lease(
            created.id, owner=OWNER, lease_expires_at=utcnow() + timedelta(seconds=90)
        )
        running = await store.sessions.transition(
            created.id,
            expected_version=1,
            to_status=SessionStatus.RUNNING,
            actor="t",
            reason="started",
        )
        for sub in (first, second):
            got = [await _next(sub)]
            if got[0] is not None and got[0].version == 1:
                got.append(await _next(sub))
            assert got[-1] == running
            assert sub.pending() == 0
        await feed.aclose()

    run(scenario())


def test_a_subscriber_that_does_not_read_is_dropped_and_the_others_go_on(run: Run[Any]) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        drops: list[int] = []
        feed = ChangeFeed(
            CountingSource(store),
            interval_s=INTERVAL_S,
            queue_max=3,
            on_drop=lambda: drops.append(1),
        )
        slow, fast = await feed.subscribe(), await feed.subscribe()
        session = await store.sessions.create_session(_session(), actor="t")
        for n in range(1, 8):
            await store.sessions.renew_lease(
                session.id,
                owner=OWNER,
                lease_expires_at=utcnow() + timedelta(seconds=60),
                stats=Stats(trades=n),
            )
            got = await _next(fast)
            while got is not None and got.stats.trades < n:
                got = await _next(fast)
            assert got is not None and got.stats.trades == n
        assert slow.dropped.is_set()
        assert slow.pending() <= 3  # never more than its bound held
        assert await slow.next() is None
        assert feed.subscribers == 1 and feed.dropped_total == 1 and drops == [1]
        await feed.aclose()

    run(scenario())


def test_no_reads_without_subscribers_and_close_ends_streams(run: Run[Any]) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        source = CountingSource(store)
        feed = ChangeFeed(source, interval_s=INTERVAL_S)
        await asyncio.sleep(INTERVAL_S * 5)
        assert source.calls == 0
        sub = await feed.subscribe()
        sub.close()
        await asyncio.sleep(INTERVAL_S * 5)
        calls = source.calls
        await asyncio.sleep(INTERVAL_S * 5)
        assert source.calls == calls  # the feed stopped with its last subscriber
        again = await feed.subscribe()
        waiting = asyncio.ensure_future(again.next())
        await feed.aclose()
        assert await asyncio.wait_for(waiting, 5.0) is None
        assert again.ended.is_set()

    run(scenario())


def test_subscribe_returns_only_once_the_feed_has_its_position(run: Run[Any]) -> None:
    async def scenario() -> None:
        store = MemoryStore()
        feed = ChangeFeed(CountingSource(store), interval_s=INTERVAL_S)
        sub = await feed.subscribe()
        created = await store.sessions.create_session(_session(), actor="t")
        assert await _next(sub) == created  # created right after subscribing: not missed
        await feed.aclose()

    run(scenario())


def test_running_sessions_progress_is_pushed_once_it_moves_and_never_backwards(
    run: Run[Any],
) -> None:
    """A heartbeat publishes progress without a session-log change: the feed re-reads
    the running sessions (``progress``) and sends a session only when its stats moved,
    never a state older than one already sent."""

    async def scenario() -> None:
        store = MemoryStore()
        created = await store.sessions.create_session(_session(), actor="t")
        running = await store.sessions.transition(
            created.id,
            expected_version=1,
            to_status=SessionStatus.RUNNING,
            actor="t",
            reason="started",
        )
        reads: list[list[Session]] = [
            [running.evolve(stats=Stats(10, 0, 0))],
            [running.evolve(stats=Stats(10, 0, 0))],  # unchanged: not sent again
            [running.evolve(stats=Stats(25, 3, 0))],
            [created],  # an older version than one sent: never sent
        ]
        served = asyncio.Event()

        async def progress() -> list[Session]:
            if len(reads) == 1:
                served.set()
            return reads.pop(0) if reads else []

        feed = ChangeFeed(
            CountingSource(store), interval_s=INTERVAL_S, progress=progress, progress_every_s=0
        )
        sub = await feed.subscribe()
        got = []
        while len(got) < 2:  # the session changed before the subscription: progress only
            session = await _next(sub)
            assert session is not None
            got.append((session.version, session.stats))
        await asyncio.wait_for(served.wait(), 5.0)
        await asyncio.sleep(INTERVAL_S * 5)  # the older read had its chance to be sent
        assert got == [(2, Stats(10, 0, 0)), (2, Stats(25, 3, 0))]
        assert sub.pending() == 0
        await feed.aclose()

    run(scenario())
