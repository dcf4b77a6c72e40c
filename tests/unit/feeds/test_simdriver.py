"""The simulated feeds' driver: one task hands every paced sim session its due blocks.

Turns are driven by hand (``driver.turn(now)``, loop time, ahead of the wall clock): the
driver's own task only ever turns at wall-clock points, where nothing is due yet.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ticktape.feeds.sim import BLOCK_PERIOD_S, MAX_CATCH_UP_S, ResumePoint, SimExchange
from ticktape.feeds.simdriver import SimDriver
from ticktape.ticks import TickBatch, TradeBatch

START_US = 1_700_000_000_000_000
RATE = 20.0  # the sim's default: a block of 5 trades every BLOCK_PERIOD_S


def _exchange(seed: int = 1, resume: ResumePoint | None = None) -> SimExchange:
    return SimExchange(
        "s", ("A", "B"), seed=seed, rate_per_s=RATE, start_us=START_US, resume=resume
    )


class Sink:
    """A buffer's doors: ``offer`` takes blocks while ``room``; ``put`` waits for ``freed``."""

    def __init__(self) -> None:
        self.blocks: list[list[TickBatch]] = []
        self.offered_rows: list[tuple[int, int]] = []  # (rows said, rows in the block)
        self.room = True
        self.freed = asyncio.Event()

    def offer(self, block: list[TickBatch], rows: int) -> bool:
        self.offered_rows.append((rows, sum(len(b) for b in block)))
        if self.room:
            self.blocks.append(block)
        return self.room

    async def put(self, block: list[TickBatch]) -> None:
        await self.freed.wait()
        self.blocks.append(block)


def _trade_ids(blocks: list[list[TickBatch]], symbol: str) -> list[int]:
    return [
        i
        for block in blocks
        for b in block
        if isinstance(b, TradeBatch) and b.symbol == symbol
        for i in b.trade_id.tolist()
    ]


def test_one_turn_feeds_every_session_and_counts_rows_once() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        counted: list[tuple[int, int]] = []
        driver = SimDriver(loop, on_rows=lambda t, b: counted.append((t, b)))
        sinks = [Sink() for _ in range(50)]
        exchanges = [_exchange(seed=i) for i in range(50)]  # made first: attached at once
        streams = [
            driver.attach(ex, sink.offer, sink.put)
            for ex, sink in zip(exchanges, sinks, strict=True)
        ]
        t0 = loop.time()
        for k in range(1, 5):
            driver.turn(t0 + k * BLOCK_PERIOD_S)
        assert driver.turns >= 4 and driver.sessions == 50
        assert all(len(sink.blocks) == 4 for sink in sinks)  # one block per period each
        rows = sum(len(b) for sink in sinks for block in sink.blocks for b in block)
        assert len(counted) == 4  # once per turn, not per item or per session
        assert sum(t + b for t, b in counted) == rows
        for stream in streams:
            driver.detach(stream)
        assert driver.sessions == 0

    asyncio.run(scenario())


def test_each_offer_says_the_rows_of_its_block() -> None:
    """The buffer is told a block's rows (it does not sum them per batch), held back or not."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        driver = SimDriver(loop)
        sink = Sink()
        # 6 trades a block, a book every 5th trade: 1 or 2 snapshots a block
        ex = SimExchange("s", ("A", "B"), seed=3, rate_per_s=24.0, start_us=START_US)
        stream = driver.attach(ex, sink.offer, sink.put)
        t0 = loop.time()
        for k in range(1, 12):
            driver.turn(t0 + k * BLOCK_PERIOD_S)
        sink.room = False
        driver.turn(t0 + 12 * BLOCK_PERIOD_S)  # refused: handed to put, said all the same
        assert len(sink.offered_rows) == 12
        assert len({given for given, _ in sink.offered_rows}) > 1  # blocks of unequal size
        assert all(given == counted for given, counted in sink.offered_rows)
        putting = driver.detach(stream)
        assert putting is not None
        putting.cancel()

    asyncio.run(scenario())


def test_blocks_through_the_driver_are_the_exchanges_own_however_turns_fall() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        driver = SimDriver(loop)
        sink = Sink()
        stream = driver.attach(_exchange(), sink.offer, sink.put)
        t0 = loop.time()
        # irregular turns: two periods at once, then two in one period, then on time
        for at in (2, 2.5, 2.9, 3, 4, 6):
            driver.turn(t0 + at * BLOCK_PERIOD_S)
        assert len(sink.blocks) == 6  # the rate is kept: 6 periods, 6 blocks
        reference = _exchange()
        for block in sink.blocks:
            expected = reference.next_block()
            assert len(block) == len(expected)
            for got, want in zip(block, expected, strict=True):
                assert type(got) is type(want) and got.symbol == want.symbol
                assert np.array_equal(got.ts_us, want.ts_us)
                assert got.recv_us is not None  # stamped when handed out
        driver.detach(stream)

    asyncio.run(scenario())


def test_a_session_without_room_is_held_back_and_the_others_go_on() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        driver = SimDriver(loop)
        full, free = Sink(), Sink()
        full.room = False
        held = driver.attach(_exchange(), full.offer, full.put)
        driver.attach(_exchange(seed=2), free.offer, free.put)
        t0 = loop.time()
        for k in range(1, 4):
            driver.turn(t0 + k * BLOCK_PERIOD_S)
            await asyncio.sleep(0)
        assert len(free.blocks) == 3
        assert held.putting is not None and not held.putting.done()
        assert held.exchange.blocks_emitted == 1  # one block waits for room, no more made
        full.freed.set()  # room again: the held block goes in, then the feed catches up
        await held.putting
        full.room = True
        driver.turn(t0 + 4 * BLOCK_PERIOD_S)
        assert len(full.blocks) == 4
        assert _trade_ids(full.blocks, "A") == list(range(1, 4 * 5 + 1))  # nothing dropped

    asyncio.run(scenario())


def test_a_stop_puts_the_held_block_in_and_makes_nothing_more() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        driver = SimDriver(loop)
        sink = Sink()
        sink.room = False
        stream = driver.attach(_exchange(), sink.offer, sink.put)
        t0 = loop.time()
        driver.turn(t0 + BLOCK_PERIOD_S)
        putting = driver.detach(stream)
        assert putting is not None and driver.sessions == 0
        sink.freed.set()  # what the runner's unbound() does for a real buffer
        await putting
        driver.turn(t0 + 5 * BLOCK_PERIOD_S)
        assert len(sink.blocks) == 1 and stream.exchange.blocks_emitted == 1

    asyncio.run(scenario())


def test_a_pause_longer_than_the_catch_up_bound_goes_on_from_now() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        driver = SimDriver(loop)
        sink = Sink()
        driver.attach(_exchange(), sink.offer, sink.put)
        t0 = loop.time()
        driver.turn(t0 + BLOCK_PERIOD_S)
        paused = t0 + BLOCK_PERIOD_S + MAX_CATCH_UP_S + 5.0
        driver.turn(paused)
        assert len(sink.blocks) == 2  # not the 20-odd blocks of the pause
        driver.turn(paused + BLOCK_PERIOD_S)
        assert len(sink.blocks) == 3

    asyncio.run(scenario())


def test_a_resumed_session_continues_after_the_stored_ids() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        driver = SimDriver(loop)
        sink = Sink()
        resume = ResumePoint(START_US + 10_000_000, {"A": 40, "B": 7}, {"A": 100.0})
        driver.attach(_exchange(resume=resume), sink.offer, sink.put)
        t0 = loop.time()
        for k in range(1, 3):
            driver.turn(t0 + k * BLOCK_PERIOD_S)
        assert _trade_ids(sink.blocks, "A") == list(range(41, 51))
        assert _trade_ids(sink.blocks, "B") == list(range(8, 18))
        assert min(int(b.ts_us.min()) for block in sink.blocks for b in block) > resume.after_us

    asyncio.run(scenario())


def test_a_failing_session_ends_alone_with_its_error() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        driver = SimDriver(loop)
        ok = Sink()

        def broken(block: list[TickBatch], rows: int) -> bool:
            raise ValueError("boom")

        bad = driver.attach(_exchange(), broken, ok.put)
        good = driver.attach(_exchange(seed=2), ok.offer, ok.put)
        t0 = loop.time()
        driver.turn(t0 + BLOCK_PERIOD_S)
        driver.turn(t0 + 2 * BLOCK_PERIOD_S)
        with pytest.raises(ValueError, match="boom"):
            await bad.failed
        assert len(ok.blocks) == 2 and driver.sessions == 1
        driver.detach(good)

    asyncio.run(scenario())


def test_a_maximum_rate_feed_is_not_paced_by_the_driver() -> None:
    async def scenario() -> None:
        driver = SimDriver(asyncio.get_running_loop())
        sink = Sink()
        pulled = SimExchange("s", ("A",), rate_per_s=0, start_us=START_US)
        with pytest.raises(ValueError):
            driver.attach(pulled, sink.offer, sink.put)

    asyncio.run(scenario())


def test_a_sliced_turn_yields_the_loop_and_hands_out_the_same_blocks() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        counted: list[tuple[int, int]] = []
        driver = SimDriver(loop, on_rows=lambda t, b: counted.append((t, b)))
        sinks = [Sink() for _ in range(6)]
        streams = [
            driver.attach(_exchange(seed=i), sink.offer, sink.put) for i, sink in enumerate(sinks)
        ]
        t0 = loop.time()
        fed: list[int] = []  # blocks handed out so far, each time another callback ran

        def probe() -> None:
            fed.append(sum(len(sink.blocks) for sink in sinks))
            if len(fed) < 5:
                loop.call_soon(probe)

        loop.call_soon(probe)
        # slice_s=0: one session a slice, the loop yielded after each but the last
        await driver.sliced_turn(lambda: t0 + BLOCK_PERIOD_S, slice_s=0)
        assert fed == [1, 2, 3, 4, 5]  # a waiting callback ran between every two sessions
        assert all(len(sink.blocks) == 1 for sink in sinks)
        assert len(counted) == 6  # once per slice
        rows = sum(len(b) for sink in sinks for block in sink.blocks for b in block)
        assert sum(t + b for t, b in counted) == rows

        # a session detached during a yield gets nothing more; the others go on
        turn = asyncio.ensure_future(driver.sliced_turn(lambda: t0 + 2 * BLOCK_PERIOD_S, 0))
        await asyncio.sleep(0)  # the turn's first slice (session 0) ran
        assert [len(sink.blocks) for sink in sinks] == [2, 1, 1, 1, 1, 1]
        driver.detach(streams[3])
        await turn
        assert [len(sink.blocks) for sink in sinks] == [2, 2, 2, 1, 2, 2]
        for i, sink in enumerate(sinks):  # each session's own blocks, in order
            reference = _exchange(seed=i)
            for block in sink.blocks:
                for got, want in zip(block, reference.next_block(), strict=True):
                    assert np.array_equal(got.ts_us, want.ts_us)
                    if isinstance(got, TradeBatch) and isinstance(want, TradeBatch):
                        assert np.array_equal(got.price, want.price)
                    else:
                        assert type(got) is type(want)
        for stream in streams:
            driver.detach(stream)

    asyncio.run(scenario())


def test_the_blocks_of_a_turn_share_one_read_only_receive_time_array() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        driver = SimDriver(loop)
        sinks = [Sink() for _ in range(3)]
        exchanges = [_exchange(seed=i) for i in range(3)]
        streams = [
            driver.attach(ex, sink.offer, sink.put)
            for ex, sink in zip(exchanges, sinks, strict=True)
        ]
        driver.turn(loop.time() + BLOCK_PERIOD_S)
        recvs = [b.recv_us for sink in sinks for b in sink.blocks[0]]
        assert all(r is not None and not r.flags.writeable for r in recvs)
        bases = {id(r.base) for r in recvs if r is not None}
        assert len(bases) == 1  # one array for the turn, not one per block
        with pytest.raises(ValueError):
            recvs[0][0] = 0  # type: ignore[index]  # a write would change every session's rows
        for stream in streams:
            driver.detach(stream)

    asyncio.run(scenario())
