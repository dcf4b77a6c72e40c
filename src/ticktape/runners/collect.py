"""The collect runner: feed → bounded buffer → store, with counts that match the store.

It runs inside the supervisor's task for one session. It never changes the
session's status itself: it reports how it ended and the supervisor writes the
transition (store first). It does stop writing the moment the store says it
no longer owns the session (fencing, invariant 5).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum

from ticktape.config import STORE_RETRY_MAX_S, VISIBILITY_TIMEOUT_S, Settings
from ticktape.domain import Session
from ticktape.errors import LeaseLost, StoreError
from ticktape.feeds.sim import SimExchange
from ticktape.metrics import Metrics
from ticktape.retry import backoff_delays, retry_transient
from ticktape.runners.buffer import TickBuffer
from ticktape.store.base import Store
from ticktape.ticks import TickBatch, TickCounts

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    FINISHED = "finished"  # duration reached
    STOPPED = "stopped"  # a stop was asked
    LOST = "lost"  # the lease is gone: someone else decides this session's fate


@dataclass
class RunHandle:
    """What this instance holds for a session it runs: runtime handles, never its state."""

    session_id: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    written: TickCounts = field(default_factory=TickCounts)
    unstored: int = 0  # ticks that could not be stored and were given up on
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    error: str | None = None  # set when ticks could not be stored at the end


class CollectRunner:
    def __init__(self, store: Store, settings: Settings, metrics: Metrics, owner: str) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._owner = owner

    async def run(self, session: Session, handle: RunHandle) -> RunResult:
        cfg = session.config
        feed = SimExchange(
            session.id,
            session.symbols,
            data_types=session.data_types,
            depth=cfg.book_depth,
            seed=cfg.seed,
            rate_per_s=cfg.rate_per_s,
            book_every=cfg.book_every,
        )
        buffer = TickBuffer(
            max_rows=self._settings.buffer_max_rows,
            flush_rows=self._settings.flush_max_rows,
            flush_interval_s=self._settings.flush_interval_s,
        )
        flusher = asyncio.create_task(self._flush_loop(buffer, handle), name=f"flush-{session.id}")
        deadline = None if cfg.duration_s is None else time.monotonic() + cfg.duration_s
        try:
            outcome = await self._pump(feed, buffer, handle, deadline)
            await buffer.close()
            if outcome is Outcome.LOST:
                return RunResult(Outcome.LOST)
            await flusher  # drains everything buffered (or gives up with a count)
        finally:
            if not flusher.done():  # lost, cancelled or crashed: write nothing more
                flusher.cancel()
                await asyncio.gather(flusher, return_exceptions=True)
        if handle.lost.is_set():
            return RunResult(Outcome.LOST)
        error = None
        if handle.unstored:
            error = f"{handle.unstored} ticks could not be stored"
        await self._store.ticks.wait_visible(VISIBILITY_TIMEOUT_S)
        return RunResult(outcome, error)

    async def _pump(
        self, feed: SimExchange, buffer: TickBuffer, handle: RunHandle, deadline: float | None
    ) -> Outcome:
        """Move blocks from the feed into the buffer until stop, loss or the deadline."""
        until = asyncio.Event()

        async def watch() -> None:
            waiters = [
                asyncio.create_task(handle.stop.wait()),
                asyncio.create_task(handle.lost.wait()),
            ]
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
                until.set()

        watcher = asyncio.create_task(watch())
        try:
            async for block in feed.blocks(until):
                if block:
                    await buffer.put(block)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if handle.lost.is_set():
            return Outcome.LOST
        if handle.stop.is_set():
            return Outcome.STOPPED
        return Outcome.FINISHED

    async def _flush_loop(self, buffer: TickBuffer, handle: RunHandle) -> None:
        closing_attempts = self._settings.store_retry_attempts
        while True:
            batches = await buffer.take()
            if not batches:
                return
            if await self._write(batches, handle):
                continue
            if handle.lost.is_set():
                return
            await buffer.put_back(batches)
            if handle.stop.is_set() or handle.lost.is_set():
                closing_attempts -= 1
                if closing_attempts <= 0:  # stopping and the store still refuses: give up, counted
                    handle.unstored += buffer.rows
                    await buffer.take()
                    return
            await asyncio.sleep(backoff_delays(2, 0.1, STORE_RETRY_MAX_S)[0] + 0.05)

    async def _write(self, batches: list[TickBatch], handle: RunHandle) -> bool:
        try:
            result = await retry_transient(
                lambda: self._store.ticks.write(batches, owner=self._owner),
                what="write ticks",
                on_retry=self._metrics.store_retry,
            )
        except LeaseLost as exc:
            log.warning("session %s: %s; runner stops writing", handle.session_id, exc)
            handle.lost.set()
            return False
        except StoreError as exc:
            self._metrics.tick_errors.inc()
            log.error(
                "session %s: could not store %d ticks: %s",
                handle.session_id,
                sum(len(b) for b in batches),
                exc,
            )
            return False
        handle.written = handle.written + result.counts
        self._metrics.ticks_written(result.counts.trades, result.counts.orderbook)
        return True
