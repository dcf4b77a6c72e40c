"""The feed contract: what every market-data source gives the runners.

A feed yields :data:`FeedItem` values from :meth:`Feed.items` until its stop
event is set:

- :class:`FeedTrades` / :class:`FeedBooks` — normalized, columnar ticks of one
  symbol, each row with the exchange timestamp (``batch.ts_us``) and the local
  receive timestamp (``recv_us``), both in microseconds since the Unix epoch;
- :class:`FeedEvent` — what happened to the feed: ``connected``, ``subscribed``,
  ``disconnected``, ``gap``, ``resynced``, ``stale``. A ``gap`` event carries a
  :class:`Gap`: the data of one symbol and data type the feed knows it did not
  deliver, with its bounds, cause and — where the exchange numbers its messages —
  how many messages were lost.

Guarantees every implementation keeps (the runner and the quality report rely
on them):

1. Every disconnect, sequence break, stall, resync and overflow produces exactly
   one ``gap`` event per affected (symbol, data type), emitted once its end is
   known — that is, once data of that kind flows again (or at the feed's end, with
   the end set to the last moment the feed ran). A stream has one gap open at a
   time: a cause that starts while its stream is already in a gap (a drop before a
   sequence break is resolved) joins that gap, which keeps the first cause and
   spans both.
2. No book snapshot is yielded between a gap's start and the ``resynced`` event
   that ends it: a book is rebuilt from a snapshot before it is yielded again.
3. Within a symbol, rows are yielded in the order the exchange sent them (a
   row older than the one before it is yielded and counted as out of order);
   book rows have strictly increasing times; no trade is yielded twice (across
   reconnects and connection rotations included, where the exchange numbers
   its trades).
4. The feed never gives up: connection failures are retried for ever with capped
   exponential backoff and jitter, until the stop event is set; a stop ends
   :meth:`Feed.items` promptly, even mid-reconnect.
5. Memory is bounded: items wait in a queue of at most ``queue_items`` entries;
   a consumer slower than the exchange makes the reader wait (back-pressure), and
   if the exchange drops the connection because of it, that is a gap like any
   other disconnect.
6. A symbol the exchange refuses to subscribe is reported once by a
   ``disconnected`` event with ``detail`` naming the refusal, and a
   :class:`SubscriptionRefused` error is raised from :meth:`Feed.items` —
   a refused subscription is never silently ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np

from ticktape.domain import DataType
from ticktape.ticks import SIDE_BUY as SIDE_BUY  # re-exported beside SIDE_SELL
from ticktape.ticks import BookBatch, Int64Array, TradeBatch
from ticktape.ticks import Gap as Gap  # gaps are stored with ticks; the feed contract names them
from ticktape.ticks import GapCause as GapCause

SIDE_SELL = -1  # a taker sell, as ``TradeBatch.side`` stores it (a buy is ``SIDE_BUY``)
RECONNECT_BASE_S = 0.25  # first reconnect delay (full jitter below the cap)
RECONNECT_MAX_S = 30.0  # reconnect delays never exceed this
STALE_AFTER_S = 10.0  # no message for this long while subscribed: the connection is stale
QUEUE_ITEMS = 1_000  # items (batches or events) waiting for the consumer, at most
BATCH_ROWS = 1_000  # a batch is handed on when it holds this many rows ...
BATCH_INTERVAL_S = 0.05  # ... or when its first row has waited this long


class EventKind(StrEnum):
    CONNECTED = "connected"
    SUBSCRIBED = "subscribed"
    DISCONNECTED = "disconnected"
    GAP = "gap"
    RESYNCED = "resynced"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """Something that happened to a feed; ``symbol`` is ``None`` for the whole connection."""

    kind: EventKind
    at_us: int  # local time of the event
    symbol: str | None = None
    data_type: DataType | None = None
    detail: str = ""
    gap: Gap | None = None  # set exactly for ``gap`` events


@dataclass(frozen=True, slots=True)
class FeedTrades:
    batch: TradeBatch
    recv_us: Int64Array  # local receive time of each row

    def __len__(self) -> int:
        return len(self.batch)


@dataclass(frozen=True, slots=True)
class FeedBooks:
    batch: BookBatch
    recv_us: Int64Array

    def __len__(self) -> int:
        return len(self.batch)


FeedItem = FeedTrades | FeedBooks | FeedEvent


class SubscriptionRefused(Exception):
    """The exchange refused a subscription: the symbol cannot be recorded."""

    def __init__(self, symbol: str, channel: str, reason: str) -> None:
        super().__init__(f"{channel} {symbol} refused by the exchange: {reason}")
        self.symbol = symbol
        self.channel = channel
        self.reason = reason


class Feed(Protocol):
    """A source of market data for one session (see the module docstring)."""

    def items(self, stop: asyncio.Event) -> AsyncIterator[FeedItem]:
        """Yield ticks and events until ``stop`` is set (guarantees in the module docstring)."""
        ...


def now_us() -> int:
    return time.time_ns() // 1_000


def reconnect_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Full-jitter delay before reconnect ``attempt`` (0-based); capped, never exhausted."""
    return random.uniform(0, min(max_s, base_s * 2 ** min(attempt, 30)))


class FeedQueue:
    """The bounded hand-off between a feed's readers and its consumer."""

    def __init__(self, max_items: int = QUEUE_ITEMS) -> None:
        self._queue: asyncio.Queue[FeedItem | None] = asyncio.Queue(max_items)
        self._closed = False

    async def put(self, item: FeedItem) -> None:
        await self._queue.put(item)  # waits while full: back-pressure on the reader

    def put_nowait(self, item: FeedItem) -> None:
        self._queue.put_nowait(item)

    def full(self) -> bool:
        return self._queue.full()

    def close(self) -> None:
        """Wake the consumer: it ends after the items already queued."""
        self._closed = True
        # A full queue needs no marker: the consumer finds it closed once it has drained it.
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    async def get(self) -> FeedItem | None:
        """The next item; ``None`` once closed and drained."""
        if self._closed and self._queue.empty():
            return None
        return await self._queue.get()

    def qsize(self) -> int:
        return self._queue.qsize()


def book_row(
    bids: list[tuple[float, float]], asks: list[tuple[float, float]], depth: int
) -> list[float]:
    """A snapshot as one row: ``depth`` bid prices, bid quantities, ask prices and ask
    quantities, best first; levels missing on a thin book are price 0, quantity 0."""
    b = bids[:depth]
    a = asks[:depth]
    pad = [0.0] * (depth - len(b))
    apad = [0.0] * (depth - len(a))
    return (
        [p for p, _ in b] + pad + [q for _, q in b] + pad
        + [p for p, _ in a] + apad + [q for _, q in a] + apad
    )  # fmt: skip


class TradeBuilder:
    """Rows of one symbol's trades, gathered until they are handed on as one batch."""

    def __init__(self, session_id: str, symbol: str) -> None:
        self.session_id = session_id
        self.symbol = symbol
        self.started = 0.0
        self.ts_us: list[int] = []
        self.trade_id: list[int] = []
        self.px: list[float] = []
        self.qty: list[float] = []
        self.side: list[int] = []
        self.recv_us: list[int] = []

    def add(self, ts_us: int, trade_id: int, price: float, qty: float, side: int, recv: int) -> int:
        """Add a row; how many rows the batch holds now."""
        ts = self.ts_us
        if not ts:
            self.started = time.monotonic()
        ts.append(ts_us)
        self.trade_id.append(trade_id)
        self.px.append(price)
        self.qty.append(qty)
        self.side.append(side)
        self.recv_us.append(recv)
        return len(ts)

    def __len__(self) -> int:
        return len(self.ts_us)

    def take(self, seq: int) -> FeedTrades:
        item = FeedTrades(
            TradeBatch(
                session_id=self.session_id,
                symbol=self.symbol,
                ts_us=np.array(self.ts_us, dtype=np.int64),
                trade_id=np.array(self.trade_id, dtype=np.int64),
                price=np.array(self.px, dtype=np.float64),
                qty=np.array(self.qty, dtype=np.float64),
                side=np.array(self.side, dtype=np.int8),
                seq=seq,
            ),
            np.array(self.recv_us, dtype=np.int64),
        )
        self.ts_us, self.trade_id, self.px, self.qty, self.side, self.recv_us = (
            [],
            [],
            [],
            [],
            [],
            [],
        )
        return item


class BookBuilder:
    """Top-``depth`` snapshots of one symbol's book, gathered into one batch."""

    def __init__(self, session_id: str, symbol: str, depth: int) -> None:
        self.session_id = session_id
        self.symbol = symbol
        self.depth = depth
        self.started = 0.0
        self._last_ts = -1  # the newest snapshot's time, across batches
        self.ts_us: list[int] = []
        self.recv_us: list[int] = []
        self.rows: list[list[float]] = []  # bid px, bid qty, ask px, ask qty, ``depth`` each

    def add(
        self,
        ts_us: int,
        bids: list[tuple[float, float]],
        asks: list[tuple[float, float]],
        recv: int,
    ) -> None:
        """A snapshot; levels missing on a thin book are stored as price 0, quantity 0."""
        self.add_row(ts_us, book_row(bids, asks, self.depth), recv)

    def add_row(self, ts_us: int, row: list[float], recv: int) -> int:
        """A snapshot laid out by :func:`book_row` for this depth; how many rows the batch
        holds now."""
        if ts_us <= self._last_ts:
            ts_us = self._last_ts + 1  # snapshots are keyed by time: keep it strictly increasing
        self._last_ts = ts_us
        ts = self.ts_us
        if not ts:
            self.started = time.monotonic()
        self.rows.append(row)
        ts.append(ts_us)
        self.recv_us.append(recv)
        return len(ts)

    def __len__(self) -> int:
        return len(self.ts_us)

    def take(self, seq: int) -> FeedBooks:
        d = self.depth
        m = np.array(self.rows, dtype=np.float64).reshape(len(self.rows), 4 * d)
        item = FeedBooks(
            BookBatch(
                session_id=self.session_id,
                symbol=self.symbol,
                ts_us=np.array(self.ts_us, dtype=np.int64),
                bid_price=m[:, 0:d].copy(),
                bid_qty=m[:, d : 2 * d].copy(),
                ask_price=m[:, 2 * d : 3 * d].copy(),
                ask_qty=m[:, 3 * d : 4 * d].copy(),
                seq=seq,
            ),
            np.array(self.recv_us, dtype=np.int64),
        )
        self.ts_us, self.recv_us, self.rows = [], [], []
        return item
