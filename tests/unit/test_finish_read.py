"""The end of a run reads its session while its seal counts, not after (in-memory store).

At a shutdown the seal's count waits for the other runs' seals and then scans the tick
tables (QuestDB); a read of the session made only after it queued behind those scans for
the server's network workers. The read goes out first now, and the terminal transition
is still a compare-and-set on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from ticktape.config import Settings
from ticktape.domain import Reason, Session, SessionKind, SessionStatus, utcnow
from ticktape.metrics import Metrics
from ticktape.runtime.handle import RunHandle
from ticktape.runtime.runner import Outcome, RunnerRegistry, RunResult
from ticktape.runtime.supervisor import Supervisor
from ticktape.store.base import Seal
from ticktape.store.memory import MemoryStore
from ticktape.testing import draft_session, eventually

Run = Callable[[Coroutine[Any, Any, Any]], Any]
EVENTUAL_S = 10.0  # the outcome must come; how soon is not a test's business


class _UntilStopped:
    """A runner that records nothing and ends when its stop is asked."""

    async def run(self, session: Session, handle: RunHandle) -> RunResult:
        await handle.stop.wait()
        return RunResult(Outcome.STOPPED)


def test_the_ends_read_of_the_session_does_not_wait_for_its_seal(run: Run) -> None:
    async def body() -> None:
        store = MemoryStore()
        runners = RunnerRegistry({SessionKind.COLLECT: lambda *_: _UntilStopped()})
        supervisor = Supervisor(store, Settings(instance_name="t"), Metrics(), runners)
        sealing = asyncio.Event()
        read_while_sealing = asyncio.Event()
        seal, get = store.ticks.seal, store.sessions.get_session

        async def held_seal(session_id: str, *, acknowledged: bool = False) -> Seal:
            sealing.set()
            # the count of a shutdown, still waiting: it goes on once the session was read
            await asyncio.wait_for(read_while_sealing.wait(), EVENTUAL_S)
            return await seal(session_id, acknowledged=acknowledged)

        async def watched_get(session_id: str) -> Session:
            if sealing.is_set():
                read_while_sealing.set()
            return await get(session_id)

        store.ticks.seal = held_seal  # type: ignore[method-assign]
        store.sessions.get_session = watched_get  # type: ignore[method-assign]
        launched = await store.sessions.create_session(
            draft_session(
                id="s-end",
                owner=supervisor.owner,
                lease_expires_at=utcnow() + timedelta(seconds=30),
            ),
            actor="t",
        )
        supervisor.launch(launched)
        await supervisor.shutdown(timeout_s=EVENTUAL_S * 2)

        async def ended() -> Session | None:
            current = await get(launched.id)
            return current if current.is_terminal else None

        final = await eventually(ended, timeout_s=EVENTUAL_S, what="the session to end")
        assert final.status is SessionStatus.STOPPED, final
        assert final.reason == Reason.SERVER_SHUTDOWN

    run(body())
