"""LeaseKeeper on the in-memory store: renewals, self-fencing, stop requests, release."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import LoopTurns
from ticktape.config import RENEW_ATTEMPTS, Settings
from ticktape.domain import (
    Reason,
    Session,
    SessionStatus,
    utcnow,
)
from ticktape.errors import StoreBusy
from ticktape.metrics import Metrics
from ticktape.runtime.handle import RunHandle
from ticktape.runtime.leases import LeaseKeeper
from ticktape.store import RetryingStore
from ticktape.store.memory import MemoryStore
from ticktape.testing import FaultyStore, draft_session, eventually
from ticktape.ticks import TickCounts

Run = Callable[[Coroutine[Any, Any, Any]], Any]
OWNER = "me:1/abc"
SETTINGS = Settings(heartbeat_interval_s=0.05, lease_s=0.3)
FENCE_DEADLINE_S = 10.0  # the fence must come; how soon is not a test's business


class Harness:
    def __init__(self) -> None:
        self.store = FaultyStore(MemoryStore())  # faults under the store handle's retry
        self.metrics = Metrics()
        handle = RetryingStore(self.store, SETTINGS.retry, on_retry=self.metrics.store_retry)
        self.keeper = LeaseKeeper(handle, SETTINGS, self.metrics, OWNER)

    async def running(self) -> tuple[Session, RunHandle]:
        session = await self.store.sessions.create_session(
            draft_session(
                id=f"s-{time.monotonic_ns()}",
                owner=OWNER,
                lease_expires_at=utcnow() + timedelta(seconds=SETTINGS.lease_s),
            ),
            actor=OWNER,
        )
        session = await self.store.sessions.transition(
            session.id,
            expected_version=1,
            to_status=SessionStatus.RUNNING,
            actor=OWNER,
            reason="started",
        )
        handle = RunHandle(session.id)
        self.keeper.track(handle)
        return session, handle

    def metric(self, name: str) -> float:
        value = self.metrics.registry.get_sample_value(name)
        assert value is not None, f"no metric {name!r}: a misspelt name must not read as 0"
        return value


def test_a_busy_renewal_is_retried_within_the_heartbeat(run: Run) -> None:
    async def body() -> None:
        h = Harness()
        session, _handle = await h.running()
        fault = h.store.fail("renew_instance", times=RENEW_ATTEMPTS - 1, error=StoreBusy("busy"))
        await h.keeper.heartbeat()
        assert fault.hits == RENEW_ATTEMPTS - 1
        renewed = await h.store.sessions.get_session(session.id)
        assert renewed.lease_expires_at is not None and renewed.lease_expires_at > utcnow()
        assert h.metric("ticktape_lease_renew_failures_total") == 0
        assert h.metric("ticktape_store_retries_total") == RENEW_ATTEMPTS - 1

    run(body())


def test_a_heartbeat_extends_the_lease_and_publishes_progress(run: Run) -> None:
    async def body() -> None:
        h = Harness()
        session, handle = await h.running()
        handle.written = TickCounts(12, 3)
        await h.keeper.heartbeat()
        renewed = await h.store.sessions.get_session(session.id)
        assert renewed.lease_expires_at is not None
        assert renewed.lease_expires_at > utcnow() + timedelta(seconds=SETTINGS.lease_s / 2)
        assert (renewed.stats.trades, renewed.stats.orderbook, renewed.version) == (12, 3, 2)

    run(body())


def test_renewals_failing_for_the_lease_fence_the_runner_before_it_expires(run: Run) -> None:
    async def body() -> None:
        h = Harness()
        session, handle = await h.running()
        fault = h.store.fail("renew_instance", times=None)
        loop = asyncio.create_task(h.keeper.loop())
        # order and outcome, not a latency window (a loaded machine delays timers): the
        # fence comes after renewals failed, it comes, and it is timed to come first —
        # the self-fence delay is shorter than the lease
        await asyncio.wait_for(handle.lost.wait(), timeout=FENCE_DEADLINE_S)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        assert fault.hits >= 1
        assert "not renewed" in handle.lost_reason and "injected" in handle.lost_reason
        assert h.metric("ticktape_lease_renew_failures_total") >= 1
        assert SETTINGS.self_fence_after_s < SETTINGS.lease_s
        stored = await h.store.sessions.get_session(session.id)
        assert stored.lease_expires_at == session.lease_expires_at  # never renewed

    run(body())


def test_a_renewal_that_succeeds_in_time_keeps_the_runner(run: Run) -> None:
    async def body() -> None:
        h = Harness()
        session, handle = await h.running()
        h.store.fail("renew_instance", times=2 * RENEW_ATTEMPTS)  # two heartbeats fail
        loop = asyncio.create_task(h.keeper.loop())

        async def noted() -> bool:
            events = await h.store.sessions.list_events(session.id)
            return events[-1].reason == Reason.LEASE_RENEW_FAILED

        await eventually(noted, timeout_s=2, what="the recovery note")
        await asyncio.sleep(SETTINGS.lease_s)  # well past the fencing point of the first failure
        loop.cancel()
        assert not handle.lost.is_set()

    run(body())


def test_the_store_saying_it_is_not_ours_fences_at_once(run: Run) -> None:
    async def body() -> None:
        h = Harness()
        session, handle = await h.running()
        await h.store.sessions.claim(
            session.id,
            expected_version=session.version,
            owner="other/1",
            lease_expires_at=utcnow() + timedelta(seconds=5),
            actor="other/1",
            reason="owner_changed",
        )
        await h.keeper.heartbeat()
        assert handle.lost.is_set() and "does not own" in handle.lost_reason

    run(body())


def test_a_stop_recorded_elsewhere_wakes_the_runner(run: Run) -> None:
    async def body() -> None:
        h = Harness()
        session, handle = await h.running()
        await h.store.sessions.transition(
            session.id,
            expected_version=session.version,
            to_status=SessionStatus.STOPPING,
            actor="other/1",
            reason="user_stop",
        )
        await h.keeper.heartbeat()
        assert handle.stop.is_set() and not handle.lost.is_set()

    run(body())


def test_release_expires_the_lease_and_no_renewal_extends_it_again(run: Run) -> None:
    async def body() -> None:
        h = Harness()
        session, handle = await h.running()
        h.store.delay("renew_instance", 0.1)  # a renewal in flight while the release comes
        renewal = asyncio.create_task(h.keeper.heartbeat())
        await asyncio.sleep(0.02)
        released = await h.keeper.release(handle, session.stats)
        await renewal
        await h.keeper.heartbeat()
        stored = await h.store.sessions.get_session(session.id)
        # no lease at all: this instance's lease, renewed after, does not cover it
        assert released.lease_expires_at is None and stored.lease_expires_at is None
        assert [s.id for s in await h.store.sessions.find_expired(utcnow())] == [session.id]
        assert not handle.lost.is_set()  # released, not fenced

    run(body())


def test_a_heartbeat_over_many_leases_yields_the_loop_between_them(run: Run) -> None:
    # A heartbeat over thousands of sessions must not hold the loop for its whole pass:
    # with a slice of 0 it yields between every two sessions, in both of its passes
    # (the progress it publishes, the renewal it applies), and renews every lease.
    async def body() -> None:
        h = Harness()
        running = [await h.running() for _ in range(40)]
        for i, (_session, handle) in enumerate(running):
            handle.written = TickCounts(i, 1)
        h.keeper.slice_s = 0.0
        turns = LoopTurns()
        await turns.during(h.keeper.heartbeat())
        assert turns.count >= 2 * len(running)
        for session, handle in running:
            stored = await h.store.sessions.get_session(session.id)
            assert stored.lease_expires_at is not None and stored.lease_expires_at > utcnow()
            assert stored.stats.trades == handle.written.trades
            assert not handle.lost.is_set()

    run(body())


def test_a_release_between_two_slices_of_a_heartbeat_is_not_renewed(run: Run) -> None:
    # A release that starts after the renewal's answer, while the heartbeat applies it
    # slice by slice, takes its lease's lock before the heartbeat reaches that lease:
    # the renewal is not applied to it, and it stays released (no lease at all).
    async def body() -> None:
        h = Harness()
        running = [await h.running() for _ in range(20)]
        h.keeper.slice_s = 0.0
        last_session, last_handle = running[-1]
        sessions = h.store.sessions
        renew = sessions.renew_instance
        releases: list[asyncio.Task[Session]] = []

        async def renew_then_release(owner: str, **kwargs: Any) -> list[Session]:
            owned = await renew(owner, **kwargs)
            # runs at the heartbeat's first yield after this answer
            release = h.keeper.release(last_handle, last_session.stats)
            releases.append(asyncio.create_task(release))
            return owned

        sessions.renew_instance = renew_then_release  # type: ignore[method-assign]
        await h.keeper.heartbeat()
        released = await releases[0]
        stored = await h.store.sessions.get_session(last_session.id)
        assert released.lease_expires_at is None and stored.lease_expires_at is None
        assert not last_handle.lost.is_set()
        for session, _handle in running[:-1]:
            kept = await h.store.sessions.get_session(session.id)
            assert kept.lease_expires_at is not None and kept.lease_expires_at > utcnow()

    run(body())


def test_an_untracked_session_is_left_alone(run: Run) -> None:
    async def body() -> None:
        h = Harness()
        session, handle = await h.running()
        h.keeper.untrack(session.id)
        h.store.fail("renew_instance", times=None)
        await asyncio.sleep(SETTINGS.lease_s + 0.1)
        await h.keeper.heartbeat()
        assert not handle.lost.is_set()

    run(body())


@pytest.fixture(autouse=True)
def _fast() -> None:
    assert SETTINGS.self_fence_after_s < SETTINGS.lease_s


def test_heartbeat_late_does_not_count_a_slow_renewal_as_a_late_wake(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal slower than the interval overruns the next heartbeat's due time; the
    line must give that as the renewal's time, not again as a loop that woke late (stop
    19's 19-minute shutdown: 'woke 4.6 s after due' was a 6.6 s renewal minus 2 s)."""
    renewal_s = 0.4  # each renewal outlasts the 0.05 s interval by far

    async def body() -> None:
        h = Harness()
        await h.running()

        async def slow_heartbeat() -> None:
            await asyncio.sleep(renewal_s)

        h.keeper.heartbeat = slow_heartbeat  # type: ignore[method-assign]
        task = asyncio.create_task(h.keeper.loop())

        async def three_lines() -> bool:
            return len(late_lines()) >= 3

        await eventually(three_lines, timeout_s=FENCE_DEADLINE_S, what="three late lines")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def late_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "heartbeat late" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="ticktape.runtime.leases"):
        run(body())
    for line in late_lines()[1:]:  # every one after the first began past its due time
        woke_s = float(line.split("woke ")[1].split("s after")[0])
        took_s = float(line.split("took ")[1].rstrip("s"))
        assert took_s >= renewal_s
        assert woke_s < renewal_s - SETTINGS.heartbeat_interval_s, line
