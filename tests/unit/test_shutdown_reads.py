"""A shutdown's stop requests are decided on one read of the instance's owned sessions
(``SessionStore.find_owned``), whatever their number: a read per session queued the
stops of 1,000 sessions behind 1,000 reads (docs/benchmarks.md, stop 24). A session
changed between that read and its compare-and-set loses it, is read again and is still
stopped; a resumable one is handed over on the same read (in-memory store)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from ticktape.config import Settings
from ticktape.domain import (
    OwnerLossPolicy,
    Reason,
    Session,
    SessionConfig,
    SessionKind,
    SessionStatus,
    utcnow,
)
from ticktape.errors import StoreUnavailable
from ticktape.metrics import Metrics
from ticktape.runtime.handle import RunHandle
from ticktape.runtime.runner import Outcome, RunnerRegistry, RunResult
from ticktape.runtime.supervisor import Supervisor
from ticktape.store.intercept import InterceptedStore
from ticktape.store.memory import MemoryStore
from ticktape.testing import draft_session

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, Any]], Any]
READS = frozenset({"get_session", "find_owned", "list_sessions", "find_expired", "scan_leases"})


class _Counted(InterceptedStore):
    """Counts the reads of sessions; once ``stops_due`` stop requests are recorded, opens
    ``requested`` and keeps the reads made until then in ``reads_to_request``. With
    ``after_listing``, runs it once the first ``find_owned`` has answered; with
    ``fail_listing``, every ``find_owned`` fails."""

    def __init__(self, inner: MemoryStore, stops_due: int, *, fail_listing: bool) -> None:
        super().__init__(inner)
        self.fail_listing = fail_listing
        self.reads: list[str] = []
        self.reads_to_request: list[str] | None = None
        self.requested = asyncio.Event()
        self.stops_due = stops_due
        self.after_listing: Callable[[], Awaitable[None]] | None = None

    async def intercept(self, operation: str, fn: Callable[..., Awaitable[T]], **kwargs: Any) -> T:
        if operation in READS:
            self.reads.append(operation)
        if operation == "find_owned" and self.fail_listing:
            raise StoreUnavailable("listing refused")
        result = await fn(**kwargs)
        if operation == "find_owned" and self.after_listing is not None:
            hook, self.after_listing = self.after_listing, None
            await hook()
        if operation == "transition" and kwargs["to_status"] is SessionStatus.STOPPING:
            self.stops_due -= 1
            if self.stops_due == 0:
                self.reads_to_request = list(self.reads)
                self.requested.set()
        return result


class _UntilAllRequested:
    """Stops or hands over when asked, once every stop request is recorded: the runs'
    ends (which read each session) come after the stop phase."""

    def __init__(self, requested: asyncio.Event) -> None:
        self._requested = requested

    async def run(self, session: Session, handle: RunHandle) -> RunResult:
        stop, handover = (asyncio.ensure_future(e.wait()) for e in (handle.stop, handle.handover))
        await asyncio.wait([stop, handover], return_when=asyncio.FIRST_COMPLETED)
        for waiting in (stop, handover):
            waiting.cancel()
        await self._requested.wait()
        return RunResult(Outcome.HANDED_OVER if handle.handover.is_set() else Outcome.STOPPED)


async def _shutdown(
    sessions: int, resumable: int = 0, *, change_one: bool = False, fail_listing: bool = False
) -> tuple[_Counted, MemoryStore, list[str]]:
    """``sessions`` running on one instance (the first ``resumable`` opting in to resume),
    shut down; with ``change_one``, the first stopped one is changed (a claim back by its
    own owner: a new version, the same status) just after the listing."""
    inner = MemoryStore()
    store = _Counted(inner, stops_due=sessions - resumable, fail_listing=fail_listing)
    runners = RunnerRegistry({SessionKind.COLLECT: lambda *_: _UntilAllRequested(store.requested)})
    supervisor = Supervisor(store, Settings(instance_name="t"), Metrics(), runners)
    until = utcnow() + timedelta(seconds=60)
    ids = []
    for n in range(sessions):
        policy = OwnerLossPolicy.RESUME if n < resumable else OwnerLossPolicy.FAIL
        draft = draft_session(
            owner=supervisor.owner,
            lease_expires_at=until,
            config=SessionConfig(on_owner_loss=policy),
        )
        created = await inner.sessions.create_session(draft, actor="t", start_lease_until=until)
        ids.append(created.id)
        supervisor.launch(created)
    if change_one:
        changed = ids[resumable]

        async def claim_back() -> None:
            current = await inner.sessions.get_session(changed)
            await inner.sessions.claim(
                changed,
                expected_version=current.version,
                owner=supervisor.owner,
                lease_expires_at=until,
                actor="t",
                reason="changed meanwhile",
            )

        store.after_listing = claim_back
    store.reads.clear()
    await supervisor.shutdown(timeout_s=20.0)
    assert supervisor.running_ids == []
    return store, inner, ids


@pytest.mark.parametrize("sessions", [3, 40])
def test_a_shutdowns_stop_requests_make_one_read_whatever_the_sessions(
    run: Run, sessions: int
) -> None:
    store, inner, ids = run(_shutdown(sessions, resumable=2))
    # one listing decided every stop and hand-over (a read per session before)
    assert store.reads_to_request == ["find_owned"], store.reads_to_request
    for sid in ids[:2]:
        handed = run(inner.sessions.get_session(sid))
        assert handed.status is SessionStatus.RUNNING and handed.lease_expires_at is None
    for sid in ids[2:]:
        stopped = run(inner.sessions.get_session(sid))
        assert stopped.status is SessionStatus.STOPPED, stopped
        assert stopped.reason == Reason.SERVER_SHUTDOWN


def test_a_session_changed_after_the_listing_is_read_again_and_still_stopped(
    run: Run,
) -> None:
    store, inner, ids = run(_shutdown(5, resumable=1, change_one=True))
    # its compare-and-set on the listed version lost: that one session is read again
    assert store.reads_to_request == ["find_owned", "get_session"], store.reads_to_request
    changed = run(inner.sessions.get_session(ids[1]))
    assert changed.status is SessionStatus.STOPPED, changed
    assert changed.reason == Reason.SERVER_SHUTDOWN
    events = [(e.reason, e.to_status) for e in run(inner.sessions.list_events(ids[1]))]
    assert events[2:4] == [
        ("changed meanwhile", SessionStatus.RUNNING),
        (Reason.SERVER_SHUTDOWN, SessionStatus.STOPPING),
    ], events


def test_a_failed_listing_falls_back_to_a_read_per_stop(run: Run) -> None:
    store, inner, ids = run(_shutdown(4, fail_listing=True))
    assert store.reads_to_request == ["find_owned"] + ["get_session"] * 4
    for sid in ids:
        assert run(inner.sessions.get_session(sid)).status is SessionStatus.STOPPED
