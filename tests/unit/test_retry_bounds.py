"""Every retry is bounded, there is one retry layer, and the bounds are the ones
docs/design.md states.

A store that always fails is called exactly as often as ``RetryPolicy`` says: a
transient error ``store_attempts`` times per store call (a lease renewal
``renew_attempts`` times) — by the store handle, and by nobody above it — a lost
compare-and-set ``cas_rounds`` times, the end of a run ``finish_rounds`` x
``store_attempts`` times.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ticktape.config import (
    CAS_ROUNDS,
    FINISH_ROUNDS,
    RENEW_ATTEMPTS,
    STORE_RETRY_ATTEMPTS,
    RetryPolicy,
    Settings,
)
from ticktape.domain import (
    DataType,
    Reason,
    SessionStatus,
    utcnow,
)
from ticktape.errors import (
    SessionConflict,
    StoreBusy,
    StoreError,
    StoreUnavailable,
    TransitionRace,
)
from ticktape.store import RetryingStore, Store, open_store
from ticktape.store.base import SessionQuery, TickQuery
from ticktape.store.memory import MemoryStore
from ticktape.store.transitions import request_stop
from ticktape.testing import OPERATIONS, FaultyStore, draft_session, eventually, instances

Run = Callable[[Coroutine[Any, Any, Any]], Any]
FAST = RetryPolicy(store_base_s=0.0001, store_max_s=0.0005)
DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"


async def _running(store: Store) -> str:
    """A running session in ``store``, written directly (no runtime)."""
    session = await store.sessions.create_session(
        draft_session(id="s-1", owner="me", lease_expires_at=utcnow() + timedelta(seconds=30)),
        actor="me",
    )
    running = await store.sessions.transition(
        session.id, expected_version=1, to_status=SessionStatus.RUNNING, actor="me", reason="go"
    )
    return running.id


def _arguments(operation: str) -> dict[str, Any]:
    """Arguments for one call of each store operation (the fault fires before the call)."""
    now = utcnow()
    sid: dict[str, Any] = {"session_id": "s-1"}
    calls: dict[str, dict[str, Any]] = {
        "create_session": {"session": None, "actor": "me"},
        "get_session": sid,
        "list_sessions": {"query": SessionQuery()},
        "count_sessions": {"query": SessionQuery()},
        "transition": sid
        | {
            "expected_version": 1,
            "to_status": SessionStatus.STOPPING,
            "actor": "me",
            "reason": "x",
        },
        "claim": sid
        | {
            "expected_version": 1,
            "owner": "me",
            "lease_expires_at": now,
            "actor": "me",
            "reason": "x",
        },
        "renew_lease": sid | {"owner": "me", "lease_expires_at": now},
        "renew_instance": {"owner": "me", "lease_expires_at": now, "progress": {}},
        "add_event": sid | {"actor": "me", "reason": "x"},
        "list_events": sid,
        "mark_deleted": sid,
        "find_finished": {"ended_before": now, "limit": 10},
        "purge": {"session_ids": ["s-1"], "ended_before": now},
        "reclaim": {"ended_before": now},
        "find_expired": {"now": now},
        "scan_leases": {"now": now},
        "find_owned": {"owner_prefix": "me/"},
        "list_changed": {"since": None},
        "write": {"batches": [], "owner": "me"},
        "write_sessions": {"writes": [[]], "owner": "me"},
        "wait_visible": {"timeout_s": 1.0},
        "note_committed": {},
        "count": sid,
        "seal": sid,
        "position": sid,
        "read_trades": {"query": TickQuery("s-1")},
        "read_orderbook": {"query": TickQuery("s-1")},
        "write_gaps": sid | {"gaps": [], "owner": "me"},
        "read_gaps": sid,
        "read_times": sid | {"symbol": "BTC_USDT", "data_type": DataType.TRADES},
        "read_window": sid | {"start_us": 0, "end_us": 1},
        "count_window": sid | {"start_us": 0, "end_us": 1},
        "span": sid,
        "trade_span": sid | {"symbol": "BTC_USDT"},
        "trade_buckets": {"query": TickQuery("s-1", symbol="BTC_USDT"), "width_us": 1_000_000},
        "write_results": sid | {"results": None, "owner": "me"},
        "append_results": sid | {"part": None, "owner": "me"},
        "read_results_summary": sid,
        "read_result_rows": sid | {"table": "orders"},
    }
    return calls[operation]


#: The result store's methods, by the operation names the store wrappers give them.
RESULT_METHODS = {
    "write_results": "write",
    "append_results": "append",
    "read_results_summary": "summary",
    "read_result_rows": "rows",
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_an_always_failing_store_sees_the_documented_attempts_per_operation(
    run: Run, operation: str
) -> None:
    """The store handle retries every call; a renewal has its own, shorter budget."""

    async def body() -> None:
        faulty = FaultyStore(MemoryStore())
        retried: list[Exception] = []
        store = RetryingStore(faulty, FAST, on_retry=retried.append)
        fault = faulty.fail(operation, times=None)
        if operation in RESULT_METHODS:
            call = getattr(store.results, RESULT_METHODS[operation])
        else:
            face = store.sessions if hasattr(store.sessions, operation) else store.ticks
            call = getattr(face, operation)
        if operation == "write_sessions":  # many sessions' writes: errors are answers
            answers = await call(**_arguments(operation))
            assert [type(a) for a in answers] == [StoreUnavailable]
        else:
            with pytest.raises(StoreUnavailable):
                await call(**_arguments(operation))
        renewal = operation in ("renew_lease", "renew_instance")
        expected = RENEW_ATTEMPTS if renewal else STORE_RETRY_ATTEMPTS
        assert fault.hits == FAST.attempts(operation)[0] == expected
        assert len(retried) == expected - 1  # each retry counted (ticktape_store_retries_total)

    run(body())


def test_open_store_answers_with_the_retry_layer_and_it_never_nests() -> None:
    store = open_store("memory://", FAST)
    assert isinstance(store, RetryingStore) and store.policy is FAST
    assert not isinstance(store.inner, RetryingStore)
    with pytest.raises(TypeError, match="nest"):
        RetryingStore(store)
    faulted = store.over(FaultyStore(store.inner))  # faults under the same, single layer
    assert isinstance(faulted.inner, FaultyStore) and faulted.policy is FAST


def test_an_error_that_is_not_transient_is_not_retried(run: Run) -> None:
    async def body() -> None:
        faulty = FaultyStore(MemoryStore())
        store = RetryingStore(faulty, FAST)
        # a store error that is not transient (a disk full, a corrupt file): no retry
        fault = faulty.fail("transition", times=None, error=StoreError("disk full"))
        with pytest.raises(StoreError, match="disk full"):
            await store.sessions.transition(**_arguments("transition"))
        assert fault.hits == 1

    run(body())


def test_a_stop_request_is_tried_store_attempts_times_in_all(run: Run) -> None:
    """Through the store handle, as the service and the supervisor call it: the stop's
    transition is tried ``store_attempts`` times — not once more per caller."""

    async def body() -> None:
        faulty = FaultyStore(MemoryStore())
        store = RetryingStore(faulty, FAST)
        session_id = await _running(store)
        fault = faulty.fail("transition", times=None)
        with pytest.raises(StoreUnavailable):
            await request_stop(store, session_id, actor="me", reason="user_stop", policy=FAST)
        assert fault.hits == FAST.store_attempts == STORE_RETRY_ATTEMPTS

    run(body())


def test_a_write_that_needed_retries_is_recorded_in_the_sessions_history(run: Run) -> None:
    async def body() -> None:
        faulty = FaultyStore(MemoryStore())
        store = RetryingStore(faulty, FAST, actor="instance-a")
        session_id = await _running(store)
        faulty.fail("transition", times=2, error=StoreBusy("locked"))
        await request_stop(store, session_id, actor="me", reason="user_stop", policy=FAST)
        events = await store.sessions.list_events(session_id)
        noted = [e for e in events if e.reason == Reason.STORE_RETRIED]
        assert len(noted) == 1 and noted[0].actor == "instance-a"
        assert "transition: succeeded after 2 transient error(s)" in (noted[0].detail or "")

    run(body())


def test_a_lost_compare_and_set_is_decided_again_cas_rounds_times(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        store = MemoryStore()
        session_id = await _running(store)
        calls = 0

        async def always_lost(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            raise TransitionRace(session_id, 1)

        monkeypatch.setattr(store.sessions, "transition", always_lost)
        with pytest.raises(SessionConflict):
            await request_stop(store, session_id, actor="me", reason="user_stop", policy=FAST)
        assert calls == FAST.cas_rounds == CAS_ROUNDS

    run(body())


def test_the_end_of_a_run_is_tried_finish_rounds_times_store_attempts(run: Run) -> None:
    """A store that never counts: the supervisor gives up after the documented number of
    attempts (it used to loop until the lease was lost) and lets the reconciler finish."""

    async def body() -> None:
        settings = Settings(
            store_url="memory://", heartbeat_interval_s=0.5, lease_s=30.0, retry=FAST
        )
        async with instances(settings) as add:
            a = await add("a")
            session = await a.create()

            async def running() -> bool:
                current = await a.raw.sessions.get_session(session.id)
                return current.status is SessionStatus.RUNNING

            await eventually(running, timeout_s=10, what="the session to run")
            fault = a.store.fail("seal", times=None)
            await a.service.stop(session.id)
            await eventually(
                lambda: _true(session.id not in a.supervisor.running_ids),
                timeout_s=10,
                what="the supervisor to give up the end of the run",
            )
            assert fault.hits == FAST.finish_rounds * FAST.store_attempts
            assert FAST.finish_rounds == FINISH_ROUNDS
            # nothing was recorded as ended: the session waits for the reconciler
            assert (await a.raw.sessions.get_session(session.id)).status is (SessionStatus.STOPPING)

    run(body())


async def _true(value: bool) -> bool:
    return value


def test_design_doc_states_the_real_bounds() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    policy = RetryPolicy()
    for name, value in [
        ("store_attempts", policy.store_attempts),
        ("cas_rounds", policy.cas_rounds),
        ("finish_rounds", policy.finish_rounds),
        ("renew_attempts", policy.renew_attempts),
        ("busy_attempts", policy.busy_attempts),
    ]:
        assert re.search(rf"`{name}`[^|\n]*\|\s*{value}\b", text), f"{name} = {value} not stated"
