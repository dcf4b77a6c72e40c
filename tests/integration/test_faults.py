"""Store faults during every transition, on a real SQLite file with the real runtime.

Each test runs one or more in-process instances (``ticktape.testing.Instance``:
store handle, Supervisor, SessionService) over one SQLite file, makes chosen
store calls fail through ``FaultyStore``, and checks that the store never holds
a state the runtime does not act on: nothing "stopped in memory, running in the
store", nothing running that the store does not know about, and recorded data
checked against an oracle the stats are not derived from (``tests/oracle.py``:
the simulated feed's contiguous trade ids and snapshots, the runner's own tally,
no ``count_mismatch``). Leases are short (1 s, heartbeat 0.2 s) so that expiry
happens within the test; every wait is a deadline, never a fixed sleep, and
latencies are asserted as order and eventual outcome (figures are bench/'s job).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.oracle import assert_no_count_mismatch, check_stored, read_stored, runner_tallies
from ticktape.config import RENEW_ATTEMPTS, RetryPolicy, Settings
from ticktape.domain import (
    Reason,
    Session,
    SessionEvent,
    SessionStatus,
    is_valid_history,
    utcnow,
)
from ticktape.errors import IdempotencyKeyReused, LeaseLost, StoreBusy, StoreUnavailable
from ticktape.store.base import SessionQuery
from ticktape.testing import OPERATIONS, Instance, eventually, instances
from ticktape.ticks import BookBatch, TickCounts, TradeBatch

Run = Callable[[Coroutine[Any, Any, Any]], Any]
Add = Callable[..., Awaitable[Instance]]

HEARTBEAT_S = 0.2
LEASE_S = 1.0
EVENTUAL_S = 15.0  # deadline for an outcome that must come: generous on a loaded machine
RUNNING, STOPPING, STOPPED, FAILED = (
    SessionStatus.RUNNING,
    SessionStatus.STOPPING,
    SessionStatus.STOPPED,
    SessionStatus.FAILED,
)


def base_settings(tmp_path: Path) -> Settings:
    return Settings(
        store_url=f"sqlite:///{tmp_path}/faults.db",
        heartbeat_interval_s=HEARTBEAT_S,
        lease_s=LEASE_S,
        flush_interval_s=0.05,
        flush_max_rows=5_000,
        buffer_max_rows=50_000,
        retry=RetryPolicy(store_attempts=3),
    )


@pytest.fixture
def scenario(run: Run, tmp_path: Path) -> Callable[[Callable[[Add], Awaitable[None]]], None]:
    """``scenario(body)`` runs ``await body(add)`` with instances that are closed afterwards."""

    def play(body: Callable[[Add], Awaitable[None]]) -> None:
        async def main() -> None:
            async with instances(base_settings(tmp_path)) as add:
                await body(add)

        run(main())

    return play


# --------------------------------------------------------------------------- helpers


async def stored(node: Instance, session_id: str) -> tuple[int, int]:
    counts = await node.raw.ticks.count(session_id)
    return counts.trades, counts.orderbook


async def wait_for_data(node: Instance, session_id: str, rows: int = 1) -> None:
    async def enough() -> bool:
        return sum(await stored(node, session_id)) >= rows

    await eventually(enough, timeout_s=10, what=f"{rows} stored ticks")


async def wait_status(
    node: Instance, session_id: str, *statuses: SessionStatus, timeout_s: float = 10
) -> Session:
    async def reached() -> Session | None:
        session = await node.raw.sessions.get_session(session_id)
        return session if session.status in statuses else None

    return await eventually(reached, timeout_s=timeout_s, what=f"session in {statuses}")


async def history(node: Instance, session_id: str) -> list[SessionEvent]:
    """The session's events, once checked to be a path of the state machine."""
    events = await node.raw.sessions.list_events(session_id)
    moves = [events[0].to_status] + [
        e.to_status for e in events[1:] if e.from_status != e.to_status
    ]
    assert is_valid_history(moves), moves
    return events


async def recorded_exactly(node: Instance, session_id: str, *, tally: bool = True) -> Session:
    """The oracle (tests/oracle.py): stored ticks are the feed's, nothing lost or doubled,
    stats equal them and the runner's own tally, and no ``count_mismatch`` was recorded."""
    return await check_stored(node.raw, session_id, tally=tally)


def reasons(events: list[SessionEvent]) -> list[str]:
    return [e.reason for e in events]


def to(status: SessionStatus) -> Callable[..., bool]:
    return lambda **kw: kw["to_status"] is status


# --------------------------------------------------------------------------- stop


def test_a_stop_whose_store_write_fails_leaves_the_session_running_and_stoppable(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        session = await a.create(rate_per_s=2000)
        await wait_for_data(a, session.id)
        fault = a.store.fail("transition", times=None, when=to(STOPPING))
        with pytest.raises(StoreUnavailable):
            await a.service.stop(session.id)
        # nothing moved: the store says running, the runner runs and keeps storing
        assert (await a.service.get(session.id)).status is RUNNING
        assert session.id in a.supervisor.running_ids
        before = sum(await stored(a, session.id))
        await wait_for_data(a, session.id, before + 1)
        assert fault.hits == a.settings.retry.store_attempts  # retried (bounded), then an error
        fault.remove()
        ended = await a.service.stop(session.id, wait=True, timeout_s=10)
        assert (ended.status, ended.reason) == (STOPPED, Reason.USER_STOP)
        await recorded_exactly(a, session.id)
        assert STOPPING in [e.to_status for e in await history(a, session.id)]

    scenario(body)


def test_a_failing_final_stopped_write_is_retried_and_completes(scenario: Any) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        session = await a.create(rate_per_s=2000)
        await wait_for_data(a, session.id)
        # more failures than one bounded retry allows: the supervisor keeps at it
        fault = a.store.fail("transition", times=5, when=to(STOPPED), error=StoreBusy("locked"))
        ended = await a.service.stop(session.id, wait=True, timeout_s=15)
        assert ended.status is STOPPED and fault.hits == 5
        await recorded_exactly(a, session.id)
        assert Reason.STORE_RETRIED in reasons(await history(a, session.id))
        assert a.metric("ticktape_store_retries_total") >= 4
        # STOPPED is written first (store-first); the runner leaves the supervisor just after
        await eventually(
            lambda: _true(not a.supervisor.running_ids), timeout_s=5, what="no runner left"
        )

    scenario(body)


def test_a_stop_asked_on_another_instance_is_finished_by_the_owner(scenario: Any) -> None:
    async def body(add: Add) -> None:
        a, b = await add("a"), await add("b")
        session = await a.create(rate_per_s=1000)
        await wait_for_data(a, session.id)
        # b records the request; a (the owner) sees it on a heartbeat and finishes the stop.
        # How soon is bench/lifecycle.py's figure; here: in that order, and it happens.
        ended = await b.service.stop(session.id, wait=True, timeout_s=EVENTUAL_S)
        assert ended.status is STOPPED
        events = await history(b, session.id)
        moves = [e for e in events if e.from_status != e.to_status]  # notes aside
        assert [(e.to_status, e.actor) for e in moves if e.to_status in (STOPPING, STOPPED)] == [
            (STOPPING, b.owner),
            (STOPPED, a.owner),
        ]
        await recorded_exactly(b, session.id)

    scenario(body)


# --------------------------------------------------------------------------- start


def test_a_start_whose_create_fails_leaves_nothing_running(scenario: Any) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        a.store.fail("create_session", times=None)
        with pytest.raises(StoreUnavailable):
            await a.create()
        assert a.supervisor.running_ids == []
        assert await a.raw.sessions.count_sessions(SessionQuery()) == 0

    scenario(body)


def test_a_create_whose_acknowledgement_is_lost_is_found_by_the_retry_and_runs(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        a.store.fail("create_session", after=True)  # written, but the caller sees an error
        session = await a.create(rate_per_s=1000)  # the retry finds it: the same session
        assert (await a.service.get(session.id)).id == session.id
        await wait_for_data(a, session.id)
        assert a.supervisor.running_ids == [session.id]
        assert await a.raw.sessions.count_sessions(SessionQuery()) == 1

    scenario(body)


def test_a_create_committed_then_failing_for_good_runs_nothing_and_is_reaped(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        a.store.fail("create_session", after=True)  # written, then the store goes away
        a.store.fail("create_session", times=None)
        with pytest.raises(StoreUnavailable):
            await a.create()
        assert a.supervisor.running_ids == []
        (orphan,) = (await a.raw.sessions.list_sessions(SessionQuery())).sessions
        # written with its start (the create of a session launched here at once); the
        # bounded retries may outlast the lease: it may be reaped already
        assert orphan.status in (RUNNING, FAILED)
        reaped = await wait_status(a, orphan.id, FAILED, timeout_s=EVENTUAL_S)
        assert reaped.reason == Reason.OWNER_LOST
        await history(a, orphan.id)
        assert reaped.ended_at is not None
        if orphan.status is RUNNING:  # reaped only once its lease expired
            assert orphan.lease_expires_at is not None
            assert reaped.ended_at >= orphan.lease_expires_at
        assert a.supervisor.running_ids == []

    scenario(body)


def test_a_retry_with_the_key_of_a_create_written_then_failed_runs_that_session(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a = await add("a", lease_s=30.0)  # no reaping while the client retries
        a.store.fail("create_session", after=True)  # written, then the store goes away
        outage = a.store.fail("create_session", times=None)
        with pytest.raises(StoreUnavailable):
            await a.create(idempotency_key="order-7", rate_per_s=1000)
        assert a.supervisor.running_ids == []
        outage.remove()
        session = await a.create(idempotency_key="order-7", rate_per_s=1000)  # the client's retry
        (only,) = (await a.raw.sessions.list_sessions(SessionQuery())).sessions
        assert session.id == only.id
        assert a.supervisor.running_ids == [session.id]
        await wait_status(a, session.id, RUNNING)
        await wait_for_data(a, session.id)
        again = await a.create(idempotency_key="order-7", rate_per_s=1000)  # changes nothing
        assert again.id == session.id and a.supervisor.running_ids == [session.id]
        with pytest.raises(IdempotencyKeyReused):  # the key names that request only
            await a.create(idempotency_key="order-7")
        moves = [e.to_status for e in await history(a, session.id) if e.from_status != e.to_status]
        assert moves == [SessionStatus.PENDING, RUNNING]  # launched once, by the retry

    scenario(body)


def test_a_start_whose_running_write_fails_ends_failed_and_runs_nothing(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        # a runtime that does not write the start with the create: its runner moves the
        # session pending → running itself (a create's key retry that finds it pending)
        a.supervisor.start_lease_until = lambda: None  # type: ignore[method-assign]
        a.store.fail("transition", times=None, when=to(RUNNING))
        session = await a.create(rate_per_s=1000)
        ended = await wait_status(a, session.id, FAILED)
        assert ended.reason == Reason.START_FAILED
        assert await stored(a, session.id) == (0, 0)
        await eventually(
            lambda: _true(not a.supervisor.running_ids), timeout_s=5, what="no runner left"
        )
        await history(a, session.id)

    scenario(body)


async def _true(value: bool) -> bool:
    return value


# --------------------------------------------------------------------------- leases


CAUSE = "disk I/O error (injected)"


async def _store_fault_past_the_lease(
    add: Add,
    inject: Callable[[Instance], None],
    while_down: Callable[[Instance, str], None],
) -> tuple[Instance, str, list[SessionEvent]]:
    """A session runs; ``inject`` breaks the store (failing with :data:`CAUSE`) past the
    lease; once its runner stopped itself ``while_down`` checks the instance; the lease
    expires, the store comes back, and the session must end ``failed`` with reason
    ``store_unavailable`` and the cause in its final event. The instance, the session
    id and its history are returned for more checks."""
    a = await add("a")
    session = await a.create(rate_per_s=1000)
    await wait_for_data(a, session.id)
    runner = a.supervisor.handles[session.id].task
    assert runner is not None
    inject(a)
    # The runner stopped itself, and its history notes (lease_lost, tally,
    # zombie_stopped) were tried and failed, all while the store is down: the runner
    # leaves running_ids before it writes them, so waiting for that alone let a note
    # still in its retries land after the reap once the store is back.
    await eventually(
        lambda: _true(runner.done()), timeout_s=EVENTUAL_S, what="the runner to stop itself"
    )
    while_down(a, session.id)

    async def lease_expired() -> bool:
        current = await a.raw.sessions.get_session(session.id)
        expiry = current.lease_expires_at
        return expiry is not None and expiry < utcnow()

    await eventually(lease_expired, timeout_s=EVENTUAL_S, what="the lease to expire")
    assert (await a.raw.sessions.get_session(session.id)).status is RUNNING
    a.store.clear()  # the store is back
    ended = await wait_status(a, session.id, FAILED, timeout_s=EVENTUAL_S)
    assert ended.reason == Reason.STORE_UNAVAILABLE, ended.reason
    events = await history(a, session.id)
    final = events[-1]
    assert final.reason == Reason.STORE_UNAVAILABLE and final.detail is not None
    assert CAUSE in final.detail, final.detail
    return a, session.id, events


# a heartbeat of 1 s leaves half a second between the self-fence and the lease's
# expiry: the runner awaits a write in flight that long at most (runners/collect.py)
FENCE_SLACK_TIMING = {"heartbeat_interval_s": 1.0, "lease_s": 3.0}


async def renewals_failing_on_a(add: Add) -> tuple[Instance, Instance, Session, Any]:
    """Instances a and b (:data:`FENCE_SLACK_TIMING`), a session recording on a, and its
    runner's task; then a's renewals fail, and no reconciler looks for expired leases
    until the test clears b's faults."""
    a, b = await add("a", **FENCE_SLACK_TIMING), await add("b", **FENCE_SLACK_TIMING)
    session = await a.create(rate_per_s=1000)
    await wait_for_data(a, session.id)
    runner = a.supervisor.handles[session.id].task
    assert runner is not None
    # b looks for expired leases only once a's runner is done: on a loaded machine b's
    # pass could otherwise reap the session between a's runner stopping and this test
    # reading it, and before a's zombie_stopped note (order and timing: bench/chaos.py)
    b.store.fail("scan_leases", times=None)
    # a's store connection goes bad for renewals (and for its reconciler)
    a.store.fail("renew_instance", times=None)
    a.store.fail("scan_leases", times=None)
    return a, b, session, runner


# a chain of four waits of up to 10-15 s each, and two instances' start and close:
# at load 25 one run passed pytest's 120 s while none of its own deadlines had expired
@pytest.mark.timeout(240)
def test_a_store_down_past_the_lease_ends_the_session_failed_naming_the_store_fault(
    scenario: Any,
) -> None:
    """The whole store fails (every operation) for longer than the lease, then recovers:
    the session ends ``failed`` with reason ``store_unavailable`` and the cause in its
    detail — not ``owner_lost``, which would blame a vanished owner."""

    def fail_everything(a: Instance) -> None:
        for operation in sorted(OPERATIONS):
            a.store.fail(operation, times=None, error=StoreUnavailable(CAUSE))

    def not_running(a: Instance, session_id: str) -> None:
        assert session_id not in a.supervisor.running_ids

    async def body(add: Add) -> None:
        a, session_id, events = await _store_fault_past_the_lease(add, fail_everything, not_running)
        assert Reason.OWNER_LOST not in reasons(events)
        await recorded_exactly(a, session_id, tally=False)

    scenario(body)


@pytest.mark.timeout(240)
def test_a_store_that_hangs_past_the_lease_is_named_even_before_a_renewal_failed(
    scenario: Any,
) -> None:
    """The runner fences itself while its renewal is still waiting for the store (no
    renewal has failed yet — as when a loaded event loop runs the fence first): the
    store failing its notes then names the fault, and the reap says store_unavailable."""

    def hang_renewals_fail_the_rest(a: Instance) -> None:
        a.store.delay("renew_instance", 3 * LEASE_S, times=None)  # hangs past the lease
        for operation in sorted(OPERATIONS - {"renew_instance"}):
            a.store.fail(operation, times=None, error=StoreUnavailable(CAUSE))

    def no_renewal_failed(a: Instance, _session_id: str) -> None:
        assert a.metric("ticktape_lease_renew_failures_total") == 0  # none failed: hung

    async def body(add: Add) -> None:
        await _store_fault_past_the_lease(add, hang_renewals_fail_the_rest, no_renewal_failed)

    scenario(body)


# a chain of four waits of up to 10-15 s each, and two instances' start and close:
# at load 25 one run passed pytest's 120 s while none of its own deadlines had expired
@pytest.mark.timeout(240)
def test_heartbeat_failures_longer_than_the_lease_stop_the_runner_and_another_instance_reaps(
    scenario: Any,
) -> None:
    timing = FENCE_SLACK_TIMING

    async def body(add: Add) -> None:
        a, b, session, runner = await renewals_failing_on_a(add)
        await eventually(
            lambda: _true(runner.done()), timeout_s=EVENTUAL_S, what="the runner to stop itself"
        )
        assert session.id not in a.supervisor.running_ids
        fenced = await a.raw.sessions.get_session(session.id)
        assert fenced.status is RUNNING  # it stopped itself: nothing ended it
        assert fenced.lease_expires_at is not None
        last_renewal = fenced.lease_expires_at - timedelta(seconds=timing["lease_s"])
        frozen = await stored(a, session.id)
        b.store.clear()  # b reconciles again: it reaps once the lease has expired
        reaped = await wait_status(b, session.id, FAILED, timeout_s=EVENTUAL_S)
        assert reaped.reason == Reason.OWNER_LOST
        assert reaped.ended_at is not None
        # order: the reap comes after the lease expired (how soon after: bench/chaos.py)
        assert reaped.ended_at >= last_renewal + timedelta(seconds=timing["lease_s"])
        assert await stored(a, session.id) == frozen  # nothing written after it stopped
        await recorded_exactly(b, session.id, tally=False)
        events = await history(b, session.id)
        # The runner's tally counts the writes it saw acknowledged, the one in flight as it
        # stopped itself included (it awaits that answer): exactly what is stored. Before
        # it did, the tally trailed by that flush (seen at load 25: stored 3000/600,
        # tally 2000/400).
        (tally,) = runner_tallies(events)
        assert (tally["trades"], tally["orderbook"]) == frozen, tally
        order = reasons(events)
        assert order.index(Reason.ZOMBIE_STOPPED) < order.index(Reason.OWNER_LOST)
        assert Reason.LEASE_LOST in order
        assert events[-1].actor == b.owner
        assert a.metric("ticktape_zombies_self_stopped_total") == 1
        assert a.metric("ticktape_lease_renew_failures_total") >= 1
        assert b.metric("ticktape_orphans_reaped_total") == 1
        # fencing: a late write of the old owner is rejected by the store itself
        late = TradeBatch(session.id, "BTC_USDT", *_one_trade(10**9))
        with pytest.raises(LeaseLost):
            await a.raw.ticks.write([late], owner=a.owner)

    scenario(body)


@pytest.mark.timeout(240)
def test_a_zombie_note_that_reaches_the_store_after_the_reap_is_left_out(scenario: Any) -> None:
    """The terminal event stays the last of the history: a self-stopped runner's notes
    (lease_lost, runner_tally, zombie_stopped) that reach the store only after another
    instance reaped the session are refused (``add_event(owner=...)``), never appended
    after the ``failed`` event — a client reading the events, and the oracle's last
    ``runner_tally``, rely on that order."""

    async def body(add: Add) -> None:
        a, b = await add("a"), await add("b")
        session = await a.create(rate_per_s=1000)
        await wait_for_data(a, session.id)
        runner = a.supervisor.handles[session.id].task
        assert runner is not None
        a.store.fail("renew_instance", times=None)
        a.store.fail("scan_leases", times=None)  # b reaps, not a
        # a's first note (lease_lost) is slow: it and the notes after it reach the store
        # after b's reap (if b were slower still, they would simply come first)
        a.store.delay("add_event", 3.0)
        reaped = await wait_status(b, session.id, FAILED, timeout_s=EVENTUAL_S)
        assert reaped.reason == Reason.OWNER_LOST
        await eventually(
            lambda: _true(runner.done()), timeout_s=EVENTUAL_S, what="the runner's notes"
        )
        events = await history(b, session.id)
        terminal = next(i for i, e in enumerate(events) if e.to_status is FAILED)
        assert terminal == len(events) - 1, reasons(events)[terminal:]
        assert events[-1].reason == Reason.OWNER_LOST and events[-1].actor == b.owner

    scenario(body)


def _one_trade(trade_id: int) -> tuple[Any, ...]:
    import numpy as np

    return (
        np.array([1_700_000_000_000_000], dtype=np.int64),
        np.array([trade_id], dtype=np.int64),
        np.array([1.0]),
        np.array([1.0]),
        np.array([1], dtype=np.int8),
    )


def test_a_renewal_outage_shorter_than_the_lease_is_survived_and_recorded(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        session = await a.create(rate_per_s=1000)
        await wait_for_data(a, session.id)
        fault = a.store.fail("renew_instance", times=2 * RENEW_ATTEMPTS)  # two heartbeats' worth
        await eventually(
            lambda: _true(fault.hits == 2 * RENEW_ATTEMPTS),
            timeout_s=EVENTUAL_S,
            what="two failed heartbeats",
        )

        async def noted() -> bool:
            return Reason.LEASE_RENEW_FAILED in reasons(await history(a, session.id))

        await eventually(noted, timeout_s=EVENTUAL_S, what="the recovery note")
        assert session.id in a.supervisor.running_ids
        ended = await a.service.stop(session.id, wait=True, timeout_s=10)
        assert ended.status is STOPPED
        assert a.metric("ticktape_zombies_self_stopped_total") == 0

    scenario(body)


# --------------------------------------------------------------------------- tick writes


def test_transient_tick_write_failures_are_retried_and_counts_equal_rows(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        session = await a.create(rate_per_s=2000)
        await wait_for_data(a, session.id)
        fault = a.store.fail("write", times=4, error=StoreBusy("database is locked"))
        await eventually(lambda: _true(fault.hits == 4), timeout_s=5, what="4 failed writes")
        ended = await a.service.stop(session.id, wait=True, timeout_s=10)
        assert (ended.status, ended.stats.errors) == (STOPPED, 0)
        await recorded_exactly(a, session.id)
        assert a.metric("ticktape_store_retries_total") >= 3
        assert Reason.STORE_RETRIED in reasons(await history(a, session.id))

    scenario(body)


def test_tick_writes_acknowledged_late_are_not_counted_twice(scenario: Any) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        session = await a.create(rate_per_s=2000)
        await wait_for_data(a, session.id)
        fault = a.store.fail("write", times=2, after=True)  # stored, then "failed"
        await eventually(lambda: _true(fault.hits == 2), timeout_s=5, what="2 lost acks")
        ended = await a.service.stop(session.id, wait=True, timeout_s=10)
        assert ended.status is STOPPED
        await recorded_exactly(a, session.id)  # the store's count, not the runner's tally

    scenario(body)


def test_tick_writes_failing_for_good_during_stop_end_failed_with_the_unstored_count(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a = await add("a")
        session = await a.create(rate_per_s=2000)
        await wait_for_data(a, session.id)
        fault = a.store.fail("write", times=None)
        await eventually(lambda: _true(fault.hits >= 1), timeout_s=5, what="a failed write")
        before = await stored(a, session.id)
        ended = await a.service.stop(session.id, wait=True, timeout_s=15)
        assert (ended.status, ended.reason) == (FAILED, Reason.ERROR)
        assert await stored(a, session.id) == before
        assert (ended.stats.trades, ended.stats.orderbook) == before  # never what it did not store
        refused: set[tuple[Any, ...]] = set()
        for call in fault.calls:
            for batch in call["batches"]:
                if isinstance(batch, BookBatch):
                    refused |= {("book", batch.symbol, ts) for ts in batch.ts_us.tolist()}
                else:
                    refused |= {("trade", batch.symbol, t) for t in batch.trade_id.tolist()}
        assert ended.stats.errors == len(refused) > 0
        # what was stored is the feed's, and what was refused continues it with no hole:
        # every tick up to the last one the feed produced is either stored or counted lost
        await recorded_exactly(a, session.id)
        trades = await read_stored(a.raw, session.id)
        for symbol, rows in trades.trades.items():
            last = max(t[0] for t in rows)
            lost = sorted(t for kind, sym, t in refused if kind == "trade" and sym == symbol)
            assert lost == list(range(last + 1, last + 1 + len(lost))), symbol

    scenario(body)


def test_the_oracle_catches_a_runner_tally_that_differs_from_the_store(scenario: Any) -> None:
    """The no-``count_mismatch`` check is not vacuous: a miscounting runner is caught."""

    async def body(add: Add) -> None:
        a = await add("a")
        session = await a.create(rate_per_s=2000)
        await wait_for_data(a, session.id)
        handle = a.supervisor.handles[session.id]
        handle.written = handle.written + TickCounts(1, 0)  # the runner counts one trade too many
        ended = await a.service.stop(session.id, wait=True, timeout_s=EVENTUAL_S)
        assert ended.status is STOPPED
        events = await history(a, session.id)
        (tally,) = runner_tallies(events)
        assert tally["trades"] == ended.stats.trades + 1
        with pytest.raises(AssertionError, match="count_mismatch"):
            assert_no_count_mismatch(events)
        with pytest.raises(AssertionError, match="count_mismatch"):
            await recorded_exactly(a, session.id)

    scenario(body)
