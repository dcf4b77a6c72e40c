"""The supervisor: runs this instance's sessions, heartbeats their leases, reaps orphans.

Memory here holds runtime handles keyed by session id (tasks, stop/lost events,
counts of what was written) — never a copy of a session's state. Every decision
reads the store; every state change is written to the store before it is acted on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from datetime import datetime, timedelta

from ticktape.config import SHUTDOWN_TIMEOUT_S, Settings
from ticktape.domain import Reason, Session, SessionStatus, Stats, utcnow
from ticktape.errors import (
    InvalidTransition,
    LeaseLost,
    SessionNotFound,
    StoreError,
    TicktapeError,
    TransitionRace,
)
from ticktape.metrics import Metrics
from ticktape.retry import retry_transient
from ticktape.runners.collect import CollectRunner, Outcome, RunHandle, RunResult
from ticktape.runtime.transitions import MAX_CAS_ROUNDS, request_stop
from ticktape.store.base import Store

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, store: Store, settings: Settings, metrics: Metrics) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        # "<instance>/<incarnation>": a restarted instance recognises its own orphans
        self._instance = settings.instance
        self._owner = f"{self._instance}/{uuid.uuid4().hex[:12]}"
        self._handles: dict[str, RunHandle] = {}
        self._renewed: dict[str, float] = {}  # session id -> monotonic time of last renewal
        self._loops: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def running_ids(self) -> list[str]:
        """Sessions with a live runner on this instance (for health and tests)."""
        return list(self._handles)

    def _lease_until(self) -> datetime:
        return utcnow() + timedelta(seconds=self._settings.lease_s)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Reap orphans (our own previous incarnation's at once), then start the loops."""
        await self.reconcile(startup=True)
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="ticktape-heartbeat"),
            asyncio.create_task(self._reconcile_loop(), name="ticktape-reconciler"),
        ]

    async def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop every session this instance runs (reason ``server_shutdown``) and wait."""
        self._closing = True
        for session_id, handle in list(self._handles.items()):
            try:
                await request_stop(
                    self._store, session_id, actor=self._owner, reason=Reason.SERVER_SHUTDOWN
                )
            except TicktapeError as exc:
                log.error("session %s: could not record shutdown stop: %s", session_id, exc)
            handle.stop.set()
        tasks = [h.task for h in self._handles.values() if h.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                log.error(
                    "task %s did not stop within %.0fs; cancelling", task.get_name(), timeout_s
                )
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    # ------------------------------------------------------------------ runtime protocol

    def launch(self, session: Session) -> None:
        handle = RunHandle(session.id)
        self._handles[session.id] = handle
        self._renewed[session.id] = time.monotonic()
        handle.task = asyncio.create_task(self._run(session, handle), name=f"session-{session.id}")

    def request_stop(self, session_id: str) -> None:
        handle = self._handles.get(session_id)
        if handle is not None:
            handle.stop.set()

    # ------------------------------------------------------------------ one session

    async def _run(self, session: Session, handle: RunHandle) -> None:
        try:
            running = await self._begin(session.id)
            if running is None:
                return
            result = await CollectRunner(
                self._store, self._settings, self._metrics, self._owner
            ).run(running, handle)
            if result.outcome is Outcome.LOST:
                self._metrics.zombies_stopped.inc()
                log.warning("session %s: lease lost, runner stopped itself", session.id)
                return
            await self._finish(handle, result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("session %s failed", session.id)
            await self._fail(session.id, Reason.ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            self._handles.pop(session.id, None)
            self._renewed.pop(session.id, None)

    async def _begin(self, session_id: str) -> Session | None:
        """``pending`` → ``running``; a stop asked before the start ends it here instead."""
        for _ in range(MAX_CAS_ROUNDS):
            current = await self._store.sessions.get_session(session_id)
            if current.owner != self._owner or current.is_terminal:
                return None
            if current.status is SessionStatus.RUNNING:
                return current
            if current.status is SessionStatus.STOPPING:
                await self._finalise(
                    current, SessionStatus.STOPPED, current.reason or Reason.USER_STOP, Stats()
                )
                return None
            try:
                return await retry_transient(
                    lambda c=current: self._store.sessions.transition(  # type: ignore[misc]
                        c.id,
                        expected_version=c.version,
                        to_status=SessionStatus.RUNNING,
                        actor=self._owner,
                        reason=Reason.STARTED,
                        lease_expires_at=self._lease_until(),
                    ),
                    what="start session",
                    on_retry=self._metrics.store_retry,
                )
            except (TransitionRace, InvalidTransition):
                continue
        return None

    async def _finish(self, handle: RunHandle, result: RunResult) -> None:
        """Write the end of a run: stats from what is actually stored, then the terminal state."""
        counts = await retry_transient(
            lambda: self._store.ticks.count(handle.session_id),
            what="count ticks",
            on_retry=self._metrics.store_retry,
        )
        if counts != handle.written:
            await self._store.sessions.add_event(
                handle.session_id,
                actor=self._owner,
                reason="count_mismatch",
                detail=f"runner wrote {handle.written}, store holds {counts}",
            )
        stats = Stats(counts.trades, counts.orderbook, handle.unstored)
        for _ in range(MAX_CAS_ROUNDS):
            current = await self._store.sessions.get_session(handle.session_id)
            if current.is_terminal or current.owner != self._owner:
                return
            if result.error is not None:
                target, reason, detail = SessionStatus.FAILED, Reason.ERROR, result.error
            elif current.status is SessionStatus.STOPPING:
                target, reason, detail = (
                    SessionStatus.STOPPED,
                    current.reason or Reason.USER_STOP,
                    None,
                )
            elif result.outcome is Outcome.FINISHED:
                target, reason, detail = SessionStatus.COMPLETED, Reason.DURATION_REACHED, None
            else:  # stopped locally without a recorded request: record it first
                current = await request_stop(
                    self._store, current.id, actor=self._owner, reason=Reason.USER_STOP
                )
                continue
            try:
                await self._finalise(current, target, reason, stats, detail)
                return
            except (TransitionRace, InvalidTransition):
                continue

    async def _finalise(
        self,
        current: Session,
        target: SessionStatus,
        reason: str,
        stats: Stats,
        detail: str | None = None,
    ) -> Session:
        return await retry_transient(
            lambda: self._store.sessions.transition(
                current.id,
                expected_version=current.version,
                to_status=target,
                actor=self._owner,
                reason=reason,
                detail=detail,
                stats=stats,
                lease_expires_at=None,
            ),
            what=f"mark session {target.value}",
            on_retry=self._metrics.store_retry,
        )

    async def _fail(self, session_id: str, reason: str, detail: str) -> None:
        for _ in range(MAX_CAS_ROUNDS):
            try:
                current = await self._store.sessions.get_session(session_id)
                if current.is_terminal:
                    return
                counts = await self._store.ticks.count(session_id)
                stats = Stats(counts.trades, counts.orderbook, current.stats.errors)
                await self._finalise(current, SessionStatus.FAILED, reason, stats, detail)
                return
            except (TransitionRace, InvalidTransition):
                continue
            except TicktapeError as exc:
                log.error(
                    "session %s: could not record failure (%s); the reconciler will "
                    "finalise it when its lease expires",
                    session_id,
                    exc,
                )
                return

    # ------------------------------------------------------------------ heartbeat

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_interval_s)
            await self.heartbeat()

    async def heartbeat(self) -> None:
        """Renew the lease of every session run here; act on what the store answers."""
        for session_id, handle in list(self._handles.items()):
            stats = Stats(handle.written.trades, handle.written.orderbook, handle.unstored)
            try:
                current = await self._store.sessions.renew_lease(
                    session_id,
                    owner=self._owner,
                    lease_expires_at=self._lease_until(),
                    stats=stats,
                )
            except (LeaseLost, SessionNotFound) as exc:
                log.warning("session %s: %s", session_id, exc)
                handle.lost.set()
                continue
            except StoreError as exc:
                self._metrics.lease_renew_failures.inc()
                since = time.monotonic() - self._renewed.get(session_id, 0.0)
                log.error(
                    "session %s: lease renewal failed (%s), last renewed %.1fs ago",
                    session_id,
                    exc,
                    since,
                )
                if since >= self._settings.lease_s:  # cannot prove we own it: stop (fencing)
                    handle.lost.set()
                continue
            self._renewed[session_id] = time.monotonic()
            if current.status is SessionStatus.STOPPING:
                handle.stop.set()

    # ------------------------------------------------------------------ reconciler

    async def _reconcile_loop(self) -> None:
        while True:
            interval = self._settings.reconcile_interval_s
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            try:
                await self.reconcile()
            except TicktapeError as exc:
                log.error("reconciler: %s", exc)

    async def reconcile(self, *, startup: bool = False) -> int:
        """Finalise sessions whose owner is gone; return how many were reaped.

        Expired leases are reaped on every instance. At start-up, sessions owned by
        an earlier incarnation of this instance are reaped at once: it is dead.
        """
        now = utcnow()
        expired = {s.id: s for s in await self._store.sessions.find_expired(now)}
        restarted: dict[str, Session] = {}
        if startup:
            for s in await self._store.sessions.find_owned(f"{self._instance}/"):
                if s.owner != self._owner and s.id not in expired:
                    restarted[s.id] = s
        reaped = 0
        for session in expired.values():
            if session.id in self._handles and session.owner == self._owner:
                continue  # ours and alive: the heartbeat decides (it self-fences if it must)
            reaped += await self._reap(session, now, force=False)
        for session in restarted.values():
            reaped += await self._reap(session, now, force=True)
        return reaped

    async def _reap(self, session: Session, now: datetime, *, force: bool) -> bool:
        handle = self._handles.get(session.id)
        if handle is not None:  # tear down anything still running for it here
            handle.lost.set()
        counts = await self._store.ticks.count(session.id)
        stats = Stats(counts.trades, counts.orderbook, session.stats.errors)
        expiry = session.lease_expires_at
        detail = f"owner {session.owner} " + (
            "restarted"
            if force
            else f"lease expired at {expiry.isoformat() if expiry else 'never set'}"
        )
        try:
            await self._store.sessions.transition(
                session.id,
                expected_version=session.version,
                to_status=SessionStatus.FAILED,
                actor=self._owner,
                reason=Reason.OWNER_LOST,
                detail=detail,
                stats=stats,
                lease_expires_at=None,
                lease_expired_before=None if force else now,
            )
        except (TransitionRace, InvalidTransition):
            return False  # renewed, stopped or reaped by someone else meanwhile
        self._metrics.orphans_reaped.inc()
        log.warning("session %s: reaped (%s)", session.id, detail)
        return True
