"""FaultyStore: chosen calls fail (or are slow), everything else goes through unchanged."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ticktape.domain import DataType, Session, SessionConfig, SessionKind, SessionStatus, utcnow
from ticktape.errors import (
    InvalidTransition,
    SessionNotFound,
    StoreBusy,
    StoreUnavailable,
    ValidationError,
)
from ticktape.store.base import SessionQuery
from ticktape.store.memory import MemoryStore
from ticktape.testing import OPERATIONS, FaultyStore

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def _session() -> Session:
    return Session(
        id="s-1",
        kind=SessionKind.COLLECT,
        status=SessionStatus.PENDING,
        symbols=("BTC_USDT",),
        exchange="sim",
        data_types=(DataType.TRADES,),
        config=SessionConfig(),
        created_at=utcnow(),
        owner="me/1",
    )


@pytest.fixture
def faulty(run: Run) -> FaultyStore:
    store = FaultyStore(MemoryStore(), seed=1)
    run(store.open())
    return store


def _to_running(store: FaultyStore, version: int = 1) -> Coroutine[Any, Any, Session]:
    return store.sessions.transition(
        "s-1",
        expected_version=version,
        to_status=SessionStatus.RUNNING,
        actor="t",
        reason="started",
    )


def test_without_rules_every_call_goes_through(faulty: FaultyStore, run: Run) -> None:
    created = run(faulty.sessions.create_session(_session(), actor="t"))
    assert run(faulty.sessions.get_session("s-1")) == created
    assert run(faulty.inner.sessions.get_session("s-1")) == created
    with pytest.raises(SessionNotFound):  # the inner store's own errors are untouched
        run(faulty.sessions.get_session("nope"))


def test_a_rule_fails_the_chosen_calls_the_chosen_number_of_times(
    faulty: FaultyStore, run: Run
) -> None:
    rule = faulty.fail("create_session", times=2)
    for _ in range(2):
        with pytest.raises(StoreUnavailable, match="injected"):
            run(faulty.sessions.create_session(_session(), actor="t"))
    assert run(faulty.sessions.count_sessions(SessionQuery())) == 0  # nothing was written
    run(faulty.sessions.create_session(_session(), actor="t"))
    assert rule.hits == 2 and rule.calls[0]["session"].id == "s-1"


def test_when_sees_the_arguments_by_name(faulty: FaultyStore, run: Run) -> None:
    run(faulty.sessions.create_session(_session(), actor="t"))
    faulty.fail(
        "transition",
        times=None,
        when=lambda **kw: kw["to_status"] is SessionStatus.STOPPING,
        error=StoreBusy("locked"),
    )
    running = run(_to_running(faulty))
    with pytest.raises(StoreBusy):
        run(
            faulty.sessions.transition(
                "s-1",
                expected_version=running.version,
                to_status=SessionStatus.STOPPING,
                actor="t",
                reason="user_stop",
            )
        )
    assert run(faulty.sessions.get_session("s-1")).status is SessionStatus.RUNNING


def test_after_makes_the_call_happen_and_still_fail(faulty: FaultyStore, run: Run) -> None:
    run(faulty.sessions.create_session(_session(), actor="t"))
    faulty.fail("transition", after=True)
    with pytest.raises(StoreUnavailable):
        run(_to_running(faulty))
    assert run(faulty.sessions.get_session("s-1")).status is SessionStatus.RUNNING
    with pytest.raises(InvalidTransition):  # a blind retry meets the state it moved to
        run(_to_running(faulty))


def test_remove_and_clear_end_rules(faulty: FaultyStore, run: Run) -> None:
    rule = faulty.fail("get_session", times=None)
    rule.remove()
    with pytest.raises(SessionNotFound):
        run(faulty.sessions.get_session("s-1"))
    faulty.fail("count_sessions", times=None)
    faulty.clear()
    assert faulty.rules == []
    assert run(faulty.sessions.count_sessions(SessionQuery())) == 0


def test_delay_slows_a_call_down_and_lets_it_through(faulty: FaultyStore, run: Run) -> None:
    faulty.delay("count_sessions", 0.2)

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await faulty.sessions.count_sessions(SessionQuery())
        return loop.time() - started

    assert run(timed()) >= 0.2
    assert run(timed()) < 0.2  # times=1


def test_unknown_operations_are_refused(faulty: FaultyStore) -> None:
    with pytest.raises(ValueError, match="unknown store operation"):
        faulty.fail("transtion")


def test_every_contract_method_can_be_faulted() -> None:
    from ticktape.store.base import ResultStore, SessionStore, TickStore
    from ticktape.store.intercept import RESULT_OPERATIONS

    public = {
        name
        for cls in (SessionStore, TickStore)
        for name, member in vars(cls).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    }
    assert "seal" in public  # a contract method with a default body counts too
    # the result store's methods carry their own names (``write`` is ``write_results``)
    results = {
        name
        for name, member in vars(ResultStore).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    }
    assert results == {"write", "append", "summary", "rows"}
    assert public | RESULT_OPERATIONS == OPERATIONS


def test_from_spec_fails_at_the_given_rate(run: Run) -> None:
    store = FaultyStore.from_spec(MemoryStore(), "count_sessions=0.5, get_session=0", seed=3)
    failures = 0
    for _ in range(400):
        try:
            run(store.sessions.count_sessions(SessionQuery()))
        except StoreUnavailable:
            failures += 1
    assert 140 < failures < 260
    with pytest.raises(SessionNotFound):  # probability 0: never injected
        run(store.sessions.get_session("x"))


def test_from_spec_after_mode(run: Run) -> None:
    store = FaultyStore.from_spec(MemoryStore(), "create_session@after=1")
    with pytest.raises(StoreUnavailable):
        run(store.sessions.create_session(_session(), actor="t"))
    assert run(store.inner.sessions.get_session("s-1")).id == "s-1"


@pytest.mark.parametrize("spec", ["write", "nope=0.1", "write=2", "write=x", "write@before=0.1"])
def test_from_spec_refuses_malformed_specs(spec: str) -> None:
    with pytest.raises(ValidationError):
        FaultyStore.from_spec(MemoryStore(), spec)
