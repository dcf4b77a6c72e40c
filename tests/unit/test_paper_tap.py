"""A paper session's tap keeps the buffer's contract, so the instance's sim driver can feed it.

The driver hands each block through ``offer`` (no waiting) and, for a block refused,
an awaited ``put``. Through either door the strategy must see every block exactly
once and in order, the buffer must get every batch in order, and a refused offer must
take nothing (neither the strategy nor the buffer), so the ``put`` that follows it does
not hand anything twice. The flush interval is an hour: nothing but the test takes rows.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from ticktape.runners.buffer import TickBuffer
from ticktape.runners.paper import StrategyTap
from ticktape.strategies import LiveSource
from ticktape.ticks import TickBatch, TradeBatch

HOUR = 3600.0


def _block(seq: int, symbols: tuple[str, ...] = ("A", "B"), rows: int = 2) -> list[TickBatch]:
    """One feed block: a batch per symbol, all numbered ``seq``."""
    ids = np.arange(seq * rows, (seq + 1) * rows, dtype=np.int64)
    return [
        TradeBatch(
            "s",
            symbol,
            ids,
            ids,
            np.ones(rows),
            np.ones(rows),
            np.ones(rows, dtype=np.int8),
            seq=seq,
            recv_us=ids,
        )
        for symbol in symbols
    ]


def _seen(live: LiveSource, chunks: int) -> list[list[int]]:
    """The seqs of the next ``chunks`` chunks the strategy's run would read."""
    out = []
    for _ in range(chunks):
        chunk = next(iter(live))
        out.append([b.seq for b in chunk])
    return out


async def _turns(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def _tap(max_rows: int = 1_000, chunks: int = 64) -> tuple[StrategyTap, TickBuffer, LiveSource]:
    buffer = TickBuffer(max_rows=max_rows, flush_rows=1_000, flush_interval_s=HOUR)
    live = LiveSource(chunks)
    return StrategyTap(buffer, live, threading.Event()), buffer, live


def test_offered_blocks_reach_the_strategy_once_and_in_order() -> None:
    async def scenario() -> None:
        tap, buffer, live = _tap()
        for seq in range(5):
            assert tap.offer(_block(seq))
        await tap.flush()  # the last block, at the run's end
        assert _seen(live, 5) == [[s, s] for s in range(5)]
        taken = await buffer.take_ready()
        assert [(b.seq, b.symbol) for b in taken] == [
            (s, sym) for s in range(5) for sym in ("A", "B")
        ]
        assert live.room(64)  # nothing more was queued

    asyncio.run(scenario())


def test_a_behind_strategy_refuses_the_offer_and_the_put_waits_for_it() -> None:
    async def scenario() -> None:
        tap, buffer, live = _tap(chunks=1)
        assert tap.offer(_block(0))  # held until the next block starts
        assert tap.offer(_block(1))  # block 0 to the strategy: its queue is full now
        rows = buffer.rows
        assert not tap.offer(_block(2))  # block 1 has no room: nothing taken
        assert buffer.rows == rows
        putting = asyncio.create_task(tap.put(_block(2)))  # what the driver does then
        await _turns()
        assert not putting.done()  # back-pressure: the strategy is behind
        assert _seen(live, 1) == [[0, 0]]  # the strategy reads: room again
        await asyncio.wait_for(putting, timeout=30)  # block 1 handed on, block 2 buffered
        assert _seen(live, 1) == [[1, 1]]
        await tap.flush()
        assert _seen(live, 1) == [[2, 2]]
        taken = await buffer.take_ready()
        assert [b.seq for b in taken] == [0, 0, 1, 1, 2, 2]

    asyncio.run(scenario())


def test_a_full_buffer_refuses_the_offer_without_feeding_the_strategy() -> None:
    async def scenario() -> None:
        tap, buffer, live = _tap(max_rows=4)  # one block of two symbols fills it
        assert tap.offer(_block(0))
        assert not tap.offer(_block(1))  # no room in the buffer
        assert live.room(64)  # block 0 was not handed on by the refused offer
        putting = asyncio.create_task(tap.put(_block(1)))
        await _turns()
        assert not putting.done()
        assert _seen(live, 1) == [[0, 0]]  # handed on by the put, once
        await tap.unbound()  # the run is ending: the put goes in without room
        await asyncio.wait_for(putting, timeout=30)
        await tap.flush()
        assert _seen(live, 1) == [[1, 1]]
        assert live.room(64)
        assert [b.seq for b in await buffer.take_ready()] == [0, 0, 1, 1]

    asyncio.run(scenario())


def test_once_the_strategy_ended_nothing_more_is_recorded() -> None:
    async def scenario() -> None:
        buffer = TickBuffer(max_rows=1_000, flush_rows=1_000, flush_interval_s=HOUR)
        done = threading.Event()
        tap = StrategyTap(buffer, LiveSource(4), done)
        assert tap.offer(_block(0))
        done.set()
        assert tap.offer(_block(1))  # taken and dropped, as put does: the run is stopping
        await tap.put(_block(2))
        assert buffer.rows == 4

    asyncio.run(scenario())
