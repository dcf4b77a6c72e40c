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
import functools
import math
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.random.bit_generator import ISeedSequence
from numpy.typing import DTypeLike, NDArray

from ticktape.domain import DataType
from ticktape.feeds.clock import ticker
from ticktape.feeds.contract import now_us
from ticktape.ticks import BookBatch, Int64Array, TickBatch, TradeBatch, book_batch, trade_batch

MAX_BLOCK_EVENTS = 5_000  # trades per symbol per block at the maximum rate
# At a set rate, one block covers this much exchange time. Every block costs the
# event loop a wake-up and a dozen numpy calls whatever its size, so at realistic
# rates (20 trades/s: 5 trades a block) the block period, not the tick count, sets
# what a thousand simulated sessions cost; it matches the collect runner's flush
# interval, so each block is one flush.
BLOCK_PERIOD_S = 0.25
PRICE_TICK = 0.01
STEP_VOLATILITY = 2e-4  # standard deviation of one trade's log-return
# At low rates several blocks are generated in one numpy pass (a chunk of about this
# many trades per symbol) and handed out block by block: numpy's cost per call, not
# per value, is what a block of 5 trades costs. A session with a duration never gets a
# chunk beyond what its remaining duration needs (a 1-s session at 1 trade/s generates
# 2 trades, not 256). Deterministic all the same, and the same however it is chunked:
# each generated quantity has its own random stream (numpy draws a stream's values in
# order whatever the call sizes), and the price walk carries its unrounded level. A
# chunk keeps its arrays whole; a block's batches are views of them, sliced when the
# block is handed out (slicing them all up front held ~50 small objects per block
# waiting, and cost as much as generating the chunk).
CHUNK_EVENTS = 256
MAX_RATE_SPACING_US = 1  # exchange-time gap between trades at the maximum rate
MAX_CATCH_UP_S = 1.0  # a feed paused longer than this (process stopped) does not replay the pause


# one symbol's share of a generated chunk: its trades (None if trades are not recorded),
# its snapshots (None if books are not), and where each block's snapshots begin in them
# (``count + 1`` bounds: block ``j``'s are rows ``bounds[j]:bounds[j + 1]``)
_SymbolChunk = tuple[TradeBatch | None, BookBatch | None, list[int]]


@dataclass(frozen=True)
class ResumePoint:
    """Where an earlier recording of the same session stopped."""

    after_us: int  # every new tick is later than this (the newest stored tick)
    last_trade_ids: Mapping[str, int] = field(default_factory=dict)
    last_prices: Mapping[str, float] = field(default_factory=dict)


#: The random streams of a symbol, one per generated quantity (see CHUNK_EVENTS).
_STREAMS = ("step", "qty", "side", "spread", "bid_qty", "ask_qty")


def _streams(*key: int) -> dict[str, np.random.Generator]:
    """The streams ``np.random.default_rng([*key, k])`` would give (the same numbers),
    seeded from remembered words: a session of the default seed starts with the same
    keys as the last, and ``default_rng`` hashed each afresh: 0.12 ms per symbol, 9 % of
    a 1 s session's server time in a profile at ``bench/lifecycle.py -c 32``."""
    return {
        # numpy: "BitGenerator implementations should treat any object that adheres
        # to ISeedSequence as if they are SeedSequence" (its stub names only the latter)
        name: np.random.Generator(np.random.PCG64(_seed_words((*key, k))))  # type: ignore[arg-type]
        for k, name in enumerate(_STREAMS)
    }


class _SeedWords(ISeedSequence):
    """A seed sequence's words, generated once: a bit generator seeded from this starts
    where one seeded from the sequence itself does (it only asks for words)."""

    def __init__(self, key: tuple[int, ...]) -> None:
        self._sequence = np.random.SeedSequence(list(key))
        self._words: dict[tuple[int, np.dtype[Any]], NDArray[np.uint32 | np.uint64]] = {}

    def generate_state(
        self, n_words: int, dtype: DTypeLike = np.uint32
    ) -> NDArray[np.uint32 | np.uint64]:
        asked = (n_words, np.dtype(dtype))
        words = self._words.get(asked)
        if words is None:  # two threads may both make it: the same words
            words = self._words[asked] = self._sequence.generate_state(n_words, dtype)  # type: ignore[arg-type]
        return words.copy()  # the caller's own: the kept words never change


@functools.lru_cache(maxsize=4096)
def _seed_words(key: tuple[int, ...]) -> _SeedWords:
    return _SeedWords(key)


@dataclass
class _SymbolState:
    symbol: str
    rng: dict[str, np.random.Generator]
    price: float  # the walk's level (unrounded: the next chunk continues from it exactly)
    next_trade_id: int = 1
    events: int = 0  # trades generated so far (drives book snapshot cadence)
    first_event: int = 0  # the event at ``start_us`` (non-zero when resumed)


class Stamps:
    """Receive times for the blocks handed out at one moment: every batch's ``recv_us``
    is a view of one read-only array (``views[n]``: ``n`` rows), shared by every block
    that moment, whatever its session. Rows handed out together carry the same time,
    and nobody writes a batch's arrays (read-only makes sure: a write raises instead of
    changing other sessions' rows); one array per block cost as much as the block."""

    __slots__ = ("base", "views")

    def __init__(self, recv_us: int, rows: int) -> None:
        base = np.empty(rows, np.int64)  # np.full minus its Python-level wrapper
        base.fill(recv_us)
        base.flags.writeable = False
        self.base = base
        #: ``views[n]``: the first ``n`` rows (made when first asked for, :meth:`view`)
        self.views: list[Int64Array | None] = [None] * (rows + 1)

    def view(self, n: int) -> Int64Array:
        """The first ``n`` rows (``n`` at most the rows it was made for)."""
        v = self.views[n]
        if v is None:
            v = self.views[n] = self.base[:n]
        return v


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
        duration_s: float | None = None,
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
        self.blocks_per_chunk = max(1, CHUNK_EVENTS // self.block_events)
        # blocks the run needs at most (a set duration at a set rate; one block to spare):
        # no chunk goes beyond it, later blocks (a drain's last moments) come one by one
        self.blocks_needed: int | None = None
        if duration_s is not None and rate_per_s > 0:
            events = math.ceil(max(0.0, duration_s) * rate_per_s)
            self.blocks_needed = math.ceil(events / self.block_events) + 1
        self.blocks_generated = 0
        self._symbol_chunks: list[_SymbolChunk] = []  # the current chunk, per symbol
        self._chunk_blocks = 0  # blocks in it
        self._chunk_next = 0  # the next of them to hand out

    @staticmethod
    def _state(i: int, symbol: str, seed: int, resume: ResumePoint | None) -> _SymbolState:
        if resume is None:
            return _SymbolState(symbol, _streams(seed, i), _start_price(symbol))
        last_id = resume.last_trade_ids.get(symbol, 0)
        # Seeded by where it resumes: deterministic, and not a replay of the first run.
        return _SymbolState(
            symbol,
            _streams(seed, i, last_id + 1),
            resume.last_prices.get(symbol, _start_price(symbol)),
            next_trade_id=last_id + 1,
            events=last_id,
            first_event=last_id,
        )

    def next_block(self, recv_us: int | None = None) -> list[TickBatch]:
        """The next block: ``block_events`` trades per symbol, and their snapshots;
        every row received at ``recv_us`` if given (the batches' ``recv_us``)."""
        stamps = None if recv_us is None else Stamps(recv_us, self.block_events)
        return self.take_block(stamps)[0]

    def take_block(self, stamps: Stamps | None) -> tuple[list[TickBatch], int, int]:
        """The next block (as :meth:`next_block`) and the trades and snapshots in it;
        every batch's ``recv_us`` a view of ``stamps`` (made for at least
        ``block_events`` rows), if given. A block's batches are views of its chunk's
        arrays, cut when it is handed out (cutting a chunk's blocks up front held ~50
        small objects per block waiting, and cost as much as generating the chunk)."""
        j = self._chunk_next
        if j >= self._chunk_blocks:
            self._new_chunk()
            j = 0
        self._chunk_next = j + 1
        seq = self.blocks_emitted
        self.blocks_emitted = seq + 1
        per = self.block_events
        lo = j * per
        hi = lo + per
        block: list[TickBatch] = []
        trades = books = 0
        trade_recv = None if stamps is None else stamps.view(per)
        for t, b, bounds in self._symbol_chunks:
            if t is not None:
                block.append(
                    trade_batch(
                        t.session_id,
                        t.symbol,
                        t.ts_us[lo:hi],
                        t.trade_id[lo:hi],
                        t.price[lo:hi],
                        t.qty[lo:hi],
                        t.side[lo:hi],
                        seq,
                        trade_recv,
                    )
                )
                trades += per
            if b is not None:
                blo = bounds[j]
                bhi = bounds[j + 1]
                if bhi > blo:
                    k = bhi - blo
                    block.append(
                        book_batch(
                            b.session_id,
                            b.symbol,
                            b.ts_us[blo:bhi],
                            b.bid_price[blo:bhi],
                            b.bid_qty[blo:bhi],
                            b.ask_price[blo:bhi],
                            b.ask_qty[blo:bhi],
                            seq,
                            None if stamps is None else stamps.view(k),
                        )
                    )
                    books += k
        return block, trades, books

    def _new_chunk(self) -> None:
        """Generate the next ``blocks_per_chunk`` blocks (fewer if the duration needs
        fewer), whole arrays per symbol; :meth:`take_block` cuts them into blocks."""
        per = self.block_events
        count = self.blocks_per_chunk
        if self.blocks_needed is not None:
            count = max(1, min(count, self.blocks_needed - self.blocks_generated))
        self.blocks_generated += count
        n = per * count
        trades_wanted = DataType.TRADES in self.data_types
        books_wanted = DataType.ORDERBOOK in self.data_types
        chunks: list[_SymbolChunk] = []
        for state in self._states:
            first = (-(state.events + 1)) % self.book_every  # as _books places them
            trades = self._trades(state, n, 0)
            book = self._books(state, trades) if books_wanted else None
            state.events += n
            bounds: list[int] = []
            if book is not None:
                at = np.arange(first, n, self.book_every)
                bounds = np.searchsorted(at, np.arange(count + 1) * per).tolist()
            chunks.append((trades if trades_wanted else None, book, bounds))
        self._symbol_chunks = chunks
        self._chunk_blocks = count
        self._chunk_next = 0

    def _trades(self, state: _SymbolState, n: int, seq: int) -> TradeBatch:
        rng = state.rng
        steps = rng["step"].normal(0.0, STEP_VOLATILITY, n)
        level = state.price * np.exp(np.cumsum(steps))
        # np.rint is np.round with 0 decimals, minus the dispatch overhead
        prices = np.maximum(np.rint(level / PRICE_TICK) * PRICE_TICK, PRICE_TICK)
        qty = np.round(rng["qty"].exponential(0.5, n) + 1e-4, 6)
        side = np.where(rng["side"].random(n) < 0.5, 1, -1).astype(np.int8)
        index = np.arange(state.events, state.events + n, dtype=np.int64)
        batch = TradeBatch(
            session_id=self.session_id,
            symbol=state.symbol,
            ts_us=self.start_us + (index - state.first_event) * self.spacing_us,
            trade_id=np.arange(state.next_trade_id, state.next_trade_id + n, dtype=np.int64),
            price=prices.astype(np.float64, copy=False),
            qty=qty.astype(np.float64, copy=False),
            side=side,
            seq=seq,
        )
        state.price = float(level[-1])
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
        # 1, 2 or 3 ticks (from a uniform draw: ``integers`` may discard half of a 64-bit
        # draw between calls, which would make the values depend on the chunking)
        half_spread = (np.floor(rng["spread"].random(k) * 3) + 1)[:, None] * PRICE_TICK
        bid_px = np.rint((mid - half_spread - offsets + PRICE_TICK) / PRICE_TICK) * PRICE_TICK
        ask_px = np.rint((mid + half_spread + offsets - PRICE_TICK) / PRICE_TICK) * PRICE_TICK
        return BookBatch(
            session_id=self.session_id,
            symbol=state.symbol,
            ts_us=trades.ts_us[at],  # a snapshot right after its trade, same exchange time
            bid_price=np.maximum(bid_px, PRICE_TICK),
            bid_qty=np.round(rng["bid_qty"].exponential(2.0, (k, self.depth)) + 1e-3, 6),
            ask_price=ask_px,
            ask_qty=np.round(rng["ask_qty"].exponential(2.0, (k, self.depth)) + 1e-3, 6),
            seq=trades.seq,
        )

    async def blocks(
        self, stop: asyncio.Event, *, stamped: bool = False
    ) -> AsyncIterator[list[TickBatch]]:
        """Yield blocks paced to ``rate_per_s`` in wall time until ``stop`` is set; if
        ``stamped``, each block's rows carry the time it was handed out as ``recv_us``.

        The per-session path: a running paced session is fed by its instance's driver
        (:mod:`ticktape.feeds.simdriver`, one task for all of them, calling
        :meth:`next_block`); this generator serves feeds at the maximum rate and
        scripted outages (:class:`~ticktape.feeds.simulated.SimFeed`).

        A stop ends a wait at once. A wait ends at the first point of the instance's
        shared clock (:mod:`ticktape.feeds.clock`, a grid of ``BLOCK_PERIOD_S``) at or
        after the block is due, so the rate is kept and the blocks of every simulated
        session come in the same turn of the loop. The wait between blocks is one future:
        ``stop`` is watched by a single task for the whole run (``wait_for(stop.wait())``
        per block would cost a task each time, thousands a second on a busy instance).
        """
        loop = asyncio.get_running_loop()
        clock = ticker(BLOCK_PERIOD_S, loop)
        waker: list[asyncio.Future[None]] = []  # the current wait, if any

        def wake(_: object = None) -> None:
            for fut in waker:
                if not fut.done():
                    fut.set_result(None)

        watcher = asyncio.ensure_future(stop.wait())
        watcher.add_done_callback(wake)
        try:
            started = time.monotonic()
            emitted = 0
            while not stop.is_set():
                if self.rate_per_s > 0:
                    due = started + (emitted + self.block_events) / self.rate_per_s
                    delay = due - time.monotonic()
                    if delay > 0:
                        # on the instance's shared clock: every sim session's block of a
                        # period is handed out in the same turn of the loop (feeds/clock.py)
                        fut = clock.at(loop.time() + delay)
                        waker[:] = [fut]
                        try:
                            await fut
                        finally:
                            waker.clear()
                        if stop.is_set():
                            return
                    else:
                        if -delay > MAX_CATCH_UP_S:  # paused (SIGSTOP, a stall): go on from now
                            started = time.monotonic() - emitted / self.rate_per_s
                        await asyncio.sleep(0)  # never starve heartbeats while catching up
                else:
                    await asyncio.sleep(0)  # let heartbeats and requests run between blocks
                emitted += self.block_events
                yield self.next_block(now_us() if stamped else None)
        finally:
            watcher.remove_done_callback(wake)
            watcher.cancel()
