"""The supervisor: runs this instance's sessions, from their start to their end.

Memory here holds runtime handles keyed by session id (tasks, stop/lost events,
counts of what was written) — never a copy of a session's state. Every decision
reads the store; every state change is written to the store before it is acted on.

Leases are kept by :mod:`ticktape.runtime.leases`, orphans found by
:mod:`ticktape.runtime.reconciler`; the supervisor wires them together and owns
each session's task: begin (``pending`` → ``running``), run, and write the end
(``stopped`` / ``completed`` / ``failed``) once the data is stored — or, on
shutdown, hand a resumable session over to another instance.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import TypeVar

from ticktape.config import SHUTDOWN_TIMEOUT_S, Settings
from ticktape.domain import Note, Reason, Session, SessionStatus, Stats
from ticktape.errors import (
    InvalidTransition,
    LeaseLost,
    StoreError,
    TicktapeError,
    TransitionRace,
)
from ticktape.metrics import Metrics
from ticktape.phases import log_phase
from ticktape.runtime.handle import RunHandle
from ticktape.runtime.leases import LeaseKeeper
from ticktape.runtime.reconciler import Reconciler, is_resumable
from ticktape.runtime.runner import Outcome, RunnerRegistry, RunResult
from ticktape.store.base import Seal, Store
from ticktape.store.transitions import note, request_stop

T = TypeVar("T")
STORE_FAULTS_REMEMBERED = 10_000  # sessions whose store fault is kept for the reaper
log = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self, store: Store, settings: Settings, metrics: Metrics, runners: RunnerRegistry
    ) -> None:
        """``runners`` picks each session's runner by kind (``ticktape.runners``)."""
        self._store = store
        self._runners = runners
        self._settings = settings
        self._metrics = metrics
        # "<instance>/<incarnation>": a restarted instance recognises its own orphans
        self._instance = settings.instance
        self._owner = f"{self._instance}/{uuid.uuid4().hex[:12]}"
        self._handles: dict[str, RunHandle] = {}
        self._leases = LeaseKeeper(store, settings, metrics, self._owner)
        self._reconciler = Reconciler(
            store,
            settings,
            metrics,
            owner=self._owner,
            instance=self._instance,
            leases=self._leases,
            host=self,
        )
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._reconcile_task: asyncio.Task[None] | None = None
        self._closing = False
        # Sessions whose runner here stopped because the store failed past the lease, with
        # the store's error: the reaper names it (not owner_lost) once the store is back.
        self._store_faults: OrderedDict[str, str] = OrderedDict()
        # While shutting down: when it began (loop time) and, in seconds since, when each
        # run's last flush was done and when its end (or hand-over) was written — figures
        # for the shutdown's phase lines, no session's state.
        self._stop_began: float | None = None
        # The runs whose seal the shutdown announced (``TickStore.expect_seals``) and that
        # have not sealed yet: one that ends without a seal is taken off the announcement.
        self._seals_owed: set[str] = set()
        self._drained: list[float] = []
        self._ended: list[float] = []

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def running_ids(self) -> list[str]:
        """Sessions with a live runner on this instance (for health and tests)."""
        return list(self._handles)

    @property
    def handles(self) -> Mapping[str, RunHandle]:
        return self._handles

    def store_fault(self, session_id: str) -> str | None:
        return self._store_faults.get(session_id)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """Every task this supervisor runs: its loops and its sessions' tasks."""
        loops = [t for t in (self._heartbeat_task, self._reconcile_task) if t is not None]
        return loops + [h.task for h in self._handles.values() if h.task is not None]

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Reap orphans (our own previous incarnation's at once), then start the loops."""
        await self.reconcile(startup=True)
        self._heartbeat_task = asyncio.create_task(self._leases.loop(), name="ticktape-heartbeat")
        self._reconcile_task = asyncio.create_task(
            self._reconciler.loop(), name="ticktape-reconciler"
        )

    async def reconcile(self, *, startup: bool = False) -> int:
        return await self._reconciler.reconcile(startup=startup)

    async def heartbeat(self) -> None:
        await self._leases.heartbeat()

    async def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop this instance's sessions, or hand the resumable ones over, and wait.

        Non-resumable sessions are stopped with reason ``server_shutdown``. A
        resumable one stops recording, flushes, and releases its lease so that a
        live instance claims it at once and resumes it.
        """
        self._closing = True
        # First stop looking for orphans: this instance must not claim what it releases.
        await _cancel(self._reconcile_task)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._stop_began = loop.time()
        # Every run ending here seals its ticks (stopped or handed over): told how many,
        # the store can count them together (on QuestDB, one read of the tick tables).
        # They come once their stop requests are recorded (within half the grace, below),
        # and then within half of what is left (``seals_due_within``).
        self._seals_owed = set(self._handles)
        self._store.ticks.expect_seals(len(self._seals_owed), timeout_s)

        async def stop_one(session_id: str, handle: RunHandle) -> None:
            try:
                listed = await asyncio.shield(owned)
                read = listed.get(session_id) if listed is not None else None
                if listed is None:
                    read = await self._read_for_hand_over(handle)
                if read is not None and handle.resumable and self._hands_over(read):
                    handle.handover.set()
                    return
                handle.stop_reason = Reason.SERVER_SHUTDOWN
                await request_stop(
                    self._store,
                    session_id,
                    actor=self._owner,
                    reason=Reason.SERVER_SHUTDOWN,
                    policy=self._settings.retry,
                    read=read,
                )
            except TicktapeError as exc:
                log.error("session %s: could not record shutdown stop: %s", session_id, exc)
            handle.stop.set()

        # All at once and within half the timeout: with the store failing, one retried
        # stop per session in turn would make shutdown as long as the session count.
        handles = list(self._handles.items())
        began = loop.time()
        # One read of every session this instance owns decides each hand-over and is
        # each stop's first compare-and-set's, whatever the number of sessions; a session
        # it does not list (ended, or another's by now), or every one if the listing
        # failed, is read by its own stop as before.
        owned = asyncio.ensure_future(self._read_owned() if handles else _no_listing())
        stops = [asyncio.create_task(stop_one(sid, h)) for sid, h in handles]
        if stops:
            _done, late = await asyncio.wait(stops, timeout=timeout_s / 2)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            for _sid, handle in handles:
                if not handle.handover.is_set():
                    handle.stop.set()
            owned.cancel()
            await asyncio.gather(owned, return_exceptions=True)
        requested = loop.time() - began
        self._store.ticks.seals_due_within(max(0.0, deadline - loop.time()) / 2)
        if handles:
            handed = sum(1 for _sid, h in handles if h.handover.is_set())
            log_phase(
                log,
                "stops",
                sessions=len(handles),
                handed_over=handed,
                unrecorded=sum(1 for t in stops if t.cancelled() or t.exception() is not None),
                at_s=requested,
            )
        tasks = [h.task for h in self._handles.values() if h.task is not None]
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            left = max(0.0, deadline - loop.time())
            _done, pending = await asyncio.wait(tasks, timeout=left)
            for task in pending:
                log.error(
                    "task %s did not stop within %.0fs; cancelling", task.get_name(), timeout_s
                )
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if handles:
            for name, times in (("drains", self._drained), ("ends", self._ended)):
                log_phase(
                    log,
                    name,
                    runs=len(times),
                    first_s=min(times, default=0.0),
                    last_s=max(times, default=0.0),
                )
            log_phase(log, "shutdown", cancelled=len(pending), at_s=loop.time() - began)
        self._store.ticks.seals_done()
        await _cancel(self._heartbeat_task)

    async def _read_owned(self) -> dict[str, Session] | None:
        """The non-terminal sessions this instance owns as stored now, by id, in one read
        (``SessionStore.find_owned``); None if the read failed (each stop reads alone)."""
        try:
            found = await self._store.sessions.find_owned(self._owner)
        except TicktapeError as exc:
            log.warning("shutdown: could not list this instance's sessions: %s", exc)
            return None
        # the prefix may match a longer token: an instance named after this one's
        return {s.id: s for s in found if s.owner == self._owner}

    async def _read_for_hand_over(self, handle: RunHandle) -> Session | None:
        """The session as stored now, if it may be handed over; None if it is not
        resumable, or the read failed (cannot tell: stopping is the safe choice)."""
        if not handle.resumable:
            return None
        try:
            return await self._store.sessions.get_session(handle.session_id)
        except TicktapeError:
            return None

    def _hands_over(self, session: Session) -> bool:
        return (
            is_resumable(session)
            and session.owner == self._owner
            and session.status in (SessionStatus.PENDING, SessionStatus.RUNNING)
        )

    # ------------------------------------------------------------------ runtime protocol

    def launch(self, session: Session, *, resumed: bool = False) -> None:
        """Run a session this instance owns (just created, or claimed with ``resumed``)."""
        if session.id in self._handles:
            return
        handle = RunHandle(session.id, resumed=resumed, resumable=is_resumable(session))
        self._handles[session.id] = handle
        self._leases.track(handle)
        self._metrics.local_runners.set(len(self._handles))
        handle.task = asyncio.create_task(self._run(session, handle), name=f"session-{session.id}")

    def start_lease_until(self) -> datetime | None:
        """A new session is launched at once (``SessionService.create``): its start is
        written with its create, and ``_begin`` finds it ``running``. None once closing."""
        return None if self._closing else self._leases.lease_until()

    def request_stop(self, session_id: str) -> None:
        handle = self._handles.get(session_id)
        if handle is not None:
            handle.stop.set()

    def _release_handle(self, session_id: str, handle: RunHandle | None = None) -> None:
        """Forget the session's runner here. With ``handle``, only if it is still that
        run's: a self-stopped runner finishes its notes after this instance may have
        claimed the session back and launched a new runner, whose handle and lease
        must stay (releasing them left the new runner unfenced, writing beside a third)."""
        if handle is not None and self._handles.get(session_id) is not handle:
            return
        self._handles.pop(session_id, None)
        self._leases.untrack(session_id)
        self._metrics.local_runners.set(len(self._handles))

    # ------------------------------------------------------------------ one session

    async def _run(self, session: Session, handle: RunHandle) -> None:
        try:
            try:
                running = await self._begin(session, fresh=not handle.resumed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("session %s could not start", session.id)
                await self._fail(session.id, Reason.START_FAILED, f"{type(exc).__name__}: {exc}")
                return
            if running is None:
                return
            runner = self._runners.create(
                running.kind, self._store, self._settings, self._metrics, self._owner
            )
            result = await runner.run(running, handle)
            self._stop_clock(self._drained)
            if result.outcome is Outcome.LOST:
                await self._stopped_as_zombie(handle, result)
            elif result.outcome is Outcome.HANDED_OVER:
                await self._hand_over(handle, result)
            else:
                await self._finish(handle, result)
            self._stop_clock(self._ended)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("session %s failed", session.id)
            await self._fail(session.id, Reason.ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            self._release_handle(session.id, handle)
            if session.id in self._seals_owed:  # ended without the seal announced for it
                self._seals_owed.discard(session.id)
                self._store.ticks.seal_not_coming()

    def _stop_clock(self, times: list[float]) -> None:
        """While shutting down: note now, in seconds since the shutdown began."""
        if self._stop_began is not None:
            times.append(asyncio.get_running_loop().time() - self._stop_began)

    async def _seal(self, session_id: str, *, acknowledged: bool = False) -> Seal:
        """Count the stored ticks for the transition that ends this run (store.base.Seal);
        ``acknowledged``: the run's every tick write was (``RunHandle.acknowledged``)."""
        self._seals_owed.discard(session_id)
        return await self._store.ticks.seal(session_id, acknowledged=acknowledged)

    async def _begin(self, launched: Session, *, fresh: bool = False) -> Session | None:
        """``pending`` → ``running``; a stop asked before the start ends it here instead.

        A ``pending`` session's first round starts from ``launched`` (as this instance
        just created or claimed it) instead of reading it again: all that round can do
        is the transition to ``running``, a compare-and-set on the version, which fails
        if anything changed since (a stop asked meanwhile); every later round reads.
        A ``fresh`` one (just created here) that is ``running`` already had its start
        written with its create: it runs as written, as if the transition had just
        been made here (a stop asked meanwhile reaches its runner as any later one)."""
        started = fresh and launched.status is SessionStatus.RUNNING
        known = launched if launched.status is SessionStatus.PENDING or started else None
        for _ in range(self._settings.retry.cas_rounds):
            current = known or await self._store.sessions.get_session(launched.id)
            known = None
            if current.owner != self._owner or current.is_terminal:
                return None
            if current.status is SessionStatus.RUNNING:
                return current
            if current.status is SessionStatus.STOPPING:
                seal = await self._seal(current.id)  # no ticks, unless a claimed session
                stats = seal.counts.as_stats(current.stats.errors)
                reason = current.reason or Reason.USER_STOP
                try:
                    await self._finalise(current, SessionStatus.STOPPED, reason, stats, seal=seal)
                except (TransitionRace, InvalidTransition):
                    continue
                return None
            try:
                return await self._store.sessions.transition(
                    current.id,
                    expected_version=current.version,
                    to_status=SessionStatus.RUNNING,
                    actor=self._owner,
                    reason=Reason.STARTED,
                    lease_expires_at=self._leases.lease_until(),
                )
            except (TransitionRace, InvalidTransition):
                continue
        return None

    async def _finish(self, handle: RunHandle, result: RunResult) -> None:
        """Write the end of a run: ``RetryPolicy.finish_rounds`` rounds at most (each store
        call of a round retried by the store handle); stops early if the lease is lost.

        The handle stays registered meanwhile, so heartbeats keep the lease: the
        session is never left "stopped here, running in the store". If every round
        fails, the handle is released, the lease expires, and the reconciler
        finalises the session from the store (counted there, as here).
        """
        retry = self._settings.retry
        delay = retry.store_base_s
        for round_ in range(1, retry.finish_rounds + 1):
            try:
                await self._finish_once(handle, result)
                return
            except StoreError as exc:
                if handle.lost.is_set():
                    log.error(
                        "session %s: could not record its end (%s) and lost its lease; "
                        "the reconciler finalises it",
                        handle.session_id,
                        exc,
                    )
                    return
                if round_ == retry.finish_rounds:
                    log.error(
                        "session %s: could not record its end in %d rounds (%s); the "
                        "reconciler finalises it once its lease expires",
                        handle.session_id,
                        round_,
                        exc,
                    )
                    return
                log.error(
                    "session %s: could not record its end (%s); retrying in %.2fs",
                    handle.session_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, retry.store_max_s)

    async def _note_tally(
        self, handle: RunHandle, dropped: int = 0, *, owner: str | None = None
    ) -> None:
        """Record the runner's own tally on its own (:func:`_tally`), best effort."""
        tally = _tally(handle, dropped)
        await note(
            self._store,
            handle.session_id,
            actor=self._owner,
            reason=tally.reason,
            detail=tally.detail,
            owner=owner,
        )

    async def _finish_once(self, handle: RunHandle, result: RunResult) -> None:
        """Stats from what is actually stored, then the terminal state (invariant 7),
        with the runner's own tally (:func:`_tally`) when it stored ticks.

        The first round's read of the session is made while the seal counts, not after:
        at a shutdown the count waits for the other runs' seals and then scans the tick
        tables, and a read queued behind the scans (the server's network workers) cost
        seconds more. The transition is a compare-and-set on that read's version, so a
        change made meanwhile (a stop asked, a claim) fails it and the next round reads
        again."""
        read = asyncio.ensure_future(self._store.sessions.get_session(handle.session_id))
        try:
            seal = await self._seal(handle.session_id, acknowledged=handle.acknowledged)
        except BaseException:
            read.cancel()
            await asyncio.gather(read, return_exceptions=True)
            raise
        counts = seal.counts
        tally: Note | None = None
        if result.stats is not None:  # a run that stores no ticks: its own final stats
            stats = result.stats
        else:
            tally = _tally(handle)
            if counts != handle.written:
                await note(
                    self._store,
                    handle.session_id,
                    actor=self._owner,
                    reason=Reason.COUNT_MISMATCH,
                    detail=f"runner wrote {handle.written}, store holds {counts}",
                )
            stats = counts.as_stats(handle.unstored)
        first: asyncio.Future[Session] | None = read
        for _ in range(self._settings.retry.cas_rounds):
            if first is not None:
                current, first = await first, None
            else:
                current = await self._store.sessions.get_session(handle.session_id)
            if current.is_terminal or current.owner != self._owner:
                return
            if result.error is not None:
                target, reason, detail = SessionStatus.FAILED, result.error_reason, result.error
            elif current.status is SessionStatus.STOPPING:
                target, reason, detail = (
                    SessionStatus.STOPPED,
                    current.reason or Reason.USER_STOP,
                    None,
                )
            elif result.outcome is Outcome.FINISHED:
                target, reason, detail = SessionStatus.COMPLETED, result.finish_reason, None
            else:  # stopped locally without a recorded request: record it first
                await request_stop(
                    self._store,
                    current.id,
                    actor=self._owner,
                    reason=handle.stop_reason or Reason.USER_STOP,
                    policy=self._settings.retry,
                )
                continue
            try:
                await self._finalise(current, target, reason, stats, detail, seal=seal, note=tally)
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
        *,
        seal: Seal,
        note: Note | None = None,
    ) -> Session:
        ended = await self._store.sessions.transition(
            current.id,
            expected_version=current.version,
            to_status=target,
            actor=self._owner,
            reason=reason,
            detail=detail,
            stats=stats,
            lease_expires_at=None,
            seal=seal,
            note=note,
        )
        self._leases.untrack(current.id)  # ended: nothing left to renew
        return ended

    async def _fail(self, session_id: str, reason: str, detail: str) -> None:
        for _ in range(self._settings.retry.cas_rounds):
            try:
                current = await self._store.sessions.get_session(session_id)
                if current.is_terminal or current.owner != self._owner:
                    return
                seal = await self._seal(session_id)
                stats = seal.counts.as_stats(current.stats.errors)
                await self._finalise(
                    current, SessionStatus.FAILED, reason, stats, detail, seal=seal
                )
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

    def _remember_store_fault(self, session_id: str, fault: str) -> None:
        self._store_faults[session_id] = fault
        while len(self._store_faults) > STORE_FAULTS_REMEMBERED:
            self._store_faults.popitem(last=False)

    async def _stopped_as_zombie(self, handle: RunHandle, result: RunResult) -> None:
        """The runner stopped itself on losing its lease; say so in the session's history."""
        # gone here, whatever the store says next
        self._release_handle(handle.session_id, handle)
        if handle.store_fault:
            self._remember_store_fault(handle.session_id, handle.store_fault)
        self._metrics.zombies_stopped.inc()
        log.warning(
            "session %s: lease lost (%s), runner stopped itself",
            handle.session_id,
            handle.lost_reason,
        )
        # Each note goes in only while the session is still this instance's and not
        # terminal (add_event's owner check): once it was reaped or claimed — the store
        # may come back only after that — the notes are left out, never put after the
        # reap's terminal event or among the next owner's events (a client reading the
        # history, and the oracle's last runner_tally, rely on that order).
        try:
            await self._store.sessions.add_event(
                handle.session_id,
                actor=self._owner,
                reason=Reason.LEASE_LOST,
                detail=handle.lost_reason or None,
                owner=self._owner,
            )
        except StoreError as exc:
            # The store fails now, too: it is what kept the lease from being renewed,
            # even when the fence came before a renewal had finished failing (a starved
            # event loop); the reap then names it (store_unavailable), not owner_lost.
            log.warning("session %s: could not record lease_lost: %s", handle.session_id, exc)
            if not handle.store_fault:
                self._remember_store_fault(handle.session_id, str(exc))
        except LeaseLost as exc:
            log.warning("session %s: lease_lost not recorded: %s", handle.session_id, exc)
        await self._note_tally(handle, dropped=result.dropped, owner=self._owner)
        await note(
            self._store,
            handle.session_id,
            actor=self._owner,
            reason=Reason.ZOMBIE_STOPPED,
            detail=f"runner stopped itself; {result.dropped} buffered ticks not written",
            owner=self._owner,
        )

    async def _hand_over(self, handle: RunHandle, result: RunResult) -> None:
        """Shutdown of a resumable session: everything is flushed; release it for a claim."""
        current = await self._store.sessions.get_session(handle.session_id)
        if result.error is not None or current.status is not SessionStatus.RUNNING:
            # a stop arrived meanwhile, or ticks were lost: end it here as usual
            await self._finish(handle, RunResult(Outcome.STOPPED, result.error))
            return
        await self._note_tally(handle)
        # the claim seals the tenure (and checks it): these counts are the released stats
        counts = (await self._seal(handle.session_id, acknowledged=handle.acknowledged)).counts
        stats = counts.as_stats(handle.unstored)
        try:
            await self._leases.release(handle, stats)
        except TicktapeError as exc:
            log.error(
                "session %s: could not release its lease (%s); it is claimed once it expires",
                handle.session_id,
                exc,
            )
            return
        self._metrics.sessions_handed_over.inc()
        await note(
            self._store,
            handle.session_id,
            actor=self._owner,
            reason=Reason.HANDED_OVER,
            detail=f"released on shutdown with {counts.trades} trades, "
            f"{counts.orderbook} snapshots stored",
        )


def _tally(handle: RunHandle, dropped: int = 0) -> Note:
    """The runner's own tally, so stats can be checked against it (invariant 7).

    The stats are counted from the store; this is counted by the runner as the store
    acknowledged its writes (a resumed run starts from what was stored). A run that
    ends here records it with its terminal transition, in the same write
    (``SessionStore.transition``'s ``note``); one that lost its lease or hands its
    session over, as a note of its own. ``unanswered_*``: the rows of the writes whose
    outcome the run does not know (``RunHandle.unanswered``), which the stats may count
    or not;
    notes written before they existed have none (read as 0).
    """
    tally = {
        "trades": handle.written.trades,
        "orderbook": handle.written.orderbook,
        "unstored": handle.unstored,
        "dropped": dropped,
        "unanswered_trades": handle.unanswered.trades,
        "unanswered_orderbook": handle.unanswered.orderbook,
    }
    return Note(Reason.RUNNER_TALLY, json.dumps(tally, sort_keys=True))


async def _no_listing() -> dict[str, Session] | None:
    return None


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
