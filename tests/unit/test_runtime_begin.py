"""Supervisor's start of a launched session on the in-memory store."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from ticktape.config import Settings
from ticktape.domain import (
    Reason,
    Session,
    SessionStatus,
    utcnow,
)
from ticktape.metrics import Metrics
from ticktape.runners import default_runners
from ticktape.runtime.supervisor import Supervisor
from ticktape.store.memory import MemoryStore
from ticktape.testing import draft_session, eventually

Run = Callable[[Coroutine[Any, Any, Any]], Any]
EVENTUAL_S = 10.0  # the outcome must come; how soon is not a test's business


def test_a_stop_asked_after_the_launch_ends_the_session_without_running_it(run: Run) -> None:
    """A start's first round decides from the session as launched, without reading it
    again: a stop asked in between changed its version, so the transition to running
    fails its compare-and-set, the next round reads the session, finds it stopping and
    ends it stopped — it never runs."""

    async def body() -> None:
        store = MemoryStore()
        supervisor = Supervisor(store, Settings(instance_name="t"), Metrics(), default_runners())
        launched = await store.sessions.create_session(
            draft_session(
                id="s-begin",
                owner=supervisor.owner,
                lease_expires_at=utcnow() + timedelta(seconds=30),
            ),
            actor="t",
        )
        await store.sessions.transition(
            launched.id,
            expected_version=launched.version,
            to_status=SessionStatus.STOPPING,
            actor="t",
            reason=Reason.USER_STOP,
        )
        supervisor.launch(launched)  # the session as created: pending, an older version

        async def ended() -> Session | None:
            current = await store.sessions.get_session(launched.id)
            return current if current.is_terminal else None

        final = await eventually(ended, timeout_s=EVENTUAL_S, what="the session to end")
        assert final.status is SessionStatus.STOPPED
        assert final.started_at is None  # never ran

    run(body())
