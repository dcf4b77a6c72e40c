"""Leases of the sessions this instance runs: heartbeats, self-fencing, release.

Every ``heartbeat_interval_s`` the keeper renews this instance's lease — one
store write (``SessionStore.renew_instance``) that covers every session the
instance owns and publishes their runners' progress as stats — and acts on the
answer: a ``stopping`` requested on any instance wakes the runner; a session the
store no longer lists as this instance's (terminal or claimed by someone else)
has its runner fenced at once.

A runner whose lease cannot be renewed — the store is unreachable, this process
was paused — stops itself ``Settings.self_fence_after_s`` after the last renewal
that succeeded, which is before the lease expires: by the time any reconciler
may reap or claim the session, its old runner writes nothing more. The store
fences tick writes too (``TickStore.write(owner=...)``), so even a runner that
missed all of this cannot store a late tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ticktape.config import LOOP_SLICE_S, Settings
from ticktape.domain import Reason, Session, SessionStatus, Stats, utcnow
from ticktape.errors import StoreError
from ticktape.metrics import Metrics
from ticktape.runtime.handle import RunHandle
from ticktape.slices import LoopSlicer
from ticktape.store.base import Store
from ticktape.store.transitions import note

log = logging.getLogger(__name__)


@dataclass
class _Lease:
    handle: RunHandle
    renewed_at: float  # monotonic time the last successful renewal was sent
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # renewal vs release
    fence: asyncio.TimerHandle | None = None
    failures: int = 0  # renewals failed since the last success
    last_error: str = ""
    released: bool = False


class LeaseKeeper:
    def __init__(self, store: Store, settings: Settings, metrics: Metrics, owner: str) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._owner = owner
        self._leases: dict[str, _Lease] = {}
        self._renewing = asyncio.Lock()
        #: A heartbeat yields the event loop after this much of its own work (seconds;
        #: ``LoopSlicer``): a test sets 0 to have it yield between every two sessions.
        self.slice_s = LOOP_SLICE_S

    def lease_until(self) -> datetime:
        return utcnow() + timedelta(seconds=self._settings.lease_s)

    def track(self, handle: RunHandle) -> None:
        """Keep the lease of a session this instance has just taken (created or claimed)."""
        lease = _Lease(handle, time.monotonic())
        self._leases[handle.session_id] = lease
        self._arm(lease)

    def untrack(self, session_id: str) -> None:
        lease = self._leases.pop(session_id, None)
        if lease is not None and lease.fence is not None:
            lease.fence.cancel()

    # ------------------------------------------------------------------ heartbeat

    async def loop(self) -> None:
        interval = self._settings.heartbeat_interval_s
        next_at = time.monotonic() + interval
        while True:
            slept = time.monotonic()
            await asyncio.sleep(max(0.0, next_at - slept))
            woke = time.monotonic()
            # late as the event loop made it: measured from the due time, or from when the
            # sleep began if a slow renewal had already overrun it (that overrun is in
            # ``took``, not a loop that woke late)
            late = woke - max(next_at, slept)
            next_at += interval
            if next_at < time.monotonic():  # fell behind (a pause): no burst of heartbeats
                next_at = time.monotonic() + interval
            await self.heartbeat()
            took = time.monotonic() - woke
            if late + took > interval:
                # the renewal's two hops as this loop sees them: a starved event loop shows
                # as a late wake, a queued or slow store write as a long renewal (the
                # SQLite store logs that write's own hops as a slow write)
                log.warning(
                    "heartbeat late: woke %.3fs after due, renewal of %d lease(s) took %.3fs",
                    late,
                    len(self._leases),
                    took,
                )

    async def heartbeat(self) -> None:
        """Renew every tracked lease at once, with one store write whatever their number.

        ``SessionStore.renew_instance`` renews this instance's lease, which covers every
        session it owns, publishes their progress, and answers with the sessions it
        still owns: one missing was finalised or claimed elsewhere (its runner is
        fenced at once), one ``stopping`` was asked to stop (its runner wakes up).
        """
        async with self._renewing:  # one at a time, so the lease never moves back
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        leases = [lease for lease in self._leases.values() if not lease.released]
        # Over thousands of sessions a heartbeat's own work takes milliseconds per
        # thousand: it yields the event loop every LOOP_SLICE_S of it (a request, a tick
        # writer's round waits for one slice, not the whole heartbeat). What the store
        # gets is still one snapshot per session: tallies only grow.
        slicer = LoopSlicer(self.slice_s)
        progress = {}
        for lease in leases:
            handle = lease.handle
            progress[handle.session_id] = Stats(
                handle.written.trades, handle.written.orderbook, handle.unstored
            )
            await slicer.next()
        sent = time.monotonic()
        until = self.lease_until()
        try:
            # retried by the store handle, within RetryPolicy.renew_attempts
            owned = await self._store.sessions.renew_instance(
                self._owner, lease_expires_at=until, progress=progress
            )
        except StoreError as exc:
            self._metrics.lease_renew_failures.inc()
            for lease in leases:
                lease.failures += 1
                lease.last_error = str(exc)
            oldest = min((lease.renewed_at for lease in leases), default=sent)
            log.error(
                "lease renewal failed (%s) for %d session(s), last renewed %.1fs ago",
                exc,
                len(leases),
                sent - oldest,
            )
            return
        by_id = {session.id: session for session in owned}
        # Each lease's part is plain Python with no await in the common case (one renewal
        # of a thousand sessions must not be a thousand tasks): a lease whose release is
        # under way (its lock held) or that has a recovery to note goes the slow way.
        # The loop yields between leases, never inside one's part: its lock is looked at
        # and its renewal applied in one step, so a release cannot come in between. A
        # lease reached a slice later is renewed as of ``sent`` all the same; its fence
        # timer, if it fires meanwhile, fences it — early, which is the safe side.
        slow = []
        for lease in leases:
            await slicer.next()
            current = by_id.get(lease.handle.session_id)
            if lease.lock.locked():
                slow.append(self._renewed(lease, current, sent))
                continue
            recovered = self._apply(lease, current, sent)
            if recovered is not None and recovered[0]:
                slow.append(self._after(lease, current, recovered))
            elif (
                recovered is not None
                and current is not None
                and current.status is SessionStatus.STOPPING
            ):
                lease.handle.stop.set()
        if slow:
            await asyncio.gather(*slow)

    def _apply(
        self, lease: _Lease, current: Session | None, sent: float
    ) -> tuple[int, float, str] | None:
        """The renewal's effect on one lease (called with its lock free or held): the
        failures it recovers from (count, seconds, last error), or None if the lease
        was released meanwhile or the session is not this instance's any more."""
        handle = lease.handle
        session_id = handle.session_id
        if lease.released or self._leases.get(session_id) is not lease:
            return None  # finalised or released meanwhile: this instance ended it itself
        if current is None:
            self._metrics.lease_renew_failures.inc()
            why = f"{self._owner} does not own it any more (finalised or claimed)"
            log.warning("session %s: %s", session_id, why)
            handle.lose(f"heartbeat: {why}")
            return None
        recovered = lease.failures, sent - lease.renewed_at, lease.last_error
        lease.renewed_at = max(lease.renewed_at, sent)
        lease.failures = 0
        if lease.fence is None:  # otherwise the armed timer sees the renewal when it fires
            self._arm(lease)
        return recovered

    async def _renewed(self, lease: _Lease, current: Session | None, sent: float) -> None:
        """Act on one session's part of a successful instance renewal sent at ``sent``."""
        async with lease.lock:
            recovered = self._apply(lease, current, sent)
        if recovered is not None and current is not None:
            await self._after(lease, current, recovered)

    async def _after(
        self, lease: _Lease, current: Session | None, recovered: tuple[int, float, str]
    ) -> None:
        """Note a recovery from failed renewals; wake the runner of a ``stopping`` session."""
        session_id = lease.handle.session_id
        handle = lease.handle
        assert current is not None
        if recovered[0]:
            await note(
                self._store,
                session_id,
                actor=self._owner,
                reason=Reason.LEASE_RENEW_FAILED,
                detail=f"{recovered[0]} renewal(s) failed over {recovered[1]:.1f}s "
                f"(last: {recovered[2]}); renewed again",
            )
        if current.status is SessionStatus.STOPPING:
            handle.stop.set()

    def _arm(self, lease: _Lease) -> None:
        """(Re)start the self-fencing timer, due ``self_fence_after_s`` after the last
        successful renewal. A renewal does not re-arm it (a timer per session per
        heartbeat): when it fires it looks at the renewal time and, if one came since,
        re-arms for the rest — so it fences exactly when it would have been due."""
        if lease.fence is not None:
            lease.fence.cancel()
        delay = lease.renewed_at + self._settings.self_fence_after_s - time.monotonic()
        lease.fence = asyncio.get_running_loop().call_later(max(0.0, delay), self._fence, lease)

    def _fence(self, lease: _Lease) -> None:
        lease.fence = None
        if self._leases.get(lease.handle.session_id) is not lease or lease.released:
            return
        if lease.renewed_at + self._settings.self_fence_after_s > time.monotonic():
            self._arm(lease)  # renewed since it was armed: due later
            return
        since = time.monotonic() - lease.renewed_at
        why = f"lease not renewed for {since:.1f}s"
        if lease.failures:
            why += f" ({lease.failures} renewal(s) failed, last: {lease.last_error})"
            lease.handle.store_fault = lease.last_error
        log.error("session %s: %s; the runner stops itself", lease.handle.session_id, why)
        lease.handle.lose(why)

    # ------------------------------------------------------------------ hand-over

    async def release(self, handle: RunHandle, stats: Stats) -> Session:
        """Give the session up (its runner has stopped): expire its lease now, with final stats.

        Any instance's reconciler then finds it expired and may claim it at once.
        """
        lease = self._leases.get(handle.session_id)
        if lease is None:
            return await self._release(handle, stats)
        async with lease.lock:  # no renewal in flight may extend it again afterwards
            lease.released = True
            self.untrack(handle.session_id)
            return await self._release(handle, stats)

    async def _release(self, handle: RunHandle, stats: Stats) -> Session:
        # no lease at all: this instance's lease no longer covers it
        return await self._store.sessions.renew_lease(
            handle.session_id, owner=self._owner, lease_expires_at=None, stats=stats
        )
