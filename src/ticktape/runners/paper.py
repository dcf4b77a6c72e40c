"""The paper runner: a strategy on a live feed with simulated fills, recording what it saw.

A paper session is a collect session with a strategy listening: the collect runner
records the feed exactly as a collect session does (same buffer, fenced writes,
counts from the store), and every feed block it buffers is also handed, in order,
to the replay engine on its own thread through a bounded queue (``LiveSource``).
The strategy therefore sees exactly the ticks that are recorded, merged in the
same order a backtest of the recording merges them — so a backtest of a paper
session reproduces its orders and fills (invariant 9).

At the end (duration reached, stop, or the strategy failing) the queue is closed,
the engine finishes the ticks it was given, and the results are written fenced by
the owner before the supervisor writes the end. A strategy that raises or overruns
its budget stops the recording and fails the session with ``strategy_error``. A
paper session is not resumable: a crashed owner's session is reaped.
"""

from __future__ import annotations

import asyncio
import queue
import threading

from ticktape.config import Settings
from ticktape.domain import Reason, Session
from ticktape.errors import LeaseLost, StoreError
from ticktape.feeds.factory import BuiltFeed
from ticktape.metrics import Metrics
from ticktape.runners.backtest import stored
from ticktape.runners.collect import BlockSink, CollectRunner
from ticktape.runners.instance import InstanceParts
from ticktape.runtime.handle import RunHandle
from ticktape.runtime.runner import Outcome, RunResult
from ticktape.store.base import Store
from ticktape.strategies import LiveSource, PaperSpec, StrategyRegistry, run_backtest
from ticktape.strategies import RunResult as Results
from ticktape.ticks import TickBatch

QUEUE_BLOCKS = 64  # feed blocks waiting for the strategy; a slower strategy holds the feed back
PUT_POLL_S = 0.2


class StrategyTap:
    """The buffer the collect pump (or the instance's sim driver) writes to, also feeding
    the strategy each feed block; it keeps the buffer's contract (``put``, ``offer``,
    ``unbound``, :class:`~ticktape.runners.collect.BlockSink`).

    The feed hands on one batch at a time (``FeedTrades`` / ``FeedBooks``), the sim driver
    a whole block at a time; the batches of one feed block share its ``seq`` and overlap
    in time, so the strategy is given whole blocks — a block is passed on when the next
    one starts, or at the end (:meth:`flush`) — exactly the chunks a backtest of the
    recording merges. Every block reaches the strategy once and in order, whichever door
    it came through: :meth:`offer` takes a block only if both the strategy's queue and the
    buffer have room now (else it changes nothing and the caller awaits :meth:`put`, which
    waits for both — a slow strategy holds the feed back as a slow store does)."""

    def __init__(self, buffer: BlockSink, live: LiveSource, engine_done: threading.Event):
        self._buffer = buffer
        self._live = live
        self._engine_done = engine_done
        self._block: list[TickBatch] = []

    async def put(self, batches: list[TickBatch]) -> None:
        if self._engine_done.is_set():
            return  # the strategy failed: the session is being stopped, record nothing more
        for batch in batches:
            if self._block and batch.seq != self._block[0].seq:
                await self.flush()
            self._block.append(batch)
        if not self._engine_done.is_set():
            await self._buffer.put(batches)

    def offer(self, batches: list[TickBatch], rows: int | None = None) -> bool:
        """Take ``batches`` (``rows`` rows, if given) now if :meth:`put` would take them
        without waiting (room in the strategy's queue for the blocks they complete, and in
        the buffer); else take nothing and return False."""
        if self._engine_done.is_set():
            return True  # as put: the session is being stopped, record nothing more
        whole: list[list[TickBatch]] = []  # blocks complete once these batches join
        block = list(self._block)
        for batch in batches:
            if block and batch.seq != block[0].seq:
                whole.append(block)
                block = []
            block.append(batch)
        if not self._live.room(len(whole)) or not self._buffer.offer(batches, rows):
            return False  # nothing taken: the caller awaits put, which waits for both
        for chunk in whole:  # the room was there and only the strategy's run takes
            self._live.put_nowait(chunk)
        self._block = block
        return True

    async def unbound(self) -> None:
        """The run is ending: the buffer takes what comes without waiting for room (the
        strategy is still given every block recorded)."""
        await self._buffer.unbound()

    async def flush(self) -> None:
        """Hand the block gathered so far to the strategy (waiting while it is behind)."""
        block, self._block = self._block, []
        while block and not self._engine_done.is_set():
            try:
                await asyncio.to_thread(self._live.put, block, PUT_POLL_S)
                break
            except queue.Full:
                continue


class PaperRunner(CollectRunner):
    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        owner: str,
        strategies: StrategyRegistry,
        parts: InstanceParts | None = None,
    ) -> None:
        super().__init__(store, settings, metrics, owner, parts)
        self._strategies = strategies
        self._live = LiveSource(QUEUE_BLOCKS)
        self._engine_done = threading.Event()

    async def _pump(
        self, built: BuiltFeed, buffer: BlockSink, handle: RunHandle, deadline: float | None
    ) -> Outcome:
        self._tap = StrategyTap(buffer, self._live, self._engine_done)
        try:
            return await super()._pump(built, self._tap, handle, deadline)
        finally:
            await self._tap.flush()  # the last block, before the engine is told to finish

    async def run(self, session: Session, handle: RunHandle) -> RunResult:
        fields = session.config.strategy_fields()
        if fields is None:
            return RunResult(Outcome.STOPPED, error="paper session without its strategy run")
        spec = PaperSpec.model_validate(fields)
        strategy = self._strategies.create(spec.strategy, spec.params, spec.form)
        done = self._engine_done

        def engine() -> Results:
            try:
                return run_backtest(
                    strategy,
                    self._live,
                    session.symbols,
                    spec.sim_config(session.exchange),
                    seed=spec.seed,
                    call_budget_s=self._settings.strategy_call_budget_s,
                )
            finally:
                done.set()

        engine_task = asyncio.create_task(asyncio.to_thread(engine))

        async def watch_engine() -> None:
            await asyncio.to_thread(done.wait)
            handle.stop_reason = Reason.STRATEGY_ERROR
            handle.stop.set()  # the strategy ended early (it failed): stop recording

        watcher = asyncio.create_task(watch_engine())
        try:
            result = await super().run(session, handle)
        finally:
            if not done.is_set():
                await asyncio.to_thread(self._live.close)  # the engine finishes what it got
            results = await engine_task
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if result.outcome in (Outcome.LOST, Outcome.HANDED_OVER):
            return result
        try:
            await self._store.results.write(session.id, stored(results), owner=self._owner)
        except LeaseLost as exc:
            handle.lose(f"results write rejected by the store: {exc}")
            return RunResult(Outcome.LOST)
        except StoreError as exc:
            return RunResult(Outcome.STOPPED, error=f"results could not be stored: {exc}")
        if results.status == "strategy_error":
            return RunResult(
                Outcome.STOPPED, error=results.error, error_reason=Reason.STRATEGY_ERROR
            )
        return result
