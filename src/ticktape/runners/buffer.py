"""A bounded buffer of tick batches between a feed and the store.

The producer (the feed loop) waits when the buffer holds ``max_rows`` — back-
pressure instead of unbounded memory when the store is slower than the feed.
The flusher takes everything buffered once ``flush_rows`` are waiting or
``flush_interval_s`` has passed — or, as soon as ``eager_rows`` are waiting: the
flusher waits in :meth:`take` only while none of its writes is in flight, so a busy
feed's rows go to an idle store at once (the writer is not left idle while the
first ``flush_rows`` gather) and what gathers during a write is the next write,
however many that is (up to ``flush_rows``). A quiet session never reaches
``eager_rows`` and still writes once per ``flush_interval_s``.

Once the run is ending the producer no longer waits (:meth:`unbound`: the rest of
the feed block it is putting goes in at once, so the pump ends promptly), and the
flusher may give up on what is left (:meth:`shed`) when its drain budget runs out.
"""

from __future__ import annotations

import asyncio

from ticktape.ticks import TickBatch


class TickBuffer:
    def __init__(
        self,
        *,
        max_rows: int,
        flush_rows: int,
        flush_interval_s: float,
        eager_rows: int | None = None,
    ) -> None:
        self.max_rows = max_rows
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
        if not self._taker_waiting and not self._changed.locked() and self._fits(size):
            # the common case, thousands of times a second on a busy instance: room, and
            # nobody waiting for rows (a flusher past its wait sleeps on its due timer)
            self._batches.extend(batches)
            self._rows += size
            self._wake_if_due()
            return
        async with self._changed:
            await self._changed.wait_for(lambda: self._fits(size))
            self._batches.extend(batches)
            self._rows += size
            self._changed.notify_all()
        self._wake_if_due()

    def _fits(self, size: int) -> bool:
        if self._closed or self._unbound or self._rows == 0:
            return True
        return self._rows + size <= self.max_rows

    async def take(self) -> list[TickBatch]:
        """Wait for a flush to be due and take up to ``flush_rows`` rows (whole batches,
        at least one); [] only once closed and empty.

        Due means: closed, or ``eager_rows`` buffered (at most ``flush_rows``), or
        ``flush_interval_s`` passed since the first row arrived. Between the first row
        and then the flusher sleeps on one timer: a put wakes it only when that makes
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
                loop = asyncio.get_running_loop()
                waiter: asyncio.Future[None] = loop.create_future()
                timer = loop.call_later(self.flush_interval_s, _wake, waiter)
                self._due_waiter = waiter
                try:
                    await waiter
                finally:
                    timer.cancel()
                    self._due_waiter = None
            async with self._changed:
                # At most ~flush_rows per write (whole batches): one write of a huge backlog
                # (a block of 100 symbols at the maximum rate is ~600,000 rows) would hold
                # the store's writer for seconds, with lease renewals waiting behind it.
                count = rows = 0
                for batch in self._batches:
                    if count and rows + len(batch) > self.flush_rows:
                        break
                    count += 1
                    rows += len(batch)
                taken, self._batches = self._batches[:count], self._batches[count:]
                self._rows -= rows
                self._changed.notify_all()
                if taken or self._closed:
                    return taken

    def _due(self) -> bool:
        return self._closed or self._rows >= self.eager_rows

    def _wake_if_due(self) -> None:
        if self._due_waiter is not None and self._due():
            _wake(self._due_waiter)

    async def put_back(self, batches: list[TickBatch]) -> None:
        """Return batches a failed write could not store, ahead of newer ones."""
        async with self._changed:
            self._batches[:0] = batches
            self._rows += sum(len(b) for b in batches)
            self._changed.notify_all()

    async def unbound(self) -> None:
        """The run is ending: puts no longer wait for room (what comes is at most the rest
        of the feed's current block; the drain budget then bounds how long it is written)."""
        async with self._changed:
            self._unbound = True
            self._changed.notify_all()

    async def shed(self) -> list[TickBatch]:
        """Take everything buffered at once, without waiting: what the drain gives up."""
        async with self._changed:
            taken, self._batches, self._rows = self._batches, [], 0
            self._changed.notify_all()
            return taken

    async def close(self) -> None:
        """No more puts: the flusher drains what is left and then gets []."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._wake_if_due()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
