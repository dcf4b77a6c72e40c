"""Resume on owner loss (``on_owner_loss: "resume"``), on a real SQLite file.

A resumable collect session whose owner dies is claimed by exactly one live
instance and keeps recording under the same id: trade ids continue after the
stored ones (no duplicate, no reuse), timestamps after the newest stored tick,
and the gap is recorded as a ``resumed`` event. On graceful shutdown the owner
hands it over instead of stopping it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.integration.test_faults import (  # the scenario fixture too
    EVENTUAL_S,
    FAILED,
    RUNNING,
    STOPPED,
    _true,
    history,
    reasons,
    recorded_exactly,
    scenario,
    stored,
    wait_for_data,
    wait_status,
)
from tests.oracle import check_stored
from ticktape.domain import Reason, Session, SessionStatus, utcnow
from ticktape.testing import Instance, eventually

Add = Callable[..., Awaitable[Instance]]
COMPLETED = SessionStatus.COMPLETED
RESUME = {"on_owner_loss": "resume"}
DURATION_S = 3
__all__ = ["scenario"]  # a fixture, used by name


async def owned_by(nodes: list[Instance], session_id: str, timeout_s: float) -> Instance:
    """The node that runs the session once someone has claimed it."""

    async def owner() -> Instance | None:
        session = await nodes[0].raw.sessions.get_session(session_id)
        runners = [n for n in nodes if session_id in n.supervisor.running_ids]
        if len(runners) > 1:
            raise AssertionError(f"{session_id} runs on {[n.owner for n in runners]}")
        if runners and session.owner == runners[0].owner:
            return runners[0]
        return None

    return await eventually(owner, timeout_s=timeout_s, what="a new owner running it")


async def recorded_after_a_crash(node: Instance, session_id: str) -> Session:
    """The oracle for a session whose owner crashed and no runner finished: no tally,
    and the dead owner's unflushed tail may be lost — never a hole or a repeat."""
    return await check_stored(node.raw, session_id, tail_lost=True, tally=False)


def gap_of(events: list[Any]) -> dict[str, Any]:
    (resumed,) = [e for e in events if e.reason == Reason.RESUMED]
    gap: dict[str, Any] = json.loads(resumed.detail)
    return gap


def test_a_crashed_owners_resumable_session_continues_on_another_instance(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a, b = await add("a"), await add("b")
        session = await a.create(rate_per_s=1000, **RESUME)
        await wait_for_data(a, session.id, 200)
        await a.crash()
        before = await a.raw.sessions.get_session(session.id)
        position = await b.raw.ticks.position(session.id)
        new = await owned_by([a, b], session.id, timeout_s=EVENTUAL_S)
        assert new is b
        await wait_for_data(b, session.id, sum(await stored(b, session.id)) + 200)
        ended = await b.service.stop(session.id, wait=True, timeout_s=10)
        assert (ended.status, ended.id) == (STOPPED, session.id)
        assert ended.started_at == before.started_at  # the same run, continued
        await recorded_exactly(b, session.id)  # ids 1..n per symbol across both owners
        events = await history(b, session.id)
        claim = next(e for e in events if e.reason == Reason.OWNER_CHANGED)
        assert (claim.actor, claim.from_status, claim.to_status) == (b.owner, RUNNING, RUNNING)
        gap = gap_of(events)
        assert position.last_ts is not None
        assert datetime.fromisoformat(gap["from"]) == position.last_ts
        assert datetime.fromisoformat(gap["to"]) > position.last_ts
        assert gap["last_trade_ids"] == position.last_trade_ids
        assert b.metric("ticktape_sessions_resumed_total") == 1

    scenario(body)


def test_two_instances_reconciling_at_once_never_both_run_it(scenario: Any) -> None:
    async def body(add: Add) -> None:
        quiet = {"reconcile_interval_s": 3600.0}  # only the two passes below reconcile
        a, b, c = await add("a"), await add("b", **quiet), await add("c", **quiet)
        sessions = [await a.create(rate_per_s=200, **RESUME) for _ in range(4)]
        for s in sessions:
            await wait_for_data(a, s.id)
        await a.crash()

        async def expired() -> bool:
            found = await b.raw.sessions.find_expired(datetime.now().astimezone())
            return len(found) == len(sessions)

        await eventually(expired, timeout_s=EVENTUAL_S, what="every lease to expire")
        await asyncio.gather(b.supervisor.reconcile(), c.supervisor.reconcile())
        for s in sessions:
            await owned_by([b, c], s.id, timeout_s=EVENTUAL_S)
            claims = [e for e in await history(b, s.id) if e.reason == Reason.OWNER_CHANGED]
            assert len(claims) == 1
        runs = b.metric("ticktape_sessions_resumed_total") + c.metric(
            "ticktape_sessions_resumed_total"
        )
        assert runs == len(sessions)

    scenario(body)


def test_a_restarted_instance_resumes_its_own_sessions_at_once(scenario: Any) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        session = await a.create(rate_per_s=1000, **RESUME)
        await wait_for_data(a, session.id, 100)
        await a.crash()
        again = await add("a")  # same instance name, new incarnation
        assert session.id in again.supervisor.running_ids  # claimed during start-up
        current = await again.raw.sessions.get_session(session.id)
        assert (current.status, current.owner) == (RUNNING, again.owner)

        async def gap_recorded() -> bool:
            return Reason.RESUMED in reasons(await history(again, session.id))

        await eventually(gap_recorded, timeout_s=5, what="the resumed event")
        await wait_for_data(again, session.id, sum(await stored(again, session.id)) + 100)
        await again.service.stop(session.id, wait=True, timeout_s=10)
        await recorded_exactly(again, session.id)

    scenario(body)


def test_shutdown_hands_resumable_sessions_over_and_stops_the_others(scenario: Any) -> None:
    async def body(add: Add) -> None:
        a, b = await add("a"), await add("b")
        resumable = await a.create(rate_per_s=1000, **RESUME)
        plain = await a.create(rate_per_s=1000)
        for s in (resumable, plain):
            await wait_for_data(a, s.id, 50)
        await a.shutdown()
        stopped = await recorded_exactly(a, plain.id)
        assert (stopped.status, stopped.reason) == (STOPPED, Reason.SERVER_SHUTDOWN)
        released = await a.raw.sessions.get_session(resumable.id)
        assert released.status is RUNNING
        assert (released.stats.trades, released.stats.orderbook) == await stored(a, resumable.id)
        assert Reason.HANDED_OVER in reasons(await history(a, resumable.id))
        assert a.metric("ticktape_sessions_handed_over_total") == 1
        # released, not expired: another instance claims it at its next pass
        await owned_by([a, b], resumable.id, timeout_s=EVENTUAL_S)
        await wait_for_data(b, resumable.id, sum(await stored(b, resumable.id)) + 50)
        await b.service.stop(resumable.id, wait=True, timeout_s=10)
        await recorded_exactly(b, resumable.id)

    scenario(body)


def test_a_stop_asked_while_the_owner_is_dead_is_finished_by_the_claimer(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a, b = await add("a"), await add("b")
        session = await a.create(rate_per_s=1000, **RESUME)
        await wait_for_data(a, session.id, 50)
        await a.crash()
        asked = await b.service.stop(session.id)
        assert asked.status is SessionStatus.STOPPING
        ended = await wait_status(b, session.id, STOPPED, FAILED, timeout_s=EVENTUAL_S)
        assert (ended.status, ended.reason) == (STOPPED, Reason.USER_STOP)
        await recorded_after_a_crash(b, session.id)

        async def no_runner_left() -> bool:  # it leaves the supervisor just after the write
            return not b.supervisor.running_ids

        await eventually(no_runner_left, timeout_s=5, what="no runner left")

    scenario(body)


def test_non_resumable_sessions_of_a_crashed_owner_are_reaped_not_resumed(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a, b = await add("a"), await add("b")
        session: Session = await a.create(rate_per_s=1000)
        await wait_for_data(a, session.id, 50)
        await a.crash()
        ended = await wait_status(b, session.id, FAILED, timeout_s=EVENTUAL_S)
        assert ended.reason == Reason.OWNER_LOST
        await recorded_after_a_crash(b, session.id)

        async def no_runner_left() -> bool:  # it leaves the supervisor just after the write
            return not b.supervisor.running_ids

        await eventually(no_runner_left, timeout_s=5, what="no runner left")

    scenario(body)


# waits of up to 10 s, the duration and 15 s, and two instances' start and close: at load
# 25 the earlier form of this test passed pytest's 120 s (how: its log was cut)
@pytest.mark.timeout(240)
def test_a_resumed_session_keeps_its_duration_from_its_first_start(scenario: Any) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        session = await a.create(rate_per_s=500, duration=f"{DURATION_S}s", **RESUME)
        await wait_for_data(a, session.id, 100)
        await a.crash()
        started_at = (await a.raw.sessions.get_session(session.id)).started_at
        assert started_at is not None
        run_out = started_at + timedelta(seconds=DURATION_S)

        async def duration_over() -> bool:
            return utcnow() >= run_out

        # The claimer starts only once the duration counted from the first start is over:
        # counted from there nothing is left and it ends the session at once, counted from
        # the claim it would run DURATION_S more. (Claimed a lease after the crash, the
        # margin was that lease minus the time to end, which a loaded machine exceeded.)
        await eventually(duration_over, timeout_s=DURATION_S + 5, what="the duration to pass")
        b = await add("b")
        ended = await wait_status(b, session.id, COMPLETED, FAILED, timeout_s=EVENTUAL_S)
        assert (ended.status, ended.reason) == (COMPLETED, Reason.DURATION_REACHED)
        assert ended.ended_at is not None
        claim = next(e for e in await history(b, session.id) if e.reason == Reason.OWNER_CHANGED)
        assert claim.actor == b.owner
        # it ended before a duration restarted at the claim could have
        assert ended.ended_at < claim.at + timedelta(seconds=DURATION_S)
        await recorded_exactly(b, session.id)

    scenario(body)


def test_a_resumed_session_with_nothing_stored_records_an_open_gap(scenario: Any) -> None:
    async def body(add: Add) -> None:
        a, b = await add("a"), await add("b")
        a.store.fail("write", times=None)  # a stores nothing before it dies
        session = await a.create(rate_per_s=500, **RESUME)
        await wait_status(a, session.id, RUNNING)
        await a.crash()
        await owned_by([a, b], session.id, timeout_s=EVENTUAL_S)
        await wait_for_data(b, session.id, 10)
        gap = gap_of(await history(b, session.id))
        assert gap["from"] is None and gap["lost_s"] is None and gap["to"]
        await b.service.stop(session.id, wait=True, timeout_s=10)
        await recorded_exactly(b, session.id)  # a fresh start: ids from 1

    scenario(body)


@pytest.mark.timeout(240)
def test_a_zombie_finishing_after_its_own_instance_claimed_the_session_back_keeps_the_new_runner(
    scenario: Any,
) -> None:
    """An instance whose renewals failed past the lease claims its own session back and
    resumes it while the old runner is still writing its notes; the old run's end must
    not release the new runner's handle and lease (it used to: the new runner ran on
    unfenced, beside a third one the next pass launched — duplicated trade ids in the
    compressed-timing QuestDB chaos run)."""

    async def body(add: Add) -> None:
        a = await add("a")
        session = await a.create(rate_per_s=200, **RESUME)
        await wait_for_data(a, session.id)
        first = a.supervisor.handles[session.id]
        assert first.task is not None
        renewals = a.store.fail("renew_instance", times=None)
        a.store.delay("add_event", 3.0)  # the old run's first note: it ends late
        await eventually(lambda: _true(first.lost.is_set()), timeout_s=EVENTUAL_S, what="the fence")
        renewals.remove()

        async def resumed_here() -> bool:
            handle = a.supervisor.handles.get(session.id)
            return handle is not None and handle is not first

        await eventually(resumed_here, timeout_s=EVENTUAL_S, what="the claim back")
        second = a.supervisor.handles[session.id]
        await eventually(
            lambda: _true(first.task is not None and first.task.done()),
            timeout_s=EVENTUAL_S,
            what="the old run to end",
        )
        assert a.supervisor.handles.get(session.id) is second  # still tracked here
        assert session.id in a.supervisor.running_ids
        await a.service.stop(session.id)
        ended = await wait_status(a, session.id, SessionStatus.STOPPED, timeout_s=EVENTUAL_S)
        await check_stored(a.raw, ended.id, tally=False)

    scenario(body)
