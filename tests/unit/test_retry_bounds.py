"""Every retry is bounded, and the bounds are the ones docs/design.md states.

A store that always fails is called exactly as often as ``RetryPolicy`` says: a
transient error ``store_attempts`` times per store call, a lost compare-and-set
``cas_rounds`` times, the end of a run ``finish_rounds`` x ``store_attempts`` times.
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
    STORE_RETRY_ATTEMPTS,
    RetryPolicy,
    Settings,
)
from ticktape.domain import (
    DataType,
    Session,
    SessionConfig,
    SessionKind,
    SessionStatus,
    utcnow,
)
from ticktape.errors import SessionConflict, StoreUnavailable, TransitionRace
from ticktape.runtime.transitions import request_stop
from ticktape.store import Store
from ticktape.store.memory import MemoryStore
from ticktape.testing import FaultyStore, eventually, instances

Run = Callable[[Coroutine[Any, Any, Any]], Any]
FAST = RetryPolicy(store_base_s=0.0001, store_max_s=0.0005)
DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"


async def _running(store: Store) -> str:
    """A running session in ``store``, written directly (no runtime)."""
    now = utcnow()
    session = await store.sessions.create_session(
        Session(
            id="s-1",
            kind=SessionKind.COLLECT,
            status=SessionStatus.PENDING,
            symbols=("BTC_USDT",),
            exchange="sim",
            data_types=(DataType.TRADES,),
            config=SessionConfig(),
            created_at=now,
            owner="me",
            lease_expires_at=now + timedelta(seconds=30),
        ),
        actor="me",
    )
    running = await store.sessions.transition(
        session.id, expected_version=1, to_status=SessionStatus.RUNNING, actor="me", reason="go"
    )
    return running.id


def test_a_transient_error_is_tried_store_attempts_times_in_all(run: Run) -> None:
    async def body() -> None:
        store = FaultyStore(MemoryStore())
        session_id = await _running(store)
        fault = store.fail("transition", times=None)
        with pytest.raises(StoreUnavailable):
            await request_stop(store, session_id, actor="me", reason="user_stop", policy=FAST)
        assert fault.hits == FAST.store_attempts == STORE_RETRY_ATTEMPTS

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
    ]:
        assert re.search(rf"`{name}`[^|\n]*\|\s*{value}\b", text), f"{name} = {value} not stated"
