"""A shutdown announces its runs' seals, moves their bound once its stop requests are
recorded, and takes off each run that ends without one (in-memory store;
``TickStore.expect_seals``, ``seals_due_within``, ``seal_not_coming``).

On QuestDB the seals announced are gathered into one count group, which waits until all
of them are queued: a run that ends without a seal (its lease lost, say) must be taken
off, or the others' seals wait for it until the gathering's bound. That bound is half
of the grace left once the stop requests are recorded: the runs drain only from then
on, and at 3 x 1,000 the stop requests alone took half the grace (stop 22).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from ticktape.config import Settings
from ticktape.domain import Session, SessionKind, SessionStatus, utcnow
from ticktape.metrics import Metrics
from ticktape.runtime.handle import RunHandle
from ticktape.runtime.runner import Outcome, RunnerRegistry, RunResult
from ticktape.runtime.supervisor import Supervisor
from ticktape.store.base import Seal
from ticktape.store.memory import MemoryStore
from ticktape.testing import draft_session

Run = Callable[[Coroutine[Any, Any, Any]], Any]
GRACE_S = 20.0
LOSES = "s-loses"  # its runner ends as if its lease was lost: no seal


class _UntilStopped:
    """Ends when its stop is asked: stopped, or (session ``LOSES``) lost."""

    async def run(self, session: Session, handle: RunHandle) -> RunResult:
        await handle.stop.wait()
        return RunResult(Outcome.LOST if session.id == LOSES else Outcome.STOPPED)


def test_a_run_ending_without_its_seal_is_taken_off_the_announcement(run: Run) -> None:
    """Also: the seals are due within half of what is left once the stops are recorded."""

    async def body() -> None:
        store = MemoryStore()
        runners = RunnerRegistry({SessionKind.COLLECT: lambda *_: _UntilStopped()})
        supervisor = Supervisor(store, Settings(instance_name="t"), Metrics(), runners)
        told: list[str] = []
        due: list[float] = []
        expect, seal = store.ticks.expect_seals, store.ticks.seal

        def expect_seals(sessions: int, within_s: float) -> None:
            told.append(f"expect {sessions} within {within_s:g}")
            expect(sessions, within_s)

        def seals_due_within(within_s: float) -> None:
            due.append(within_s)

        async def sealed(session_id: str, *, acknowledged: bool = False) -> Seal:
            told.append(f"seal {session_id}")
            return await seal(session_id, acknowledged=acknowledged)

        store.ticks.expect_seals = expect_seals  # type: ignore[method-assign]
        store.ticks.seal = sealed  # type: ignore[method-assign]
        store.ticks.seals_due_within = seals_due_within  # type: ignore[method-assign]
        store.ticks.seal_not_coming = lambda: told.append("not coming")  # type: ignore[method-assign]
        until = utcnow() + timedelta(seconds=60)
        for sid in ("s-stops", LOSES):
            supervisor.launch(
                await store.sessions.create_session(
                    draft_session(id=sid, owner=supervisor.owner, lease_expires_at=until),
                    actor="t",
                )
            )
        await supervisor.shutdown(timeout_s=GRACE_S)

        # announced for the whole grace, then, the stop requests recorded, the rest of
        # the seals are due within half of what is left
        assert told[0] == f"expect 2 within {GRACE_S:g}", told
        assert len(due) == 1 and 0 < due[0] <= GRACE_S / 2, due
        assert sorted(told[1:]) == ["not coming", "seal s-stops"], told
        stopped = await store.sessions.get_session("s-stops")
        assert stopped.status is SessionStatus.STOPPED, stopped

    run(body())
