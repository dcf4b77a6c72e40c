"""The collect runner's tick buffer: when a flush is due.

The flush interval in these tests is an hour, so nothing but the rows put can make a
flush due: "not taken yet" is a state no timer or other task can change meanwhile.
"""

from __future__ import annotations

import asyncio

import numpy as np

from ticktape.runners.buffer import RowPool, TickBuffer
from ticktape.ticks import TradeBatch

HOUR = 3600.0


def _trades(n: int, start: int = 0) -> TradeBatch:
    ids = np.arange(start, start + n, dtype=np.int64)
    return TradeBatch(
        "s", "X", ids, ids, np.ones(n), np.ones(n), np.ones(n, dtype=np.int8), recv_us=ids
    )


async def _turns(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_eager_rows_make_a_flush_due_before_the_interval() -> None:
    async def scenario() -> None:
        buffer = TickBuffer(
            max_rows=10_000, flush_rows=1_000, flush_interval_s=HOUR, eager_rows=100
        )
        taking = asyncio.create_task(buffer.take())
        await buffer.put([_trades(60)])
        await _turns()
        assert not taking.done(), "60 rows (< eager_rows) made the flush due"
        await buffer.put([_trades(50, 60)])
        taken = await asyncio.wait_for(taking, 10)
        assert [len(b) for b in taken] == [60, 50]
        assert buffer.rows == 0

    asyncio.run(scenario())


def test_a_flush_takes_at_most_flush_rows_however_eager() -> None:
    async def scenario() -> None:
        buffer = TickBuffer(
            max_rows=10_000, flush_rows=1_000, flush_interval_s=HOUR, eager_rows=100
        )
        await buffer.put([_trades(500, i * 500) for i in range(3)])
        taken = await asyncio.wait_for(buffer.take(), 10)
        assert [len(b) for b in taken] == [500, 500]
        assert buffer.rows == 500
        taken = await asyncio.wait_for(buffer.take(), 10)  # the rest is still past eager_rows
        assert [len(b) for b in taken] == [500]

    asyncio.run(scenario())


def test_without_eager_rows_a_flush_waits_for_flush_rows() -> None:
    async def scenario() -> None:
        buffer = TickBuffer(max_rows=10_000, flush_rows=1_000, flush_interval_s=HOUR)
        assert buffer.eager_rows == 1_000
        assert (
            TickBuffer(max_rows=10, flush_rows=5, flush_interval_s=1, eager_rows=50).eager_rows == 5
        )
        taking = asyncio.create_task(buffer.take())
        await buffer.put([_trades(900)])
        await _turns()
        assert not taking.done(), "900 rows (< flush_rows, no eager rows) made the flush due"
        await buffer.put([_trades(100, 900)])
        taken = await asyncio.wait_for(taking, 10)
        assert sum(len(b) for b in taken) == 1_000

    asyncio.run(scenario())


def test_the_instance_bound_holds_back_a_put_until_another_session_flushes() -> None:
    async def scenario() -> None:
        pool = RowPool(10)

        def buffer() -> TickBuffer:
            return TickBuffer(
                max_rows=1_000, flush_rows=1_000, flush_interval_s=HOUR, eager_rows=1, pool=pool
            )

        a, b = buffer(), buffer()
        await a.put([_trades(6)])
        await b.put([_trades(3)])
        assert pool.rows == 9
        putting = asyncio.create_task(b.put([_trades(3, 3)]))  # 12 > 10: waits for room
        await _turns()
        assert not putting.done(), "a put went past the instance's bound"
        assert pool.waits == 1 and b.rows == 3
        assert [len(x) for x in await asyncio.wait_for(a.take(), 10)] == [6]  # frees 6
        await asyncio.wait_for(putting, 10)
        assert b.rows == 6 and pool.rows == 6  # nothing lost: the waiting block went in
        # an empty buffer always takes one block (no session starves, nothing deadlocks)
        await a.put([_trades(5)])
        assert pool.rows == 11
        # a lost run's rows leave the pool with its buffer
        b.detach()
        assert pool.rows == 5

    asyncio.run(scenario())


def test_a_put_waiting_for_the_instance_bound_goes_in_once_the_run_ends() -> None:
    async def scenario() -> None:
        pool = RowPool(4)
        buffer = TickBuffer(max_rows=1_000, flush_rows=1_000, flush_interval_s=HOUR, pool=pool)
        await buffer.put([_trades(4)])
        putting = asyncio.create_task(buffer.put([_trades(2, 4)]))
        await _turns()
        assert not putting.done(), "a put went past the instance's bound"
        await buffer.unbound()  # the run is ending: the rest of the block goes in at once
        await asyncio.wait_for(putting, 10)
        assert buffer.rows == 6 and pool.rows == 6
        assert [len(x) for x in await buffer.shed()] == [4, 2]
        assert pool.rows == 0

    asyncio.run(scenario())


def test_a_release_wakes_only_the_waiting_puts_the_freed_room_holds_first_come_first() -> None:
    async def scenario() -> None:
        pool = RowPool(10)

        def buffer() -> TickBuffer:
            return TickBuffer(
                max_rows=1_000, flush_rows=1_000, flush_interval_s=HOUR, eager_rows=1, pool=pool
            )

        full, *waiting = [buffer() for _ in range(4)]
        for b in waiting:
            await b.put([_trades(1)])
        await full.put([_trades(7)])  # the pool holds 10
        puts = [asyncio.create_task(b.put([_trades(3, 1)])) for b in waiting]
        await _turns()
        assert not any(p.done() for p in puts)
        # a flush of 1 row frees room for nobody; one of 7 makes room for two of the three
        await waiting[0].take()
        await _turns()
        assert not any(p.done() for p in puts), "a put went in without room"
        await full.take()
        await asyncio.wait_for(asyncio.gather(puts[0], puts[1]), 10)
        await _turns()
        assert not puts[2].done(), "a release woke more puts than its room holds"
        assert pool.rows == 8  # 3, 1 + 3 and 1 buffered (admitted rows are reserved)
        assert pool.peak <= 10
        await waiting[2].close()  # its run ends: its put goes in at once
        await asyncio.wait_for(puts[2], 10)

    asyncio.run(scenario())


def test_take_now_takes_at_once_unless_a_put_waits_on_the_buffer() -> None:
    """The writer's plain take: the rows at once while nobody waits on the buffer; None
    while a put waits for room (it must be woken, which needs the condition), and then
    ``take_ready`` takes the rows and lets that put in."""

    async def scenario() -> None:
        buffer = TickBuffer(max_rows=100, flush_rows=1_000, flush_interval_s=HOUR)
        assert buffer.take_now() == []
        await buffer.put([_trades(60)])
        taken = buffer.take_now()
        assert taken is not None and [len(b) for b in taken] == [60]
        assert buffer.rows == 0
        await buffer.put([_trades(60, 60)])
        waiting = asyncio.create_task(buffer.put([_trades(60, 120)]))  # past max_rows
        await _turns()
        assert not waiting.done()
        assert buffer.take_now() is None, "took without waking the put waiting for room"
        taken = await buffer.take_ready()
        assert [len(b) for b in taken] == [60]
        await asyncio.wait_for(waiting, 5)
        assert buffer.rows == 60
        taken = buffer.take_now()
        assert taken is not None and [len(b) for b in taken] == [60]

    asyncio.run(scenario())
