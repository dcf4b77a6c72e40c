"""The reconciler: no orphans. Runs on every instance, at start-up and periodically.

A non-terminal session whose lease expired has lost its owner. By default it is
*reaped*: finalised ``failed`` with reason ``owner_lost``, its stats counted
from what is actually stored. A collect session created with
``on_owner_loss: "resume"`` is *claimed* instead (``SessionStore.claim``, a
compare-and-set, so two instances never both take it) and recording resumes
here under the same id.

Timing: each instance waits at most ``Settings.reconcile_every_s`` (the
heartbeat interval by default) between passes, so an orphan is reaped or
claimed within ``lease + one heartbeat`` of its owner's last renewal
(``Settings.reap_bound_s``) while any instance is alive. It also wakes just
after the earliest lease it saw in its last pass expires
(``LeaseScan.next_expiry``): no lease expires before that one, so the pass starts
right after an orphan's lease lapses and has nearly the whole heartbeat for its
own work, instead of the quarter kept for it by the polling wait. When the scan
says which instances are live, each orphan has a preferred reaper among them
(:func:`preferred_reaper`); the others take it only ``RECONCILE_DEFER_SHARE`` of the
interval after its lease expired, so they do not all seal the same orphans.

At start-up, sessions still owned by an earlier incarnation of this instance
(same instance name) are taken at once, without waiting for their lease: that
incarnation is dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from ticktape.config import (
    RECONCILE_DEFER_SHARE,
    RECONCILE_JITTER_MIN,
    RECONCILE_TAKE_ATTEMPTS,
    RECONCILE_WAKE_SPREAD,
    Settings,
)
from ticktape.domain import (
    OwnerLossPolicy,
    Reason,
    Session,
    SessionKind,
    SessionStatus,
    utcnow,
)
from ticktape.errors import (
    InvalidTransition,
    StoreError,
    TicksNotVisible,
    TicktapeError,
    TransitionRace,
)
from ticktape.metrics import Metrics
from ticktape.runtime.handle import RunHandle
from ticktape.runtime.leases import LeaseKeeper
from ticktape.store.base import Seal, Store

T = TypeVar("T")
log = logging.getLogger(__name__)


def is_resumable(session: Session) -> bool:
    """A session another instance resumes when its owner is lost (opt-in; a collect
    session continues after what is stored, a backtest replays again from the start)."""
    return (
        session.kind in (SessionKind.COLLECT, SessionKind.BACKTEST)
        and session.config.on_owner_loss is OwnerLossPolicy.RESUME
    )


def wait_before_pass(settings: Settings, next_expiry: datetime | None) -> float:
    """Seconds until the next pass: the polling wait (jitter spreads instances apart; a
    wait plus the budget kept for the pass never exceeds the interval, which the reap
    bound rests on), or less, to start just after ``next_expiry``, the earliest known
    lease expiry (a small random spread keeps instances from all taking the same
    orphans at once) — and before that, just after ``lost_owner_quiet_s`` before it,
    once its owner, if lost, has stopped writing: that pass notes what the tick store
    has committed (``TickStore.note_committed``), all its seals wait to see."""
    every = settings.reconcile_every_s
    wait = (every - settings.reconcile_pass_budget_s) * random.uniform(RECONCILE_JITTER_MIN, 1.0)
    if next_expiry is not None:
        until = (next_expiry - utcnow()).total_seconds()
        quiet = settings.lost_owner_quiet_s
        first = until - quiet if until > quiet else max(0.0, until)
        wait = min(wait, first + every * random.uniform(0.0, RECONCILE_WAKE_SPREAD))
    return wait


def visibility_budget(settings: Settings, leases: list[datetime], now: datetime) -> float:
    """How long a pass waits for its orphans' acknowledged ticks to become visible: until
    the earliest of their leases plus the interval, less the part of the interval kept for
    the seals and compare-and-sets (``reconcile_pass_budget_s``) — the reap bound's own
    slack — never less than ``reconcile_visibility_s`` nor more than the interval.

    One long wait, not several short ones: a wait's target is what was committed when it
    began, and every pass that gave up began again with a later one. Under load, with
    every instance's ticks committing all the time, short waits could each miss their
    moving target while the orphans' own ticks were long visible (docs/benchmarks.md,
    "Stop 19 — reapfast12")."""
    floor = settings.reconcile_visibility_s
    if not leases:
        return floor
    until = min(leases) + timedelta(
        seconds=settings.reconcile_every_s - settings.reconcile_pass_budget_s
    )
    return min(settings.reconcile_every_s, max(floor, (until - now).total_seconds()))


def preferred_reaper(session_id: str, live_owners: frozenset[str], me: str) -> bool:
    """Whether ``me`` is the preferred reaper of ``session_id``: the owner, among the
    live ones and ``me``, with the highest hash of (session id, owner) — rendezvous
    hashing, so every instance that sees the same live owners picks the same one, and
    an instance that dies only moves its own share. True when the store does not say
    which owners are live (``live_owners`` empty): every instance takes every orphan."""
    if not live_owners:
        return True

    def rank(owner: str) -> bytes:
        return hashlib.blake2b(f"{session_id}|{owner}".encode(), digest_size=8).digest()

    return max(live_owners | {me}, key=rank) == me


def _still_orphaned(again: Session, before: Session, *, force: bool) -> bool:
    """Whether ``again``, the session read after a take of ``before`` lost its
    compare-and-set, is still an orphan of the same owner: not ended, not taken, and
    (unless its owner is known dead: ``force``) its lease still expired."""
    if again.is_terminal or again.owner != before.owner:
        return False
    lease = again.lease_expires_at
    return force or lease is None or lease < utcnow()


class Host(Protocol):
    """What the reconciler needs from the supervisor it works for."""

    @property
    def handles(self) -> Mapping[str, RunHandle]:
        """Sessions with a live runner here."""

    @property
    def closing(self) -> bool:
        """True once this instance shuts down: it takes on nothing new."""

    def launch(self, session: Session, *, resumed: bool = False) -> None:
        """Run a session this instance owns."""

    def store_fault(self, session_id: str) -> str | None:
        """The store error that made a runner here lose the session's lease, if one did."""


class Reconciler:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        *,
        owner: str,
        instance: str,
        leases: LeaseKeeper,
        host: Host,
    ) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._owner = owner
        self._instance = instance
        self._leases = leases
        self._host = host
        self._pass = asyncio.Lock()
        self._next_expiry: datetime | None = None  # from the last pass's scan
        # the current pass's slowest seal and compare-and-set (its log line splits them)
        self._slowest = {"seal": 0.0, "commit": 0.0}

    @property
    def next_expiry(self) -> datetime | None:
        """The earliest lease expiry the last pass saw (None: unknown)."""
        return self._next_expiry

    def next_wait(self) -> float:
        return wait_before_pass(self._settings, self._next_expiry)

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.next_wait())
            try:
                await self.reconcile()
            except TicktapeError as exc:
                self._next_expiry = None  # unknown: poll
                log.error("reconciler: %s", exc)

    async def reconcile(self, *, startup: bool = False) -> int:
        """Reap or claim every session whose owner is gone; return how many were taken care of.

        One pass at a time on this instance (passes of other instances race safely:
        every reap and claim is a compare-and-set).
        """
        async with self._pass:
            return await self._reconcile(startup)

    async def _reconcile(self, startup: bool) -> int:
        now = utcnow()
        began = time.monotonic()
        scan = await self._store.sessions.scan_leases(now)
        self._next_expiry = scan.next_expiry
        if scan.next_expiry is not None:
            await self._note_committed(scan.next_expiry)
        scanned = time.monotonic()
        self._metrics.reconcile_phase.labels(phase="scan").observe(scanned - began)
        expired = {s.id: s for s in scan.expired}
        restarted: dict[str, Session] = {}
        if startup:
            mine = await self._store.sessions.find_owned(f"{self._instance}/")
            for s in mine:
                if s.owner != self._owner and s.id not in expired:
                    restarted[s.id] = s
        orphans = []
        deferred: list[datetime] = []  # when this instance takes the orphans it left
        defer = timedelta(seconds=self._settings.reconcile_every_s * RECONCILE_DEFER_SHARE)
        for session in [*expired.values(), *restarted.values()]:
            handle = self._host.handles.get(session.id)
            if handle is None:
                lease = session.lease_expires_at
                if (
                    session.id not in restarted
                    and lease is not None
                    and lease + defer > utcnow()
                    and not preferred_reaper(session.id, scan.live_owners, self._owner)
                ):
                    deferred.append(lease + defer)  # its preferred reaper's, for now
                    continue
                orphans.append(session)
            elif session.owner != self._owner:
                # Ours and alive: it fences itself before its lease expires. Or someone
                # else's by now: tear down what still runs here. Either way the runner is
                # on its way out; the next pass, one interval later, takes care of it.
                handle.lose(f"owner is now {session.owner}")
        if deferred:  # wake to take them if their preferred reaper did not
            self._next_expiry = min([*deferred, *filter(None, [self._next_expiry])])
        if not orphans:
            return 0
        expiries = [
            s.lease_expires_at
            for s in orphans
            if s.lease_expires_at is not None and s.id not in restarted
        ]
        budget = visibility_budget(self._settings, expiries, utcnow())
        # what the lost owners could have acknowledged was committed by this time (an
        # earlier incarnation's session: by now, read at once)
        committed_by = (
            max(expiries) - timedelta(seconds=self._settings.lost_owner_quiet_s)
            if expiries and not any(s.id in restarted for s in orphans)
            else None
        )
        if not await self._let_ticks_land(budget, committed_by):
            orphans = self._patient(orphans, restarted)
            if not orphans:
                return 0
        landed = time.monotonic()
        self._metrics.reconcile_phase.labels(phase="visibility").observe(landed - scanned)
        self._slowest = {"seal": 0.0, "commit": 0.0}
        # all at once: an instance that died with many sessions has them all reaped
        # within the pass's budget, not one after another (each is its own CAS)
        results = await asyncio.gather(
            *(self._take_care(s, now, force=s.id in restarted) for s in orphans)
        )
        done = time.monotonic()
        self._metrics.reconcile_phase.labels(phase="pass").observe(done - began)
        leases = [s.lease_expires_at for s in orphans if s.lease_expires_at is not None]
        after = (utcnow() - min(leases)).total_seconds() if leases else float("nan")
        # one parseable line per pass that found orphans (bench/chaos.py reads them), at
        # the level of the reaps themselves
        log.warning(
            "reconciler pass: %d of %d orphans taken; scan %.4f s, visibility %.4f s, "
            "seal+commit %.4f s, total %.4f s; %.4f s after the earliest lease expired; "
            "%d left to their preferred reaper; slowest seal %.4f s, slowest commit %.4f s",
            sum(results),
            len(orphans),
            scanned - began,
            landed - scanned,
            done - landed,
            done - began,
            after,
            len(deferred),
            self._slowest["seal"],
            self._slowest["commit"],
        )
        return sum(results)

    async def _take_care(self, session: Session, now: datetime, *, force: bool) -> bool:
        """Reap or claim ``session``. A compare-and-set lost to a change that left it an
        orphan of the same owner (a stop asked meanwhile, its tick floor lowered since
        the seal) is tried again at once with the session read again and a new seal, up
        to ``RECONCILE_TAKE_ATTEMPTS`` in all: the next pass may start most of an
        interval later, past the bound."""
        for attempt in range(1, RECONCILE_TAKE_ATTEMPTS + 1):
            try:
                if is_resumable(session) and not self._host.closing:
                    taken = await self._claim(session, now, force=force)
                else:
                    taken = await self._reap(session, now, force=force)
                if taken or attempt == RECONCILE_TAKE_ATTEMPTS:
                    return taken
                again = await self._store.sessions.get_session(session.id)
            except StoreError as exc:  # one failure must not stop the pass: next pass retries
                log.error("reconciler: session %s: %s", session.id, exc)
                return False
            if not _still_orphaned(again, session, force=force):
                return False  # renewed, stopped, claimed or reaped by someone else meanwhile
            log.info(
                "reconciler: session %s moved to version %d meanwhile, still an orphan of %s; "
                "taking it again (attempt %d)",
                session.id,
                again.version,
                session.owner,
                attempt + 1,
            )
            session = again
        return False

    async def _note_committed(self, next_expiry: datetime) -> None:
        """Note what the tick store has committed, if the earliest lease the scan saw
        expires within ``lost_owner_quiet_s``: should its owner be lost, it acknowledged
        nothing after that, and its seals need wait only for what is committed now, not
        for what the live instances commit meanwhile. Best effort: without the note, the
        wait reads its own target, later."""
        until = (next_expiry - utcnow()).total_seconds()
        if not 0.0 < until <= self._settings.lost_owner_quiet_s:
            return
        try:
            await self._store.ticks.note_committed()
        except StoreError as exc:
            log.info("reconciler: could not note what the tick store committed: %s", exc)

    async def _let_ticks_land(self, budget: float, committed_by: datetime | None) -> bool:
        """Give ticks the lost owners had acknowledged ``budget`` seconds to become visible
        (:func:`visibility_budget`), so the seals count them; False if they did not.
        ``committed_by``: they were committed by then (None: wait for everything
        acknowledged so far).

        A store that cannot make them visible without an operator (a suspended QuestDB
        table) answers True: the seals count what is visible, and rows that land later
        are fenced out, never counted (store.base.Seal)."""
        try:
            await self._store.ticks.wait_visible(budget, committed_by=committed_by)
        except TicksNotVisible as exc:
            log.warning("reconciler: %s", exc)
            return False
        except StoreError as exc:
            log.warning("reconciler: sealing what is visible (%s)", exc)
        return True

    def _patient(self, orphans: list[Session], restarted: Mapping[str, Session]) -> list[Session]:
        """The orphans to seal now although their owners' last ticks are not all visible.

        QuestDB applies each tick table's WAL on its own, so a seal made now could count
        one table further on than another — trades stored without the order books of
        the same blocks, the later rows fenced out, nothing recording them. An orphan
        whose lease expired less than ``reconcile_visibility_patience_s`` ago waits for
        a later pass instead (the next one starts at once); past that, or for an
        earlier incarnation's session, the seal counts what is visible."""
        patience = timedelta(seconds=self._settings.reconcile_visibility_patience_s)
        now = utcnow()
        seal_now, wait = [], []
        for s in orphans:
            lease = s.lease_expires_at
            if s.id in restarted or lease is None or lease + patience <= now:
                seal_now.append(s)
            else:
                wait.append(s)
        if wait:
            self._next_expiry = now  # the next pass looks again at once
            log.warning(
                "reconciler: %d orphans wait for their owners' ticks to become visible; "
                "%d sealed with what is visible",
                len(wait),
                len(seal_now),
            )
        return seal_now

    def _why(self, session: Session, force: bool) -> str:
        expiry = session.lease_expires_at
        if force:
            return f"owner {session.owner} restarted"
        return f"owner {session.owner} lease expired at {expiry.isoformat() if expiry else 'never'}"

    async def _seal(self, session_id: str) -> Seal:
        began = time.monotonic()
        seal = await self._store.ticks.seal(session_id)
        self._took("seal", time.monotonic() - began)
        return seal

    def _took(self, phase: str, seconds: float) -> None:
        self._metrics.reconcile_phase.labels(phase=phase).observe(seconds)
        self._slowest[phase] = max(self._slowest[phase], seconds)

    async def _reap(self, session: Session, now: datetime, *, force: bool) -> bool:
        seal = await self._seal(session.id)
        stats = seal.counts.as_stats(session.stats.errors)
        detail = self._why(session, force)
        # Its owner is this instance, whose store failed past the lease: name the fault.
        fault = self._host.store_fault(session.id)
        reason = Reason.STORE_UNAVAILABLE if fault else Reason.OWNER_LOST
        if fault:
            detail = f"the store failed for longer than the lease ({fault}); {detail}"
        if seal.note():  # the crash's tail, cut from every tick table alike
            detail = f"{detail}; {seal.note()}"
        began = time.monotonic()
        try:
            await self._store.sessions.transition(
                session.id,
                expected_version=session.version,
                to_status=SessionStatus.FAILED,
                actor=self._owner,
                reason=reason,
                detail=detail,
                stats=stats,
                lease_expires_at=None,
                lease_expired_before=None if force else now,
                seal=seal,  # late ticks of the lost owner are never counted
            )
        except (TransitionRace, InvalidTransition):
            return False  # renewed, stopped, claimed or reaped by someone else meanwhile
        finally:
            self._took("commit", time.monotonic() - began)
        self._metrics.orphans_reaped.inc()
        log.warning("session %s: reaped (%s)", session.id, detail)
        return True

    async def _claim(self, session: Session, now: datetime, *, force: bool) -> bool:
        detail = f"{self._why(session, force)}; claimed by {self._owner}"
        # closes the lost owner's tenure: its late ticks are never counted, read or resumed after
        seal = await self._seal(session.id)
        if seal.note():  # the crash's tail, cut from every tick table alike
            detail = f"{detail}; {seal.note()}"
        began = time.monotonic()
        try:
            claimed = await self._store.sessions.claim(
                session.id,
                expected_version=session.version,
                owner=self._owner,
                lease_expires_at=self._leases.lease_until(),
                actor=self._owner,
                reason=Reason.OWNER_CHANGED,
                detail=detail,
                lease_expired_before=None if force else now,
                seal=seal,
            )
            self._took("commit", time.monotonic() - began)
        except (TransitionRace, InvalidTransition):
            # Taken by someone else meanwhile — or by us, in an attempt whose answer was lost.
            claimed = await self._store.sessions.get_session(session.id)
            mine = claimed.owner == self._owner and not claimed.is_terminal
            if not mine or claimed.id in self._host.handles:  # not ours, or run here already
                return False
        log.warning("session %s: %s", session.id, detail)
        if claimed.status is SessionStatus.STOPPING:
            await self._finish_stop(claimed)  # a stop was asked: finish it, nothing to resume
        else:
            self._metrics.sessions_resumed.inc()
            self._host.launch(claimed, resumed=True)
        return True

    async def _finish_stop(self, session: Session) -> None:
        """The previous owner died while stopping: record the stop with what is stored."""
        seal = await self._store.ticks.seal(session.id)
        # moved meanwhile (TransitionRace, InvalidTransition): whoever moved it decides
        with contextlib.suppress(TransitionRace, InvalidTransition):
            await self._store.sessions.transition(
                session.id,
                expected_version=session.version,
                to_status=SessionStatus.STOPPED,
                actor=self._owner,
                reason=session.reason or Reason.USER_STOP,
                detail="finished by the instance that claimed it",
                stats=seal.counts.as_stats(session.stats.errors),
                lease_expires_at=None,
                seal=seal,
            )
