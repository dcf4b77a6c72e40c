"""The simulated exchange: deterministic market data for a given seed.

Per symbol, a geometric random walk of trade prices with strictly increasing
trade ids and exchange timestamps, and order-book snapshots of the requested
depth around the last price. Data is generated in fixed-size blocks with
numpy, so the same seed and configuration give the same ticks however fast the
consumer reads — and the maximum rate reaches hundreds of thousands of ticks
per second.

A resumed recording (its owner was lost and another instance claimed it) passes
a :class:`ResumePoint`: every symbol continues after its last stored trade id,
from its last stored price, and every new tick is later than anything stored —
so nothing is recorded twice and no id or timestamp is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from ticktape.domain import DataType
from ticktape.ticks import BookBatch, TickBatch, TradeBatch

MAX_BLOCK_EVENTS = 5_000  # trades per symbol per block at the maximum rate
BLOCK_PERIOD_S = 0.1  # at a set rate, one block covers this much exchange time
PRICE_TICK = 0.01
STEP_VOLATILITY = 2e-4  # standard deviation of one trade's log-return
MAX_RATE_SPACING_US = 1  # exchange-time gap between trades at the maximum rate
MAX_CATCH_UP_S = 1.0  # a feed paused longer than this (process stopped) does not replay the pause


@dataclass(frozen=True)
class ResumePoint:
    """Where an earlier recording of the same session stopped."""

    after_us: int  # every new tick is later than this (the newest stored tick)
    last_trade_ids: Mapping[str, int] = field(default_factory=dict)
    last_prices: Mapping[str, float] = field(default_factory=dict)


@dataclass
class _SymbolState:
    symbol: str
    rng: np.random.Generator
    price: float
    next_trade_id: int = 1
    events: int = 0  # trades generated so far (drives book snapshot cadence)
    first_event: int = 0  # the event at ``start_us`` (non-zero when resumed)


def _start_price(symbol: str) -> float:
    """A plausible, deterministic starting price per symbol."""
    return 10.0 + (zlib.crc32(symbol.encode()) % 100_000) / 2.0


class SimExchange:
    """A deterministic feed of trades and book snapshots for some symbols.

    ``rate_per_s`` is trades per second per symbol (0 = as fast as the consumer
    reads); every ``book_every``-th trade is followed by a book snapshot.
    """

    def __init__(
        self,
        session_id: str,
        symbols: tuple[str, ...],
        *,
        data_types: tuple[DataType, ...] = (DataType.TRADES, DataType.ORDERBOOK),
        depth: int = 3,
        seed: int = 0,
        rate_per_s: float = 20.0,
        book_every: int = 5,
        start_us: int | None = None,
        resume: ResumePoint | None = None,
    ) -> None:
        self.session_id = session_id
        self.data_types = data_types
        self.depth = depth
        self.rate_per_s = rate_per_s
        self.book_every = book_every
        if rate_per_s > 0:
            self.block_events = int(min(MAX_BLOCK_EVENTS, max(1.0, rate_per_s * BLOCK_PERIOD_S)))
            self.spacing_us = max(1, int(1_000_000 / rate_per_s))
        else:
            self.block_events = MAX_BLOCK_EVENTS
            self.spacing_us = MAX_RATE_SPACING_US
        start = int(time.time() * 1_000_000) if start_us is None else start_us
        if resume is not None:
            start = max(start, resume.after_us + 1)
        self.start_us = start
        self._states = [self._state(i, sym, seed, resume) for i, sym in enumerate(symbols)]
        self.blocks_emitted = 0  # the next block's number: every batch in it has this ``seq``

    @staticmethod
    def _state(i: int, symbol: str, seed: int, resume: ResumePoint | None) -> _SymbolState:
        if resume is None:
            return _SymbolState(symbol, np.random.default_rng([seed, i]), _start_price(symbol))
        last_id = resume.last_trade_ids.get(symbol, 0)
        # Seeded by where it resumes: deterministic, and not a replay of the first run.
        return _SymbolState(
            symbol,
            np.random.default_rng([seed, i, last_id + 1]),
            resume.last_prices.get(symbol, _start_price(symbol)),
            next_trade_id=last_id + 1,
            events=last_id,
            first_event=last_id,
        )

    def next_block(self) -> list[TickBatch]:
        """Generate the next block: ``block_events`` trades per symbol, and their snapshots."""
        out: list[TickBatch] = []
        for state in self._states:
            trades = self._trades(state, self.block_events, self.blocks_emitted)
            if DataType.TRADES in self.data_types:
                out.append(trades)
            if DataType.ORDERBOOK in self.data_types:
                book = self._books(state, trades)
                if len(book):
                    out.append(book)
            state.events += self.block_events
        self.blocks_emitted += 1
        return out

    def _trades(self, state: _SymbolState, n: int, seq: int) -> TradeBatch:
        rng = state.rng
        steps = rng.normal(0.0, STEP_VOLATILITY, n)
        prices = np.round(state.price * np.exp(np.cumsum(steps)) / PRICE_TICK) * PRICE_TICK
        prices = np.maximum(prices, PRICE_TICK)
        qty = np.round(rng.exponential(0.5, n) + 1e-4, 6)
        side = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8)
        index = np.arange(state.events, state.events + n, dtype=np.int64)
        batch = TradeBatch(
            session_id=self.session_id,
            symbol=state.symbol,
            ts_us=self.start_us + (index - state.first_event) * self.spacing_us,
            trade_id=np.arange(state.next_trade_id, state.next_trade_id + n, dtype=np.int64),
            price=prices.astype(np.float64),
            qty=qty.astype(np.float64),
            side=side,
            seq=seq,
        )
        state.price = float(prices[-1])
        state.next_trade_id += n
        return batch

    def _books(self, state: _SymbolState, trades: TradeBatch) -> BookBatch:
        n = len(trades)
        # positions (within this block) of the trades that are followed by a snapshot
        first = (-(state.events + 1)) % self.book_every
        at = np.arange(first, n, self.book_every)
        k = len(at)
        rng = state.rng
        mid = trades.price[at][:, None]
        offsets = (np.arange(self.depth) + 1)[None, :] * PRICE_TICK
        half_spread = rng.integers(1, 4, k)[:, None] * PRICE_TICK
        bid_px = np.round((mid - half_spread - offsets + PRICE_TICK) / PRICE_TICK) * PRICE_TICK
        ask_px = np.round((mid + half_spread + offsets - PRICE_TICK) / PRICE_TICK) * PRICE_TICK
        return BookBatch(
            session_id=self.session_id,
            symbol=state.symbol,
            ts_us=trades.ts_us[at],  # a snapshot right after its trade, same exchange time
            bid_price=np.maximum(bid_px, PRICE_TICK),
            bid_qty=np.round(rng.exponential(2.0, (k, self.depth)) + 1e-3, 6),
            ask_price=ask_px,
            ask_qty=np.round(rng.exponential(2.0, (k, self.depth)) + 1e-3, 6),
            seq=trades.seq,
        )

    async def blocks(self, stop: asyncio.Event) -> AsyncIterator[list[TickBatch]]:
        """Yield blocks paced to ``rate_per_s`` in wall time until ``stop`` is set."""
        started = time.monotonic()
        emitted = 0
        while not stop.is_set():
            if self.rate_per_s > 0:
                due = started + (emitted + self.block_events) / self.rate_per_s
                delay = due - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
                    if stop.is_set():
                        return
                else:
                    if -delay > MAX_CATCH_UP_S:  # paused (SIGSTOP, a stall): go on from now
                        started = time.monotonic() - emitted / self.rate_per_s
                    await asyncio.sleep(0)  # never starve heartbeats while catching up
            else:
                await asyncio.sleep(0)  # let heartbeats and requests run between blocks
            emitted += self.block_events
            yield self.next_block()
