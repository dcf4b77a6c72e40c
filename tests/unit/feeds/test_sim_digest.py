"""The simulated exchange's exact output for fixed seeds, pinned: a change to how blocks
are generated, chunked, sliced or stamped must not change a single tick.

Each expected digest was computed on the code of commit bb52089 (before the feed's
per-block work was cut) and written here by hand; a digest that changes means the ticks
of a seed changed, which breaks resumed recordings and reproducible sessions. Prices and
quantities enter the digest as integers (cents, millionths: how they are generated), so
the pin does not depend on the last bit of a platform's ``exp``.
"""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest

from ticktape.domain import DataType
from ticktape.feeds.sim import BLOCK_PERIOD_S, ResumePoint, SimExchange
from ticktape.feeds.simdriver import SimDriver
from ticktape.ticks import TickBatch, TradeBatch

START_US = 1_700_000_000_000_000
RECV_US = 1_800_000_000_000_000  # block k is handed out at RECV_US + k (when stamped)


def _ints(a: np.ndarray, scale: float | None = None) -> bytes:
    if scale is not None:
        a = np.rint(np.asarray(a) * scale)
    return np.ascontiguousarray(a, dtype=np.int64).tobytes() + repr(np.shape(a)).encode()


def _digest(blocks: list[list[TickBatch]], *, with_recv: bool) -> str:
    h = hashlib.sha256()
    for block in blocks:
        h.update(b"block %d" % len(block))
        for b in block:
            h.update(f"{type(b).__name__} {b.session_id} {b.symbol} {b.seq} {len(b)}".encode())
            h.update(_ints(b.ts_us))
            if isinstance(b, TradeBatch):
                h.update(_ints(b.trade_id) + _ints(b.side))
                h.update(_ints(b.price, 100) + _ints(b.qty, 1e6))
            else:
                h.update(_ints(b.bid_price, 100) + _ints(b.ask_price, 100))
                h.update(_ints(b.bid_qty, 1e6) + _ints(b.ask_qty, 1e6))
            if with_recv:
                assert b.recv_us is not None and len(b.recv_us) == len(b)
                h.update(_ints(b.recv_us))
    return h.hexdigest()


def _exchange(case: str) -> SimExchange:
    if case == "default":  # the capacity benchmark's session: 1 symbol, 20 trades/s
        return SimExchange("s1", ("BTC_USDT",), seed=7, start_us=START_US)
    if case == "uneven_books":  # 6 trades a block, a book every 5th: 1 or 2 a block
        return SimExchange("s2", ("A", "B"), seed=3, rate_per_s=24.0, start_us=START_US)
    if case == "short_trades":  # 1 trade a block; chunks cut by the duration
        return SimExchange(
            "s3",
            ("A",),
            data_types=(DataType.TRADES,),
            seed=5,
            rate_per_s=1.0,
            start_us=START_US,
            duration_s=10.0,
        )
    if case == "deep_books":
        return SimExchange(
            "s4",
            ("A", "B", "C"),
            data_types=(DataType.ORDERBOOK,),
            depth=5,
            seed=11,
            rate_per_s=100.0,
            book_every=3,
            start_us=START_US,
        )
    if case == "resumed":
        resume = ResumePoint(START_US + 5_000_000, {"A": 1234}, {"A": 101.37})
        return SimExchange("s5", ("A", "B"), seed=2, start_us=START_US, resume=resume)
    if case == "max_rate":
        return SimExchange("s6", ("A",), seed=9, rate_per_s=0, start_us=START_US)
    raise AssertionError(case)


# case: (blocks, stamped, digest computed on bb52089's code)
CASES = {
    "default": (300, True, "0f5ed77b01638c15124905d0cb8f1dba4b943dfba8d06b951ea103fc6cf4559d"),
    "uneven_books": (230, True, "761d881bd745c6e0b6186036406e657ab1bd7bbfa1125a483abe86436b4429bd"),
    "short_trades": (40, True, "aac8803d63e3e2ae1c3cbfda39483785293c6d39dd7edb1ab7db8dcbfc9579e1"),
    "deep_books": (120, False, "776ebfb762bb5e21376713366caf29810eb416577cf9574a0914a6600d2d7315"),
    "resumed": (120, True, "c85159518d92ad41708da9c908430a363087c478d36d20d5de951e7d3f0fe259"),
    "max_rate": (3, False, "1cfa0e6f22432800eab67b432c6fbfb4359259a3a626574b3cccdba81b7cd1cb"),
}
# the "default" case's blocks without their receive times (computed on bb52089's code)
DEFAULT_UNSTAMPED = "0a56c702f6a99fcfadca25181e7982a0994ea24a4b2ecaf965222f98f279dd07"


def _blocks(case: str) -> list[list[TickBatch]]:
    n, stamped, _ = CASES[case]
    ex = _exchange(case)
    return [ex.next_block(RECV_US + k if stamped else None) for k in range(n)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_seed_gives_the_same_ticks_as_before(case: str) -> None:
    _, stamped, expected = CASES[case]
    assert _digest(_blocks(case), with_recv=stamped) == expected


def test_exchanges_of_one_seed_side_by_side_give_the_same_ticks_as_before() -> None:
    # The streams' seed sequences are remembered across exchanges: a second exchange
    # of the same seed, built while the first is half-way, starts from the same state
    # and neither moves the other.
    n, stamped, expected = CASES["default"]
    first = _exchange("default")
    head = [first.next_block(RECV_US + k) for k in range(n // 2)]
    second = _exchange("default")
    tail = [first.next_block(RECV_US + k) for k in range(n // 2, n)]
    assert stamped
    assert _digest(head + tail, with_recv=True) == expected
    assert _digest([second.next_block(RECV_US + k) for k in range(n)], with_recv=True) == expected


def test_the_driver_hands_out_the_same_ticks_however_its_turns_fall() -> None:
    n, _, _ = CASES["default"]

    async def scenario() -> list[list[TickBatch]]:
        loop = asyncio.get_running_loop()
        driver = SimDriver(loop)
        got: list[list[TickBatch]] = []

        def offer(block: list[TickBatch], rows: int) -> bool:
            got.append(block)
            return True

        async def put(block: list[TickBatch]) -> None:
            raise AssertionError("offer always takes it")

        stream = driver.attach(_exchange("default"), offer, put)
        t0 = loop.time()
        at = 0.0
        step = 0
        while len(got) < n:
            # irregular turns: late by up to three periods, or several in one period
            at += (0.3, 3.0, 0.5, 1.0, 2.2)[step % 5] * BLOCK_PERIOD_S
            step += 1
            driver.turn(t0 + at)
        driver.detach(stream)
        return got[:n]

    blocks = asyncio.run(scenario())
    assert _digest(blocks, with_recv=False) == DEFAULT_UNSTAMPED
