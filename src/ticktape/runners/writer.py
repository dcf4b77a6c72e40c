"""One tick writer per instance: every session's buffer written with one store call.

Each collect run of an instance registers its :class:`~ticktape.runners.buffer.TickBuffer`
here (:meth:`TickWriter.register`) instead of running a flusher of its own. At each point
of the instance's shared flush clock (:mod:`ticktape.feeds.clock`, a grid of
``flush_interval_s``) the writer's one task takes what every registered buffer holds (up
to ``flush_rows`` each) and writes all of it with one
:meth:`~ticktape.store.base.TickStore.write_sessions` call, one answer per session; a
buffer that becomes due in between (``eager_rows`` buffered — a busy feed — or closed at
the run's end) is written at once, in a call of its own with the others due then.
Rounds are one at a time: a session's batches are in at most one write, in order.

Every per-session rule of the collect runner is applied here, per session, to its answer
(the runner supplies them, :class:`WriterClient`): gap rows are written before the ticks
that follow them, in a write of the session's own beside the rounds (its ticks wait for
it; the other sessions' are written meanwhile); a refused session (``LeaseLost``) is
fenced — its handle is lost and it is written no more — while the others are stored;
a failed write's batches go back ahead of newer ones and are tried again at the next
point of the clock (transient errors were already retried by the store handle,
``store/retrying.py``), or, once the run is ending, are counted as unstored; the stop
drain budget sheds what is left as ``stop_drain`` gaps; the runner's tally counts each
tick once, when acknowledged.

The instance's :class:`~ticktape.runners.buffer.RowPool` (the bound on the rows buffered
by all its sessions) belongs to the writer. The writer's task runs while a session is
registered. If it dies (an unexpected exception), every registered session's run is
stopped and ends failed with the error (:attr:`Registration.done` carries it): no session
is left running with nothing writing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from ticktape.config import BUFFER_WAIT_LOG_EVERY_S, LOOP_SLICE_S, Settings
from ticktape.errors import LeaseLost, StoreError
from ticktape.feeds.clock import ticker
from ticktape.metrics import Metrics
from ticktape.runners.buffer import RowPool, TickBuffer
from ticktape.runtime.handle import RunHandle
from ticktape.store.base import Store, WriteResult
from ticktape.throttle import LogThrottle
from ticktape.ticks import TickBatch, tick_counts

log = logging.getLogger(__name__)


class TickWriterFailed(RuntimeError):
    """The instance's tick writer died: the sessions it wrote end failed with this."""


class WriterClient(Protocol):
    """What a run gives the writer: its per-session rules (``runners/collect.py``)."""

    def pending_gaps(self) -> bool:
        """Gap rows wait to be written (before the ticks that follow them)."""
        ...

    async def write_gaps(self, handle: RunHandle) -> bool:
        """Write them (fenced: a refusal loses ``handle``); False if they could not be
        stored (kept, tried again later)."""
        ...

    def drain_over(self) -> bool:
        """The run is ending and its drain budget ran out: shed the rest."""
        ...

    def shed_rest(self, batches: list[TickBatch], handle: RunHandle) -> None:
        """Record what is given up as ``stop_drain`` gaps."""
        ...

    def stored(self, batches: list[TickBatch], handle: RunHandle) -> None:
        """The store acknowledged ``batches``: count them (the run's tally)."""
        ...


class Registration:
    """One session's buffer, registered with the instance's writer for its run."""

    def __init__(self, buffer: TickBuffer, handle: RunHandle, client: WriterClient) -> None:
        self.buffer = buffer
        self.handle = handle
        self.client = client
        self.active = True  # False once its run gave it up: no answer of it counts then
        self.in_flight = False  # some of its batches are in the write under way
        #: Its batches in the last write whose answer has not been applied to its tally:
        #: if the run gives them up (:meth:`TickWriter.unregister`), its handle's
        #: ``unanswered`` counts them (stored or not, the run cannot tell), as it counts
        #: a write that fences its run or fails after it (never tried again: stored or
        #: not, by an earlier try of the retry layer's, the run cannot tell either).
        self.flying: list[TickBatch] = []
        self.held = False  # its last write failed: tried again at the next clock point
        #: Its gap rows being written, beside the rounds: its ticks wait for them, the
        #: other sessions' do not.
        self.gap_write: asyncio.Task[bool] | None = None
        #: Resolved once the writer is done with it: drained (or given up), or lost;
        #: an exception if its writes cannot go on (the writer died, a non-store error).
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, error: BaseException) -> None:
        """Its writes cannot go on: its run ends (stopped, then failed with ``error``)."""
        if not self.done.done():
            self.done.set_exception(error)
        self.handle.stop.set()  # the pump ends; the run then raises ``error``


class TickWriter:
    """The instance's tick writer (see the module). ``calls``: store calls made, ever."""

    def __init__(self, store: Store, settings: Settings, metrics: Metrics, owner: str) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._owner = owner
        self.pool = RowPool(settings.instance_buffer_max_rows, on_wait=self._pool_wait)
        # what the instance holds for the store, read when the metrics are scraped
        metrics.tick_buffer_rows.set_function(lambda: self.pool.rows)
        self._wait_lines = LogThrottle(BUFFER_WAIT_LOG_EVERY_S)  # the first wait logs
        self._regs: dict[Registration, None] = {}  # registered, in order
        self._due: dict[Registration, None] = {}  # due before the next clock point, in order
        self._wake: asyncio.Future[None] | None = None
        self._woken = False  # the wait ended early (something due), not at a clock point
        self._task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self.calls = 0
        #: A round yields the event loop after this much work (seconds; ``_Slicer``).
        self.slice_s = LOOP_SLICE_S

    def _pool_wait(self) -> None:
        """A feed block waits for room under the instance's bound: counted, and logged at
        most once per ``BUFFER_WAIT_LOG_EVERY_S`` (a store far behind makes thousands)."""
        self._metrics.tick_buffer_waits.inc()
        unlogged = self._wait_lines.event()
        if unlogged is not None:
            log.warning(
                "tick buffers full: %d ticks held for the store (bound %d, "
                "TICKTAPE_INSTANCE_BUFFER_MAX_ROWS); %d feed blocks waited for room since "
                "the last such line (the store is behind the feeds)",
                self.pool.rows,
                self.pool.max_rows,
                unlogged,
            )

    def register(self, handle: RunHandle, client: WriterClient) -> Registration:
        """A new buffer for ``handle``'s run, written by this writer until
        :meth:`unregister` (the run waits for :attr:`Registration.done` first)."""
        if self.failure is not None:
            raise TickWriterFailed(f"the instance's tick writer died: {self.failure!r}")
        s = self._settings
        buffer = TickBuffer(
            max_rows=s.buffer_max_rows,
            flush_rows=s.flush_max_rows,
            eager_rows=s.flush_eager_rows,
            flush_interval_s=s.flush_interval_s,
            pool=self.pool,
        )
        reg = Registration(buffer, handle, client)
        buffer.on_due = lambda: self._on_due(reg)
        self._regs[reg] = None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name=f"tick-writer-{self._owner}")
        return reg

    def unregister(self, reg: Registration) -> None:
        """The run is over: nothing more of it is written or counted. A write of it
        still unanswered is counted in its handle's ``unanswered``."""
        reg.active = False
        if reg.flying:
            reg.handle.unanswered += tick_counts(reg.flying)
            reg.flying = []
        reg.buffer.on_due = None
        _drop_gap_write(reg)  # the run is over (lost, cancelled): write nothing more
        self._regs.pop(reg, None)
        self._due.pop(reg, None)
        if reg.done.done() and not reg.done.cancelled():
            reg.done.exception()  # retrieved: a lost run does not wait for it
        if not self._regs:
            self._kick()  # the task ends once nobody is registered

    def _on_due(self, reg: Registration) -> None:
        if reg.active and not reg.held:
            self._due[reg] = None
            self._kick()

    def _kick(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            self._woken = True
            wake.set_result(None)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        clock = ticker(self._settings.flush_interval_s, loop)
        try:
            while self._regs:
                at_point = False
                if not self._due:
                    self._woken = False
                    self._wake = clock.after(loop.time())
                    try:
                        await self._wake
                    finally:
                        self._wake = None
                    at_point = not self._woken
                if at_point:  # a point of the clock: everyone, failed ones again too
                    regs = list(self._regs)
                    for reg in regs:
                        reg.held = False
                else:  # out of cycle: only what is due
                    regs = [r for r in self._due if r.active and not r.held]
                self._due.clear()
                if regs:
                    await self._round(regs)
        except BaseException as exc:
            self._die(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    def _die(self, exc: BaseException) -> None:
        self.failure = exc
        if not isinstance(exc, asyncio.CancelledError):
            log.exception("the instance's tick writer died", exc_info=exc)
        error = TickWriterFailed(f"the instance's tick writer died: {type(exc).__name__}: {exc}")
        for reg in list(self._regs):
            _drop_gap_write(reg)
            reg.fail(error)

    async def _round(self, regs: list[Registration]) -> None:
        """Take what each session holds and write it all in one store call."""
        writes: list[list[TickBatch]] = []
        taken: list[Registration] = []
        slicer = _Slicer(self.slice_s)
        for reg in regs:
            if slicer.due():
                await slicer.next()
            if not reg.active or reg.done.done():
                continue
            handle, buffer, client = reg.handle, reg.buffer, reg.client
            gaps_failed = False  # its gap rows were just tried and kept: its ticks go on
            gap_write = reg.gap_write
            if gap_write is not None:
                if not gap_write.done():
                    continue  # its ticks wait for its gap rows; the others' do not
                reg.gap_write = None
                if gap_write.cancelled():
                    continue
                error = gap_write.exception()
                if error is not None:  # not the store's: this session's run fails
                    reg.fail(error)
                    continue
                gaps_failed = not gap_write.result()
            if handle.lost.is_set():  # fenced: write nothing more
                reg.finish()
                continue
            shed = client.drain_over() and buffer.rows > 0
            if shed:
                client.shed_rest(await buffer.shed(), handle)
            if client.pending_gaps() and (shed or not gaps_failed):
                # Before the ticks after them (a crash never hides a gap), and beside the
                # round: a slow gap write holds back this session's ticks, not the others'.
                # Gap rows that could not be stored are tried again at its next round,
                # after the ticks waiting meanwhile.
                reg.gap_write = asyncio.create_task(self._write_gaps(reg))
                continue
            batches = buffer.take_now()
            if batches is None:  # a put or a take holds its condition: wait for it
                batches = await buffer.take_ready()
            if not batches:
                if buffer.closed:
                    reg.finish()
                continue
            reg.in_flight = True
            reg.flying = batches
            writes.append(batches)
            taken.append(reg)
        if not writes:
            return
        self.calls += 1
        try:
            answers = await self._store.ticks.write_sessions(writes, owner=self._owner)
        except StoreError as exc:  # the whole call failed: every session's write did
            answers = [exc] * len(writes)
        finally:
            for reg in taken:
                reg.in_flight = False
        slicer = _Slicer(self.slice_s)
        for reg, batches, answer in zip(taken, writes, answers, strict=True):
            if slicer.due():
                await slicer.next()
            if not reg.active:  # its run gave up on it meanwhile: nothing of it counts
                continue
            reg.flying = []
            if isinstance(answer, WriteResult):  # the usual case: no await per session
                self._stored(reg, batches)
            else:
                await self._failed(reg, batches, answer)

    async def _write_gaps(self, reg: Registration) -> bool:
        try:
            return await reg.client.write_gaps(reg.handle)
        finally:
            self._on_due(reg)  # its next round: its ticks (or its end) without waiting

    def _stored(self, reg: Registration, batches: list[TickBatch]) -> None:
        # The runner's own tally: what it handed over and saw acknowledged, once per tick
        # however many tries that took (a lost handle's last write counts too).
        reg.client.stored(batches, reg.handle)
        if reg.handle.lost.is_set():
            reg.finish()
        elif reg.buffer.due:
            self._due[reg] = None  # more than flush_rows left, or closed: go on

    async def _failed(self, reg: Registration, batches: list[TickBatch], answer: Exception) -> None:
        handle, buffer = reg.handle, reg.buffer
        handle.failed_writes += 1  # its seal checks for a write that landed in part
        if isinstance(answer, LeaseLost):
            self._metrics.fenced_writes.inc()
            log.warning("session %s: %s; runner stops writing", handle.session_id, answer)
            handle.lose(f"tick write rejected by the store: {answer}")
            # refused — but an earlier try of it (the retry layer's) may have stored it
            handle.unanswered += tick_counts(batches)
            reg.finish()
            return
        if not isinstance(answer, StoreError):  # not the store's: this session's run fails
            reg.fail(answer)
            return
        self._metrics.tick_errors.inc()
        log.error(
            "session %s: could not store %d ticks: %s",
            handle.session_id,
            sum(len(b) for b in batches),
            answer,
        )
        if handle.lost.is_set():
            # never tried again, and a store error does not say it stored nothing (an
            # answer lost, a timeout): stored or not, as a write given up unanswered
            handle.unanswered += tick_counts(batches)
            reg.finish()
            return
        await buffer.put_back(batches)
        if buffer.closed:  # ending (stop, hand-over or duration) and the store refused
            handle.unstored += buffer.rows
            await buffer.shed()
            reg.finish()
            return
        reg.held = True  # again at the next point of the clock, not in a tight loop
        self._due.pop(reg, None)


class _Slicer:
    """Yields the event loop once ``LOOP_SLICE_S`` of a round's work has passed: a round
    over thousands of sessions takes tens of milliseconds, and a request (a start, a
    heartbeat) then waits for one slice, not the whole round."""

    def __init__(self, slice_s: float) -> None:
        self._slice_s = slice_s
        self._until = time.perf_counter() + slice_s

    def due(self) -> bool:
        """A slice's work has passed: :meth:`next` yields (checked without a coroutine:
        a round asks once per session)."""
        return time.perf_counter() >= self._until

    async def next(self) -> None:
        if time.perf_counter() >= self._until:
            await asyncio.sleep(0)
            self._until = time.perf_counter() + self._slice_s


def _drop_gap_write(reg: Registration) -> None:
    """Cancel the run's gap write in flight, or take the answer nobody will read."""
    gap_write, reg.gap_write = reg.gap_write, None
    if gap_write is None:
        return
    if not gap_write.done():
        gap_write.cancel()
    elif not gap_write.cancelled():
        gap_write.exception()  # retrieved: its run is over


__all__ = ["Registration", "TickWriter", "TickWriterFailed", "WriterClient"]
