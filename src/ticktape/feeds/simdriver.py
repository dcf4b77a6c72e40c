"""One driver for every simulated session of an instance: the simulated feed in bulk.

Each simulated session paced by a chain of its own (an async generator resumed per
block, wrapping every batch in a feed item, a ``put`` per batch) costs the event loop
a wake-up and a few dozen Python calls per block, four blocks a second per session:
at a thousand sessions, a quarter of the instance's CPU. A :class:`SimDriver` is one
task instead: at each point of the instance's shared block clock
(:mod:`ticktape.feeds.clock`, a grid of ``BLOCK_PERIOD_S``) it hands every attached
session its due blocks straight into that session's buffer (one call of the session's
``offer``), and counts the rows it handed out once per slice of a turn (a turn over
thousands of sessions yields the event loop every ``LOOP_SLICE_S`` of work: a request
waits for one slice, not the whole turn). The sessions' runners
only wait for their end (stop, loss, hand-over, duration); nothing of theirs wakes per
block. :attr:`SimDriver.turns` counts the driver's turns (one per grid point while any
session is attached, however many sessions).

What the per-session generator (:meth:`SimExchange.blocks`) promises stays:

- **The same ticks.** Blocks come from the session's own
  :class:`~ticktape.feeds.sim.SimExchange` (its own random streams, its resume
  point), in order: the data depend on the seed and configuration only.
- **The rate in wall time.** A session's ``n``-th block is due ``n`` blocks' worth of
  trades after it was attached; a turn hands out every block due by then (a session
  behind by more than ``MAX_CATCH_UP_S`` — a stopped process — goes on from now rather
  than replaying the pause).
- **Back-pressure, one session at a time.** A block the session's buffer refuses (its
  own bound, the instance's pool, or a flusher that must be woken) is handed to an
  awaited ``put`` of the session's own; until that put is done the session gets no
  further block (blocks due meanwhile come after it, catching up as above), and the
  other sessions are not held back.
- **Receive times** are the moment the block was handed out (the time of the turn's
  slice: every block of a slice shares one read-only array of them,
  :class:`~ticktape.feeds.sim.Stamps`).
- **A stop**: :meth:`SimDriver.detach` ends the session's feed at once and returns the
  put still holding its last block, if any; the runner unbounds the buffer so that
  block goes in, and nothing more is generated.

Sessions at the maximum rate (``rate_per_s`` 0: as fast as the consumer reads) and
feeds with scripted outages (:class:`~ticktape.feeds.simulated.SimOutage`) keep the
per-session path (:class:`~ticktape.feeds.simulated.SimFeed`): they are pulled, not
paced, and they are few.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable

from ticktape.config import LOOP_SLICE_S
from ticktape.feeds.clock import ticker
from ticktape.feeds.contract import now_us
from ticktape.feeds.sim import BLOCK_PERIOD_S, MAX_CATCH_UP_S, SimExchange, Stamps
from ticktape.ticks import TickBatch

#: Hands a block (and the rows in it) to the session's buffer now: True if it went in,
#: False if it must wait.
Offer = Callable[[list[TickBatch], int], bool]
#: Hands a block to the session's buffer, waiting for room.
Put = Callable[[list[TickBatch]], Awaitable[None]]
#: Told once per slice of a turn how many trades and book snapshots it handed out.
RowCounter = Callable[[int, int], None]


class SimStream:
    """One attached session: its exchange, its buffer's doors and its pacing."""

    def __init__(
        self,
        exchange: SimExchange,
        offer: Offer,
        put: Put,
        now: float,
        failed: asyncio.Future[None],
    ) -> None:
        self.exchange = exchange
        self._offer = offer
        self._put = put
        self._started = now  # loop time the pacing counts from
        self._emitted = 0  # trades per symbol handed out so far
        self._per = exchange.block_events
        self._rate = exchange.rate_per_s
        self.putting: asyncio.Task[None] | None = None  # a refused block, waiting for room
        #: Ends with the error of this session's feed, if generating or handing out fails.
        self.failed = failed

    def feed(self, now: float, stamps: Stamps) -> tuple[int, int]:
        """Hand out the blocks due by ``now``, received at ``stamps`` (made for at least
        the exchange's ``block_events`` rows); the rows handed out (trades, snapshots)."""
        putting = self.putting
        if putting is not None:
            if not putting.done():
                return 0, 0  # held back: its buffer has no room yet
            self.putting = None
            if not putting.cancelled():
                putting.result()  # its error, if the put failed
        per = self._per
        rate = self._rate
        due = self._started + (self._emitted + per) / rate
        if due > now:
            return 0, 0  # the usual case between its blocks
        if now - due > MAX_CATCH_UP_S:  # paused (SIGSTOP, a stall): go on from now
            self._started = now - (self._emitted + per) / rate
            due = now
        take_block = self.exchange.take_block
        trades = books = 0
        while due <= now:
            block, t, b = take_block(stamps)
            self._emitted += per
            trades += t
            books += b
            if not self._offer(block, t + b):
                self.putting = asyncio.ensure_future(self._put(block))
                break
            due = self._started + (self._emitted + per) / rate
        return trades, books

    def fail(self, exc: BaseException) -> None:
        if not self.failed.done():
            self.failed.set_exception(exc)


class SimDriver:
    """The simulated feeds of one instance, on one task (see the module).

    ``on_rows`` is told once per slice of a turn (once per :meth:`turn`) how many
    trades and snapshots it handed out.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_rows: RowCounter | None = None,
        period: float = BLOCK_PERIOD_S,
    ) -> None:
        self._loop = weakref.ref(loop)  # a driver does not keep a closed loop alive
        self._on_rows = on_rows
        self.period = period
        self._streams: dict[SimStream, None] = {}  # attached, in order (a set that keeps it)
        self._stamp_rows = 1  # the largest block of any session attached (rows per batch)
        self._task: asyncio.Task[None] | None = None
        self.turns = 0  # driver turns, ever: one per grid point while a session is attached

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop()

    @property
    def sessions(self) -> int:
        return len(self._streams)

    def attach(self, exchange: SimExchange, offer: Offer, put: Put) -> SimStream:
        """Start feeding ``exchange``'s blocks to a buffer through ``offer`` (and ``put``
        for a block ``offer`` refuses); its first block is due one block from now."""
        if exchange.rate_per_s <= 0:
            raise ValueError("the driver paces feeds: a maximum-rate feed is pulled instead")
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            raise RuntimeError("a driver serves the loop it was made for")
        stream = SimStream(exchange, offer, put, loop.time(), loop.create_future())
        self._streams[stream] = None
        self._stamp_rows = max(self._stamp_rows, exchange.block_events)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(loop), name="sim-driver")
        return stream

    def detach(self, stream: SimStream) -> asyncio.Task[None] | None:
        """Stop feeding ``stream``; the put still holding its last block, if any."""
        self._streams.pop(stream, None)
        putting, stream.putting = stream.putting, None
        return putting

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        clock = ticker(self.period, loop)
        try:
            while self._streams:
                await clock.after(loop.time())
                await self.sliced_turn(loop.time)
        except Exception as exc:  # the driver itself failed: every attached feed ends with it
            for stream in list(self._streams):
                self._streams.pop(stream, None)
                stream.fail(exc)
            raise

    def turn(self, now: float) -> None:
        """Hand every attached session the blocks due by ``now`` (loop time), in one go."""
        self.turns += 1
        self._feed(list(self._streams), 0, now, None)

    async def sliced_turn(
        self, clock: Callable[[], float] | None = None, slice_s: float = LOOP_SLICE_S
    ) -> None:
        """Hand every attached session the blocks due, yielding the loop after each
        ``slice_s`` of work: a turn over thousands of sessions takes tens of milliseconds,
        and a request (a start, a heartbeat) waits for one slice instead. Each slice
        hands out what is due by its own start (``clock``: the loop's time), stamped
        with that moment; a session detached during a yield gets nothing more, one
        attached meanwhile gets its first block at a later turn (due one block after it
        was attached)."""
        if clock is None:
            loop = self.loop
            if loop is None:
                raise RuntimeError("the driver's event loop is gone")
            clock = loop.time
        self.turns += 1
        streams = list(self._streams)
        i = 0
        while True:
            i = self._feed(streams, i, clock(), time.perf_counter() + slice_s)
            if i >= len(streams):
                return
            await asyncio.sleep(0)

    def _feed(self, streams: list[SimStream], i: int, now: float, until: float | None) -> int:
        """Feed ``streams[i:]`` the blocks due by ``now`` until ``until`` (perf_counter),
        if given; the index to go on from. ``on_rows`` is told what this handed out.
        Every block it hands out is stamped with the same receive time, one read-only
        array shared by all of them (:class:`~ticktape.feeds.sim.Stamps`)."""
        stamps = Stamps(now_us(), self._stamp_rows)
        trades = books = 0
        attached = self._streams
        while i < len(streams):
            stream = streams[i]
            i += 1
            if stream not in attached:  # detached meanwhile: its feed has ended
                continue
            try:
                t, b = stream.feed(now, stamps)
            except Exception as exc:  # this session's feed ends with it; the others go on
                attached.pop(stream, None)
                stream.fail(exc)
                continue
            trades += t
            books += b
            if until is not None and time.perf_counter() >= until:
                break
        if self._on_rows is not None and (trades or books):
            self._on_rows(trades, books)
        return i
