"""The collect runner: feed → bounded buffer → store, with counts that match the store.

It runs inside the supervisor's task for one session. It never changes the
session's status itself: it reports how it ended and the supervisor writes the
transition (store first). It does stop writing the moment the store says it
no longer owns the session (fencing, invariant 5).

A resumed session (claimed after its owner was lost) continues after what is
already stored — the feed starts after the newest stored tick and the last
trade id of each symbol — and the gap is recorded in the session's history.

The runner consumes only the feed contract (:mod:`ticktape.feeds.contract`):
:func:`~ticktape.feeds.factory.build_feed` picks the source for the session's
``exchange`` — except a paced simulated feed, whose blocks the instance's sim driver
(:mod:`ticktape.feeds.simdriver`) puts into the session's buffer itself, the run only
waiting for its end. Ticks go to the bounded buffer with their receive times; the
instance's tick writer (:mod:`ticktape.runners.writer`) writes them with every other
session's, applying this run's rules (:meth:`CollectRunner.stored`, ``write_gaps``,
``shed_rest``). ``gap`` events become gap rows of the session, written (fenced like
ticks) before the ticks that follow them; a refused subscription fails the session
with the exchange's reason.

A run that ends (stop or duration) drains its buffer for at most
``Settings.stop_drain_s`` (``TICKTAPE_STOP_DRAIN_S``); what is still buffered then
is shed, never silently: each symbol and data type gets a ``stop_drain`` gap with
the exact number of rows shed, and the history a ``stop_drain`` note with the
totals. A hand-over (shutdown) is not cut this way: the next owner resumes after
what is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from typing import Any, Protocol

from ticktape.config import VISIBILITY_TIMEOUT_S, Settings
from ticktape.domain import DataType, Reason, Session, utcnow
from ticktape.errors import LeaseLost, StoreError
from ticktape.feeds.contract import (
    EventKind,
    FeedBooks,
    FeedEvent,
    Gap,
    GapCause,
    SubscriptionRefused,
    now_us,
)
from ticktape.feeds.factory import BuiltFeed, build_feed
from ticktape.feeds.sim import ResumePoint, SimExchange
from ticktape.metrics import Metrics
from ticktape.runners.instance import InstanceParts
from ticktape.runtime.handle import RunHandle
from ticktape.runtime.runner import Outcome, RunResult
from ticktape.store.base import Store, TickQuery
from ticktape.store.rules import from_us, to_us
from ticktape.store.transitions import note
from ticktape.ticks import FeedCounts, Int64Array, TickBatch, TickCounts, TradeBatch

log = logging.getLogger(__name__)

LAST_PRICE_ROWS = 100  # trades read at the newest timestamp to find a symbol's last price
#: How often changed feed counts (duplicates dropped, malformed messages) are noted in the
#: session's history while it runs; the run's end always notes the final counts.
FEED_COUNTS_INTERVAL_S = 10.0


class BlockSink(Protocol):
    """Where a run's feed blocks go: the session's buffer (``runners/buffer.py``: its
    ``put``, ``offer`` and ``unbound``), or a wrapper that keeps that contract."""

    async def put(self, batches: list[TickBatch]) -> None: ...

    def offer(self, batches: list[TickBatch], rows: int | None = None) -> bool: ...

    async def unbound(self) -> None: ...


def _ended(handle: RunHandle) -> Outcome:
    """How a pump's run ended, by what its handle says (a loss first)."""
    if handle.lost.is_set():
        return Outcome.LOST
    if handle.stop.is_set():
        return Outcome.STOPPED
    if handle.handover.is_set():
        return Outcome.HANDED_OVER
    return Outcome.FINISHED


def _iso(us: int) -> str:
    return from_us(us).isoformat()


class CollectRunner:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        owner: str,
        parts: InstanceParts | None = None,
    ) -> None:
        """``parts``: the instance's tick writer and sim driver (``runners/instance.py``),
        shared by every run of the instance; None: parts of this run's own."""
        self._store = store
        self._parts = parts or InstanceParts(store, settings, metrics, owner)
        self._writer = self._parts.writer
        self._settings = settings
        self._metrics = metrics
        self._owner = owner
        self._gaps: list[Gap] = []  # gap rows not stored yet (written by the tick writer)
        self._exchange = "sim"
        self._refused: str | None = None
        self._drain_until: float | None = None  # set when the run ends: shed what is left then
        self._stored_ts: dict[tuple[str, DataType], int] = {}  # newest stored row per stream
        self._shed = TickCounts()
        self._run_id = uuid.uuid4().hex  # names this run's feed_counts notes
        self._counts_noted: tuple[dict[str, int], dict[str, int]] = ({}, {})

    async def run(self, session: Session, handle: RunHandle) -> RunResult:
        cfg = session.config
        resume = await self._resume_point(session, handle) if handle.resumed else None
        remaining = None  # the simulated feed generates no more than the duration needs
        if cfg.duration_s is not None:
            started = session.started_at if handle.resumed else None
            remaining = cfg.duration_s - (
                0.0 if started is None else (utcnow() - started).total_seconds()
            )
        built = build_feed(session, self._settings.feeds, resume, remaining_s=remaining)
        self._exchange = session.exchange
        if handle.resumed:
            await self._record_gap(session, resume, built.start_us)
            if resume is not None and built.connector is None:
                # The simulated exchange continues right after the stored ids: the restart
                # is a stretch of time without data, not lost trades.
                self._gaps.extend(
                    Gap(
                        symbol,
                        dt,
                        resume.after_us,
                        built.start_us,
                        GapCause.RESTART,
                        0 if dt is DataType.TRADES else None,
                        "resumed by another instance",
                    )
                    for symbol in session.symbols
                    for dt in session.data_types
                )
        # the instance's writer takes this buffer's rows (one store call for every session)
        written = self._writer.register(handle, self)
        buffer = written.buffer
        counting = asyncio.create_task(self._counts_loop(session.id, built))
        deadline = None
        if cfg.duration_s is not None:
            remaining = cfg.duration_s
            if handle.resumed and session.started_at is not None:  # the same run, continued
                remaining -= (utcnow() - session.started_at).total_seconds()
            deadline = time.monotonic() + max(0.0, remaining)
        try:
            outcome = await self._pump(built, buffer, handle, deadline)
            if outcome in (Outcome.STOPPED, Outcome.FINISHED):
                self._drain_until = time.monotonic() + self._settings.stop_drain_s
            await buffer.close()
            if outcome is Outcome.LOST:
                return RunResult(Outcome.LOST, dropped=buffer.rows)
            await written.done  # all drained (or given up with a count); the writer's error
        finally:
            if written.in_flight and handle.lost.is_set():
                # Fenced with a write in flight: the writer starts no other one for it once
                # the handle is lost, so take that write's answer for the tally — until the
                # lease expires at most (its retries too), then give up on it.
                slack = self._settings.lease_s - self._settings.self_fence_after_s
                await asyncio.wait({written.done}, timeout=slack)
            self._writer.unregister(written)  # lost, cancelled or crashed: nothing more
            counting.cancel()  # after the writer's part: its end is the first thing done here
            await asyncio.gather(counting, return_exceptions=True)
            buffer.detach()  # what a lost run leaves buffered no longer counts for the instance
        if handle.lost.is_set():
            return RunResult(Outcome.LOST, dropped=buffer.rows)
        await self._note_counts(session.id, built)  # the run's final counts
        error = None
        if handle.unstored:
            error = f"{handle.unstored} ticks could not be stored"
        if self._gaps:
            log.error("session %s: %d gap rows could not be stored", session.id, len(self._gaps))
            error = error or f"{len(self._gaps)} gap rows could not be stored"
        if self._refused is not None:
            error = self._refused
        if self._shed.trades or self._shed.orderbook:
            shed = {
                "budget_s": self._settings.stop_drain_s,
                "trades": self._shed.trades,
                "orderbook": self._shed.orderbook,
            }
            await note(
                self._store,
                session.id,
                actor=self._owner,
                reason=Reason.STOP_DRAIN,
                detail=json.dumps(shed, sort_keys=True),
            )
        await self._store.ticks.wait_visible(VISIBILITY_TIMEOUT_S)
        # every write answered (the writer is done with it), and visible: if none failed,
        # none can have landed in part
        handle.acknowledged = handle.failed_writes == 0
        return RunResult(outcome, error)

    # ------------------------------------------------------------------ feed counts

    async def _note_counts(self, session_id: str, built: BuiltFeed) -> None:
        """Note the run's duplicates dropped and malformed messages if they changed
        (cumulative for this run; the quality report reads the newest note of each run)."""
        counters = built.counters
        counts = FeedCounts(self._run_id, dict(counters.duplicates), dict(counters.malformed))
        seen = (counts.duplicates, counts.malformed)
        if seen == self._counts_noted:
            return
        detail = counts.dump()
        if await note(
            self._store, session_id, actor=self._owner, reason=Reason.FEED_COUNTS, detail=detail
        ):
            self._counts_noted = seen

    async def _counts_loop(self, session_id: str, built: BuiltFeed) -> None:
        while True:
            await asyncio.sleep(FEED_COUNTS_INTERVAL_S)
            await self._note_counts(session_id, built)

    # ------------------------------------------------------------------ resume

    async def _resume_point(self, session: Session, handle: RunHandle) -> ResumePoint | None:
        """Where the stored recording ends; also makes the handle's tally start from it."""
        position = await self._store.ticks.position(session.id)
        handle.written = await self._store.ticks.count(session.id)
        if position.last_ts is None:
            return None  # nothing stored yet: a fresh start loses nothing
        prices: dict[str, float] = {}
        for symbol in position.last_trade_ids:
            last = await self._store.ticks.read_trades(
                TickQuery(session.id, symbol=symbol, start=position.last_ts, limit=LAST_PRICE_ROWS)
            )
            if last:
                prices[symbol] = max(last, key=lambda t: t.trade_id).price
        return ResumePoint(to_us(position.last_ts), dict(position.last_trade_ids), prices)

    async def _record_gap(
        self, session: Session, resume: ResumePoint | None, start_us: int
    ) -> None:
        """The ``resumed`` event: ticks between the newest stored one and ``start_us`` are lost."""
        gap = {
            "from": None if resume is None else _iso(resume.after_us),  # None: nothing stored
            "to": _iso(start_us),
            "lost_s": None if resume is None else round((start_us - resume.after_us) / 1e6, 6),
            "last_trade_ids": {} if resume is None else dict(resume.last_trade_ids),
        }
        await note(
            self._store,
            session.id,
            actor=self._owner,
            reason=Reason.RESUMED,
            detail=json.dumps(gap, sort_keys=True),
        )
        log.warning("session %s: resumed, gap %s", session.id, gap)

    # ------------------------------------------------------------------ pump

    async def _pump(
        self, built: BuiltFeed, buffer: BlockSink, handle: RunHandle, deadline: float | None
    ) -> Outcome:
        """Move blocks from the feed into the buffer until stop, loss, hand-over or the deadline.

        A paced simulated feed is driven by the instance's sim driver (into the session's
        buffer, or a paper run's tap that also hands each block to its strategy,
        runners/paper.py); any other feed is pulled here, block by block."""
        if built.sim is not None and built.sim.rate_per_s > 0:
            return await self._pump_sim(built.sim, buffer, handle, deadline)
        until = asyncio.Event()

        async def watch() -> None:
            waiters = [
                asyncio.create_task(handle.stop.wait()),
                asyncio.create_task(handle.lost.wait()),
                asyncio.create_task(handle.handover.wait()),
            ]
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
                until.set()
            # ending: the rest of the feed's current block goes in without waiting for room,
            # so the pump ends now and the drain budget alone bounds the stop
            await buffer.unbound()

        watcher = asyncio.create_task(watch())
        # looked up once: every item of every session counts here
        feed_trades = self._metrics.feed_rows.labels(exchange=self._exchange, data_type="trades")
        feed_books = self._metrics.feed_rows.labels(exchange=self._exchange, data_type="orderbook")
        try:
            async for item in built.feed.items(until):
                if isinstance(item, FeedEvent):
                    self._on_event(handle, item)
                else:  # the rows keep their receive times
                    books = isinstance(item, FeedBooks)
                    (feed_books if books else feed_trades).inc(len(item))
                    batch = item.batch
                    if batch.recv_us is not item.recv_us:  # not attached by the feed yet
                        batch = dataclasses.replace(batch, recv_us=item.recv_us)
                    await buffer.put([batch])
        except SubscriptionRefused as exc:
            self._refused = str(exc)
            log.error("session %s: %s", handle.session_id, exc)
            return Outcome.FINISHED
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        return _ended(handle)

    async def _pump_sim(
        self, exchange: SimExchange, buffer: BlockSink, handle: RunHandle, deadline: float | None
    ) -> Outcome:
        """A paced simulated feed: the instance's driver puts its blocks into the buffer
        (``buffer.offer``, and ``buffer.put`` for a block refused for room); the run only
        waits for its end. The simulated exchange has no events to pass on (no gaps, no
        refusal): its blocks are all there is."""
        driver = self._parts.driver()
        stream = driver.attach(exchange, buffer.offer, buffer.put)
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(handle.stop.wait()),
            asyncio.ensure_future(handle.lost.wait()),
            asyncio.ensure_future(handle.handover.wait()),
        ]
        putting = None
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.wait(
                [*waiters, stream.failed], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            putting = driver.detach(stream)  # nothing more is generated
            for w in waiters:
                w.cancel()
            if putting is not None and not putting.done():
                # ending: the block held back goes in without waiting for room (below), so
                # the pump ends now and the drain budget alone bounds the stop
                try:
                    await buffer.unbound()
                    await putting
                finally:
                    putting.cancel()  # only if this run is cancelled meanwhile
        if stream.failed.done():
            stream.failed.result()  # the feed's error ends the run as a generator's would
        await buffer.unbound()
        return _ended(handle)

    def _on_event(self, handle: RunHandle, event: FeedEvent) -> None:
        if event.kind is EventKind.GAP and event.gap is not None:
            self._gaps.append(event.gap)
            self._metrics.feed_gaps.labels(
                exchange=self._exchange, cause=event.gap.cause.value
            ).inc()
            if event.gap.lost:
                self._metrics.feed_lost.labels(exchange=self._exchange).inc(event.gap.lost)
            log.warning("session %s: gap %s", handle.session_id, event.gap)
        elif event.kind in (EventKind.DISCONNECTED, EventKind.STALE):
            log.info("session %s: feed %s %s", handle.session_id, event.kind, event.detail)

    # ------------------------------------------------------------------ the writer's rules
    # Called by the instance's tick writer (runners/writer.py, ``WriterClient``) for this run.

    def pending_gaps(self) -> bool:
        return bool(self._gaps)

    async def write_gaps(self, handle: RunHandle) -> bool:
        """Store the gaps seen so far; on a store error they are kept and tried again
        (False)."""
        gaps, self._gaps = self._gaps, []
        try:
            # transient errors are retried by the store handle (store/retrying.py)
            await self._store.ticks.write_gaps(handle.session_id, gaps, owner=self._owner)
        except LeaseLost as exc:
            self._gaps[:0] = gaps
            handle.lose(f"gap write rejected by the store: {exc}")
            return False
        except StoreError as exc:
            self._gaps[:0] = gaps
            log.error("session %s: could not store %d gaps: %s", handle.session_id, len(gaps), exc)
            return False
        except asyncio.CancelledError:
            self._gaps[:0] = gaps  # the run is over: counted as not stored at its end
            raise
        return True

    def drain_over(self) -> bool:
        return self._drain_until is not None and time.monotonic() >= self._drain_until

    def shed_rest(self, batches: list[TickBatch], handle: RunHandle) -> None:
        """The drain budget ran out: record what is given up as gaps (written next)."""
        streams: dict[tuple[str, DataType], list[int]] = {}  # [rows, first ts, last ts]
        for b in batches:
            if not len(b):
                continue
            dt = DataType.TRADES if isinstance(b, TradeBatch) else DataType.ORDERBOOK
            first, last = int(b.ts_us[0]), int(b.ts_us[-1])
            s = streams.setdefault((b.symbol, dt), [0, first, last])
            s[0] += len(b)
            s[1], s[2] = min(s[1], first), max(s[2], last)
        budget = self._settings.stop_drain_s
        for (symbol, dt), (rows, first, last) in sorted(streams.items()):
            start = self._stored_ts.get((symbol, dt), first - 1)
            detail = f"drain budget of {budget:g}s ran out at the end of the run: {rows} not stored"
            self._gaps.append(Gap(symbol, dt, start, last, GapCause.STOP_DRAIN, rows, detail))
            self._metrics.feed_gaps.labels(
                exchange=self._exchange, cause=GapCause.STOP_DRAIN.value
            ).inc()
            self._metrics.ticks_shed.labels(data_type=dt.value).inc(rows)
            if dt is DataType.TRADES:
                self._shed += TickCounts(trades=rows)
            else:
                self._shed += TickCounts(orderbook=rows)
        log.warning(
            "session %s: drain budget of %gs ran out; shed %d trades and %d snapshots "
            "(recorded as stop_drain gaps)",
            handle.session_id,
            budget,
            self._shed.trades,
            self._shed.orderbook,
        )

    def stored(self, batches: list[TickBatch], handle: RunHandle) -> None:
        """The store acknowledged ``batches`` (the writer calls this once per write)."""
        # The runner's own tally: what it handed over and saw acknowledged, once per tick
        # however many tries that took. Not the store's "new rows" answer — a try whose
        # acknowledgement was lost stored the rows, and its retry then reports none new.
        trades = books = 0
        committed = now_us()
        lag = self._metrics.feed_commit_lag
        for b in batches:  # one pass: this runs for every flush of every session
            n = len(b)
            if not n:
                continue
            if isinstance(b, TradeBatch):
                trades += n
                self._stored_ts[(b.symbol, DataType.TRADES)] = int(b.ts_us[-1])
            else:
                books += n
                self._stored_ts[(b.symbol, DataType.ORDERBOOK)] = int(b.ts_us[-1])
            if b.recv_us is not None:
                lag.observe(max(0, committed - _oldest(b.recv_us)) / 1e6)
        written = handle.written  # one new (frozen) TickCounts per write, not two
        handle.written = TickCounts(written.trades + trades, written.orderbook + books)
        self._metrics.ticks_written(trades, books)


def _oldest(recv_us: Int64Array) -> int:
    """The smallest receive time of a batch (a Python ``min`` of a few values costs a
    tenth of numpy's, whose per-call overhead dominates a 5-row batch)."""
    if len(recv_us) <= 32:
        return int(min(recv_us.tolist()))
    return int(recv_us.min())
