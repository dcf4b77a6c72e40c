"""The backtest runner: a recorded session replayed through a strategy, results stored.

The source session's ticks are read from the store in consecutive windows
(:mod:`ticktape.runners.replay`) by an async feeder and handed through a bounded
queue (``LiveSource``) to the replay engine, which runs on a thread of its own
under the strategy time budget (``ticktape.strategies.run_backtest``). Memory
holds a few windows, never the recording.

Progress: the session's stats count the ticks replayed so far (trades and
book snapshots), published by the heartbeat like a collect session's counts; the
API adds the total (``ticks_total``, counted when the session was created) and an ETA.

Results are **streamed**: the engine hands out its rows in batches of about
``TICKTAPE_RESULT_BATCH_ROWS`` (20,000) as it runs (ended orders in id order, fills, equity points)
and :class:`ResultWriter` appends each to the store (``ResultStore.append``, fenced by
the owner) through a queue of :data:`WRITE_QUEUE` batches, so neither the recording
nor the results sit in memory. At the end — the source exhausted
(``completed``/``source_exhausted``), a stop (``stopped``, results up to there) or
the strategy failing (``failed``/``strategy_error``, traceback in the event) — a last
part records how the run ended, its summary and hash; then the supervisor writes the
end with the final stats = ticks replayed. Until then the results read as
``partial``: the rows of every whole part appended so far (also what a crash leaves).

A run that loses its lease stops and writes nothing more. On shutdown of a resumable
session, or a claim after its owner died, the run is not continued from a
checkpoint: the claiming instance replays again **from the beginning** under a new
run token, whose first part replaces anything stored before, so the final results
equal an uninterrupted run's (invariant 9).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import queue
import threading
import uuid
from collections.abc import Iterator

from ticktape.config import Settings
from ticktape.domain import Reason, Session, Stats
from ticktape.errors import LeaseLost, StoreError, TicktapeError
from ticktape.metrics import Metrics
from ticktape.runners.replay import read_chunks
from ticktape.runtime.handle import RunHandle
from ticktape.runtime.runner import Outcome, RunResult
from ticktape.store.base import PARTIAL_RESULTS, ResultPart, Store, StoredResults
from ticktape.store.rules import to_us
from ticktape.store.transitions import note
from ticktape.strategies import (
    BacktestSpec,
    Chunk,
    LiveSource,
    ResultBatch,
    StrategyRegistry,
    merge_chunk,
    run_backtest,
)
from ticktape.strategies import RunResult as Results
from ticktape.ticks import BookBatch, TickBatch, TickCounts, TradeBatch

log = logging.getLogger(__name__)

QUEUE_CHUNKS = 4  # windows read ahead of the engine
WRITE_QUEUE = 2  # result batches waiting for the store before the engine waits
PUT_POLL_S = 0.2  # the feeder re-checks the stop flag this often while the queue is full


def _counts(chunk: Chunk) -> TickCounts:
    return TickCounts(
        sum(len(b) for b in chunk if isinstance(b, TradeBatch)),
        sum(len(b) for b in chunk if isinstance(b, BookBatch)),
    )


class _Consumed:
    """Counts the ticks of every chunk the engine has fully replayed (for progress)."""

    def __init__(self, handle: RunHandle, symbols: tuple[str, ...]) -> None:
        self.handle = handle
        self.symbols = symbols
        self.current: Chunk | None = None

    def wrap(self, source: LiveSource) -> Iterator[Chunk]:
        for chunk in source:
            self.current = chunk
            yield chunk
            self.handle.written = self.handle.written + _counts(chunk)
            self.current = None

    def final(self, replayed: int) -> TickCounts:
        """Exact counts once the run ended: full chunks plus the replayed head of the
        chunk it stopped in (replay order, ``merge_chunk``)."""
        done = self.handle.written
        partial = replayed - done.trades - done.orderbook
        if partial <= 0 or self.current is None:
            return done
        depth = max((b.depth for b in self.current if isinstance(b, BookBatch)), default=1)
        merged = merge_chunk(self.current, self.symbols, depth)
        trades = int((merged.kind[:partial] == 0).sum())
        return done + TickCounts(trades, partial - trades)


class BacktestRunner:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        owner: str,
        strategies: StrategyRegistry,
    ) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._owner = owner
        self._strategies = strategies

    async def run(self, session: Session, handle: RunHandle) -> RunResult:
        fields = session.config.strategy_fields()
        if fields is None:
            return RunResult(Outcome.STOPPED, error="backtest session without its strategy run")
        fields.pop("ticks_total", None)  # the progress total, not a request field
        spec = BacktestSpec.model_validate(fields)
        if handle.resumed:
            await note(
                self._store,
                session.id,
                actor=self._owner,
                reason=Reason.RESTARTED,
                detail="claimed: the replay starts again from the beginning; its results "
                "replace anything stored before",
            )
        handle.written = TickCounts()
        source = await self._store.sessions.get_session(spec.source_session)
        strategy = self._strategies.create(spec.strategy, spec.params, spec.form)
        symbols = tuple(session.symbols)
        span = await self._store.ticks.span(source.id)
        stop = threading.Event()
        live = LiveSource(QUEUE_CHUNKS)
        consumed = _Consumed(handle, symbols)
        feed_error: list[str] = []

        async def feed() -> None:
            if span is None:
                return
            first, last = span
            if spec.start is not None:
                first = max(first, to_us(spec.start))
            if spec.end is not None:
                last = min(last, to_us(spec.end) - 1)

            async def read(lo: int, hi: int) -> list[TickBatch]:
                # transient errors are retried by the store handle (store/retrying.py)
                return await self._store.ticks.read_window(source.id, lo, hi, symbols)

            async for chunk in read_chunks(
                self._store.ticks,
                source.id,
                symbols=symbols,
                first_us=first,
                last_us=last,
                total_rows=max(1, source.stats.records_collected),
                # paced: windows of about one second of wall time, so progress and a
                # stop are seen every second and read-ahead stays small
                max_window_us=int(spec.speed * 1_000_000) if spec.speed > 0 else None,
                read=read,
            ):
                while not stop.is_set():
                    try:
                        await asyncio.to_thread(live.put, chunk, PUT_POLL_S)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return

        async def feeder() -> None:
            try:
                await feed()
            except TicktapeError as exc:
                feed_error.append(f"reading the source session failed: {exc}")
                stop.set()
            finally:
                if stop.is_set():
                    live.abort()
                else:
                    await asyncio.to_thread(live.close)

        async def watch() -> None:
            waiters = [
                asyncio.create_task(handle.stop.wait()),
                asyncio.create_task(handle.lost.wait()),
                asyncio.create_task(handle.handover.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
            stop.set()
            live.abort()

        writer = ResultWriter(self._store, session.id, self._owner, stop)
        feeding = asyncio.create_task(feeder(), name=f"replay-read-{session.id}")
        watcher = asyncio.create_task(watch(), name=f"replay-watch-{session.id}")
        writing = asyncio.create_task(writer.drain(), name=f"replay-results-{session.id}")
        try:
            results: Results = await asyncio.to_thread(
                run_backtest,
                strategy,
                consumed.wrap(live),
                symbols,
                spec.sim_config(source.exchange),
                speed=spec.speed,
                stop=stop,
                seed=spec.seed,
                call_budget_s=self._settings.strategy_call_budget_s,
                sink=writer.put,
                flush_rows=self._settings.result_batch_rows,
            )
        finally:
            stop.set()
            live.abort()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await asyncio.gather(feeding, return_exceptions=True)
            await writer.close()
            await asyncio.gather(writing, return_exceptions=True)
        replayed = consumed.final(results.ticks)
        handle.written = replayed
        stats = Stats(replayed.trades, replayed.orderbook, 0)
        if handle.lost.is_set():
            return RunResult(Outcome.LOST)
        if writer.lost is not None:
            handle.lose(f"results write rejected by the store: {writer.lost}")
            return RunResult(Outcome.LOST)
        if handle.handover.is_set() and results.status == "stopped" and not feed_error:
            return RunResult(Outcome.HANDED_OVER)  # the next owner replays from the start
        if writer.failed is not None:
            return RunResult(
                Outcome.STOPPED, error=f"results could not be stored: {writer.failed}", stats=stats
            )
        try:
            await writer.finish(results)
        except LeaseLost as exc:
            handle.lose(f"results write rejected by the store: {exc}")
            return RunResult(Outcome.LOST)
        except StoreError as exc:
            return RunResult(
                Outcome.STOPPED, error=f"results could not be stored: {exc}", stats=stats
            )
        if feed_error:
            return RunResult(Outcome.STOPPED, error=feed_error[0], stats=stats)
        if results.status == "strategy_error":
            return RunResult(
                Outcome.STOPPED,
                error=results.error,
                error_reason=Reason.STRATEGY_ERROR,
                stats=stats,
            )
        if results.status == "completed":
            return RunResult(Outcome.FINISHED, finish_reason=Reason.SOURCE_EXHAUSTED, stats=stats)
        return RunResult(Outcome.STOPPED, stats=stats)


class ResultWriter:
    """A run's result batches streamed to the store as the run makes them.

    The engine's thread hands each batch to :meth:`put` (``run_backtest``'s sink); a
    queue of :data:`WRITE_QUEUE` batches holds them until :meth:`drain` has appended
    them (``ResultStore.append``, fenced by the owner) — a slower store holds the run
    back, memory stays bounded. A rejected append (lease lost) or a store failure sets
    ``stop``: the run ends and later batches are dropped. :meth:`finish` appends the
    last part: how the run ended, its summary and hash. Readers see whole parts only;
    rows flushed before a crash stay, as ``partial`` results.
    """

    def __init__(self, store: Store, session_id: str, owner: str, stop: threading.Event):
        self._store = store
        self._session_id = session_id
        self._owner = owner
        self._stop = stop
        self.run = uuid.uuid4().hex  # a fresh run: its first part replaces older results
        self.at = (0, 0, 0)  # rows appended per table
        self._queue: queue.Queue[ResultBatch | None] = queue.Queue(WRITE_QUEUE)
        self.lost: LeaseLost | None = None
        self.failed: Exception | None = None

    def put(self, batch: ResultBatch) -> None:
        """On the engine's thread: blocks while the queue is full (backpressure)."""
        while self.lost is None and self.failed is None:
            try:
                self._queue.put(batch, timeout=PUT_POLL_S)
                return
            except queue.Full:
                continue

    async def close(self) -> None:
        await asyncio.to_thread(self._queue.put, None)

    async def drain(self) -> None:
        while True:
            batch = await asyncio.to_thread(self._queue.get)
            if batch is None:
                return
            if self.lost is not None or self.failed is not None:
                continue  # the run is stopping: nothing more is stored
            try:
                await self._append(batch.orders, batch.fills, batch.equity)
            except LeaseLost as exc:
                self.lost = exc
                self._stop.set()
            except Exception as exc:  # a store failure, or a bug: never leave the run blocked
                log.exception("appending results of %s failed", self._session_id)
                self.failed = exc
                self._stop.set()

    async def _append(
        self,
        orders: list[str],
        fills: list[str],
        equity: list[str],
        status: str = PARTIAL_RESULTS,
        summary: str = "{}",
        hash_: str = "",
    ) -> None:
        o, f, e = self.at
        part = ResultPart(
            self.run, orders, fills, equity, o, f, e, status=status, summary=summary, hash=hash_
        )
        await self._store.results.append(self._session_id, part, owner=self._owner)
        self.at = (o + len(orders), f + len(fills), e + len(equity))

    async def finish(self, results: Results) -> None:
        """The last part: no rows (all went before), how the run ended, summary, hash."""
        summary = json.dumps(_finite(results.summary), sort_keys=True, allow_nan=False)
        await self._append([], [], [], results.status, summary, results.hash)


def stored(results: Results) -> StoredResults:
    """A run's results in the store's form: canonical JSON lines, the summary, the hash."""
    return StoredResults(
        orders=results.order_lines(),
        fills=results.fill_lines(),
        equity=results.equity_lines(),
        summary=json.dumps(_finite(results.summary), sort_keys=True, allow_nan=False),
        hash=results.hash,
        status=results.status,
    )


def _finite(summary: dict[str, float | int | None]) -> dict[str, float | int | None]:
    """The summary with non-finite numbers as null (JSON has no NaN)."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in summary.items()
    }
