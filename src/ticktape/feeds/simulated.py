"""The simulated exchange behind the feed contract, with scripted outages.

:class:`SimFeed` yields the blocks of a :class:`~ticktape.feeds.sim.SimExchange`
as :class:`~ticktape.feeds.contract.FeedTrades` / ``FeedBooks`` (the receive time
of a row is the moment its block was handed on), preceded by ``connected`` and
``subscribed`` events. A :class:`SimOutage` makes it behave as a real connector
does through a disconnect: the data of some blocks is generated but never
delivered, then one ``gap`` per (symbol, data type) is yielded with the bounds
of what was lost and — since the simulated trades are numbered — how many
trades were lost, followed by ``resynced`` for the books. Tests of everything
downstream of a feed (the runner, gap rows, the quality report) use it without
a network.

A running collect session at a set rate is not fed through here: the instance's sim
driver (:mod:`ticktape.feeds.simdriver`) hands its exchange's blocks to the buffer
itself; ``SimFeed.items`` serves the maximum rate and scripted outages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np

from ticktape.domain import DataType
from ticktape.feeds.contract import (
    EventKind,
    FeedBooks,
    FeedEvent,
    FeedItem,
    FeedTrades,
    Gap,
    GapCause,
    now_us,
)
from ticktape.feeds.sim import SimExchange
from ticktape.ticks import BookBatch, Int64Array, TickBatch, TradeBatch


@dataclass(frozen=True)
class SimOutage:
    """Blocks ``first_block`` .. ``first_block + blocks - 1`` are lost to ``cause``."""

    first_block: int
    blocks: int
    cause: GapCause = GapCause.DISCONNECT


class SimFeed:
    """A :class:`SimExchange` as a :class:`~ticktape.feeds.contract.Feed`."""

    def __init__(self, exchange: SimExchange, outages: Sequence[SimOutage] = ()) -> None:
        self.exchange = exchange
        self.outages = tuple(outages)

    def _outage(self, block: int) -> SimOutage | None:
        for o in self.outages:
            if o.first_block <= block < o.first_block + o.blocks:
                return o
        return None

    async def items(self, stop: asyncio.Event) -> AsyncIterator[FeedItem]:
        yield FeedEvent(EventKind.CONNECTED, now_us(), detail="sim")
        yield FeedEvent(EventKind.SUBSCRIBED, now_us(), detail="sim")
        last_ts: dict[tuple[str, DataType], int] = {}
        last_id: dict[str, int] = {}
        lost_from: dict[tuple[str, DataType], tuple[int, GapCause]] = {}
        block = 0
        # stamped: the batches carry their receive times already (the pump keeps them as
        # they are instead of copying each batch to add them)
        async for batches in self.exchange.blocks(stop, stamped=True):
            if not self.outages:  # the common case: no outage to play, nothing to track
                for batch in batches:
                    if isinstance(batch, TradeBatch):
                        yield FeedTrades(batch, _recv(batch, 0))
                    elif isinstance(batch, BookBatch):
                        yield FeedBooks(batch, _recv(batch, 0))
                continue
            outage = self._outage(block)
            block += 1
            recv = now_us()
            for batch in batches:
                dt = DataType.TRADES if isinstance(batch, TradeBatch) else DataType.ORDERBOOK
                key = (batch.symbol, dt)
                if outage is not None:
                    if key not in lost_from:
                        start = last_ts.get(key, int(batch.ts_us[0]))
                        lost_from[key] = (start, outage.cause)
                    continue
                if key in lost_from:
                    start, cause = lost_from.pop(key)
                    lost = None
                    if isinstance(batch, TradeBatch) and batch.symbol in last_id:
                        lost = int(batch.trade_id[0]) - last_id[batch.symbol] - 1
                    gap = Gap(batch.symbol, dt, start, int(batch.ts_us[0]), cause, lost)
                    yield FeedEvent(EventKind.GAP, recv, batch.symbol, dt, str(cause), gap)
                    if dt is DataType.ORDERBOOK:
                        yield FeedEvent(EventKind.RESYNCED, recv, batch.symbol, dt)
                last_ts[key] = int(batch.ts_us[-1])
                if isinstance(batch, TradeBatch):
                    last_id[batch.symbol] = int(batch.trade_id[-1])
                    yield FeedTrades(batch, _recv(batch, recv))
                elif isinstance(batch, BookBatch):
                    yield FeedBooks(batch, _recv(batch, recv))
        end = now_us()
        for (symbol, dt), (start, cause) in sorted(lost_from.items()):
            gap = Gap(symbol, dt, start, max(start, end), cause, None)
            yield FeedEvent(EventKind.GAP, end, symbol, dt, str(cause), gap)


def _recv(batch: TickBatch, recv: int) -> Int64Array:
    """The batch's own receive times (the same array: no copy of the batch downstream)."""
    if batch.recv_us is not None:
        return batch.recv_us
    return np.full(len(batch), recv, dtype=np.int64)
