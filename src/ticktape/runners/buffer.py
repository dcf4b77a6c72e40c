"""A bounded buffer of tick batches between a feed and the store.

The producer (the feed loop) waits when the buffer holds ``max_rows`` — back-
pressure instead of unbounded memory when the store is slower than the feed.
The consumer is the instance's tick writer (:mod:`ticktape.runners.writer`): at each
point of the instance's shared clock (:mod:`ticktape.feeds.clock`) it takes what every
session's buffer holds (:meth:`take_ready`, up to ``flush_rows``), and a buffer that
becomes due in between — ``eager_rows`` waiting, or closed — tells it at once
(:attr:`on_due`), so a busy feed's rows go to an idle store without waiting for the
interval. A session's rows are in at most one write at a time; what gathers during a
write is the next write (up to ``flush_rows``). :meth:`take` is the same for a consumer
of one buffer: it waits until a flush is due.

Every session's buffer of an instance may share a :class:`RowPool`: an instance-wide
bound on the rows buffered by all of them (``TICKTAPE_INSTANCE_BUFFER_MAX_ROWS``; the
per-session bound alone lets 1,000 sessions hold 200 million rows). It behaves as the
per-session bound does: a put that would take the pool past its bound waits
(back-pressure) until some buffer's flush frees room — except into an empty buffer
(each session may always hold one block, so no session is starved by the others and
nothing deadlocks: the pool is exceeded by at most one block per session).

Once the run is ending the producer no longer waits (:meth:`unbound`: the rest of
the feed block it is putting goes in at once, so the pump ends promptly), and the
writer may give up on what is left (:meth:`shed`) when its drain budget runs out.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from ticktape.feeds.clock import ticker
from ticktape.ticks import TickBatch


class RowPool:
    """Rows buffered by every session of an instance, with a bound (see the module).

    Puts that do not fit wait in a queue, first come first served; a release admits
    from its head as many as the freed room holds and reserves their rows at once —
    each waiting put is woken once, when it can go in (waking every waiter at every
    release made a full pool of 1,000 sessions a million wake-ups per flush interval,
    and the event loop starved its own heartbeat).
    """

    def __init__(self, max_rows: int, on_wait: Callable[[], None] | None = None) -> None:
        self.max_rows = max_rows
        self.rows = 0  # buffered, and reserved for admitted puts
        self.peak = 0  # the most rows ever buffered at once
        self.waits = 0  # puts that waited for the pool, ever (a measure of back-pressure)
        #: Told of each put that waits (the instance's metric and log: back-pressure is
        #: never silent).
        self.on_wait = on_wait
        self._queue: collections.deque[tuple[int, asyncio.Future[bool]]] = collections.deque()

    def fits(self, size: int) -> bool:
        """Room for ``size`` rows, and nobody waiting (who would go first)."""
        return not self._queue and self.rows + size <= self.max_rows

    def add(self, rows: int) -> None:
        self.rows += rows
        if self.rows > self.peak:
            self.peak = self.rows

    def release(self, rows: int) -> None:
        self.rows -= rows
        if rows and self._queue:
            self._admit()

    def _admit(self) -> None:
        while self._queue:
            size, waiter = self._queue[0]
            if waiter.done():  # its put stopped waiting (its run is ending, or cancelled)
                self._queue.popleft()
                continue
            if self.rows + size > self.max_rows and self.rows > 0:
                return
            self._queue.popleft()
            self.add(size)  # reserved: the put adds its rows without counting them again
            waiter.set_result(True)

    def wait(self, size: int) -> asyncio.Future[bool]:
        """A place in the queue: resolved True once admitted (``size`` rows reserved);
        the caller may end the wait itself with False (no reservation)."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((size, waiter))
        self.waits += 1
        if self.on_wait is not None:
            self.on_wait()
        if self.rows == 0:  # nothing buffered that a release could free: admit now
            self._admit()
        return waiter


class TickBuffer:
    def __init__(
        self,
        *,
        max_rows: int,
        flush_rows: int,
        flush_interval_s: float,
        eager_rows: int | None = None,
        pool: RowPool | None = None,
    ) -> None:
        self.max_rows = max_rows
        self._pool = pool
        self._pool_waiter: asyncio.Future[bool] | None = None  # a put queued for the pool
        self.flush_rows = flush_rows
        self.eager_rows = flush_rows if eager_rows is None else min(eager_rows, flush_rows)
        self.flush_interval_s = flush_interval_s
        self._batches: list[TickBatch] = []
        self._rows = 0
        self._closed = False
        self._unbound = False
        self._changed = asyncio.Condition()
        self._due_waiter: asyncio.Future[None] | None = None  # the flusher, until due
        self._taker_waiting = False  # the flusher waits for a first row (on the condition)
        self._putters = 0  # puts waiting for room (on the condition)
        #: Told when the buffer becomes due (``eager_rows`` reached, or closed): the
        #: instance's tick writer (runners/writer.py) sets it to write it at once.
        self.on_due: Callable[[], None] | None = None

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def closed(self) -> bool:
        """No more puts will come: what is buffered is the last to flush."""
        return self._closed

    async def put(self, batches: list[TickBatch]) -> None:
        """Add batches; wait while the buffer is full (a block larger than the bound still fits
        once the buffer is empty, so a big block never deadlocks)."""
        size = sum(len(b) for b in batches)
        reserved = False  # the instance's pool counts these rows already
        pool = self._pool
        if pool is not None and not self._pool_fits(size):  # the instance's bound: queue
            waiter = self._pool_waiter = pool.wait(size)
            try:
                reserved = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result():
                    pool.release(size)  # admitted, then cancelled before it went in
                raise
            finally:
                self._pool_waiter = None
        try:
            if not self._taker_waiting and not self._changed.locked() and self._fits(size):
                # the common case, thousands of times a second on a busy instance: room, and
                # nobody waiting for rows (a flusher past its wait sleeps on its due timer)
                self._add(batches, size, reserved)
                self._wake_if_due()
                return
            async with self._changed:
                self._putters += 1
                try:
                    await self._changed.wait_for(lambda: self._fits(size))
                finally:
                    self._putters -= 1
                self._add(batches, size, reserved)
                self._changed.notify_all()
        except asyncio.CancelledError:
            if reserved and self._pool is not None:
                self._pool.release(size)
            raise
        self._wake_if_due()

    def _pool_fits(self, size: int) -> bool:
        if self._pool is None or self._closed or self._unbound or self._rows == 0:
            return True
        return self._pool.fits(size)

    def _end_pool_wait(self) -> None:
        """The run is ending: a put waiting for the instance's bound goes in now."""
        waiter = self._pool_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(False)

    def _add(self, batches: list[TickBatch], size: int, reserved: bool = False) -> None:
        self._batches.extend(batches)
        self._rows += size
        if self._pool is not None and not reserved:
            self._pool.add(size)

    def _remove(self, rows: int) -> None:
        self._rows -= rows
        if self._pool is not None:
            self._pool.release(rows)

    def detach(self) -> None:
        """The run is over: what is still buffered (a lost run's rows) leaves the pool."""
        if self._pool is not None:
            self._pool.release(self._rows)
            self._pool = None

    def _fits(self, size: int) -> bool:
        if self._closed or self._unbound or self._rows == 0:
            return True
        return self._rows + size <= self.max_rows

    async def take(self) -> list[TickBatch]:
        """Wait for a flush to be due and take up to ``flush_rows`` rows (whole batches,
        at least one); [] only once closed and empty.

        Due means: closed, or ``eager_rows`` buffered (at most ``flush_rows``), or the
        first point of the instance's shared clock (a grid of ``flush_interval_s``) at
        least half an interval after the first row arrived — 0.5 to 1.5 intervals after
        it, and the same moment for every session of the instance. Between the first row
        and then the flusher sleeps on that clock: a put wakes it only when that makes
        the flush due (thousands of sessions each waking their flusher on every block
        would cost the loop more than the writes).
        """
        while True:
            if not (self._closed or self._rows > 0):
                self._taker_waiting = True  # a put must notify (it takes the slow path)
                try:
                    async with self._changed:
                        await self._changed.wait_for(lambda: self._closed or self._rows > 0)
                finally:
                    self._taker_waiting = False
            if not self._due():
                # a point of the instance's shared clock, at least half an interval away
                # (so between 0.5 and 1.5 flush_interval_s): every session's flush of an
                # interval in the same turn of the loop, so the store writes them together
                # (feeds/clock.py)
                loop = asyncio.get_running_loop()
                interval = self.flush_interval_s
                waiter = ticker(interval, loop).at(loop.time() + interval / 2)
                self._due_waiter = waiter
                try:
                    await waiter
                finally:
                    self._due_waiter = None
            async with self._changed:
                taken = self._take_rows()
                if taken or self._closed:
                    return taken

    def _take_rows(self, locked: bool = True) -> list[TickBatch]:
        """Up to ``flush_rows`` rows, whole batches (at least one); under the condition,
        or (``locked`` False) with nobody waiting on it, so nobody to wake (:meth:`take_now`).

        At most ~flush_rows per write: one write of a huge backlog (a block of 100
        symbols at the maximum rate is ~600,000 rows) would hold the store's writer for
        seconds, with lease renewals waiting behind it."""
        count = rows = 0
        for batch in self._batches:
            if count and rows + len(batch) > self.flush_rows:
                break
            count += 1
            rows += len(batch)
        if count == len(self._batches):  # the usual case: everything
            taken, self._batches = self._batches, []
        else:
            taken, self._batches = self._batches[:count], self._batches[count:]
        self._remove(rows)
        if locked:
            self._changed.notify_all()
        return taken

    def take_now(self) -> list[TickBatch] | None:
        """Take what is buffered now, up to ``flush_rows`` rows (whole batches, at least
        one), without waiting; [] if empty; None if that needs :meth:`take_ready` (a put
        or take holds the buffer's condition). The instance's tick writer takes every
        session's rows this way at each point of the shared clock (runners/writer.py):
        one plain call per session, not a coroutine and a lock round trip."""
        if not self._rows:
            return []
        if self._changed.locked() or self._putters or self._taker_waiting:
            return None
        return self._take_rows(locked=False)

    async def take_ready(self) -> list[TickBatch]:
        """:meth:`take_now`, waiting for the buffer's condition if it is held."""
        if not self._rows:
            return []
        async with self._changed:
            return self._take_rows()

    @property
    def due(self) -> bool:
        """Closed, or ``eager_rows`` buffered: to be written now, not at the next interval."""
        return self._due()

    def _due(self) -> bool:
        return self._closed or self._rows >= self.eager_rows

    def _wake_if_due(self) -> None:
        if self._due():
            if self._due_waiter is not None:
                _wake(self._due_waiter)
            if self.on_due is not None:
                self.on_due()

    async def put_back(self, batches: list[TickBatch]) -> None:
        """Return batches a failed write could not store, ahead of newer ones."""
        async with self._changed:
            self._batches[:0] = batches
            rows = sum(len(b) for b in batches)
            self._rows += rows
            if self._pool is not None:
                self._pool.add(rows)
            self._changed.notify_all()

    async def unbound(self) -> None:
        """The run is ending: puts no longer wait for room (what comes is at most the rest
        of the feed's current block; the drain budget then bounds how long it is written)."""
        async with self._changed:
            self._unbound = True
            self._changed.notify_all()
        self._end_pool_wait()  # its put, if waiting for the pool, goes in now

    async def shed(self) -> list[TickBatch]:
        """Take everything buffered at once, without waiting: what the drain gives up."""
        async with self._changed:
            taken, self._batches = self._batches, []
            self._remove(self._rows)
            self._changed.notify_all()
            return taken

    async def close(self) -> None:
        """No more puts: the flusher drains what is left and then gets []."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._end_pool_wait()
        self._wake_if_due()

    def offer(self, batches: list[TickBatch], rows: int | None = None) -> bool:
        """Add batches now if :meth:`put` would add them without waiting (its fast path:
        room here and in the instance's pool, no flusher waiting for a first row) and
        return True; else add nothing and return False: the caller awaits ``put`` instead.
        For a producer of many sessions that must not wait for one (feeds/simdriver.py).
        ``rows``: the rows in ``batches``, if the caller knows them (the sim driver does:
        summing them here cost a Python call per batch, thousands a second)."""
        size = sum(len(b) for b in batches) if rows is None else rows
        if self._taker_waiting or self._changed.locked() or not self._fits(size):
            return False
        if not self._pool_fits(size):
            return False
        self._add(batches, size)
        self._wake_if_due()
        return True


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
