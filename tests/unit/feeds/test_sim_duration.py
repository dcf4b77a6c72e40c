"""The simulated exchange generates what a session's duration needs, and the same values
however it is chunked."""

from __future__ import annotations

import numpy as np

from ticktape.feeds.sim import CHUNK_EVENTS, SimExchange
from ticktape.ticks import BookBatch, TickBatch, TradeBatch

START_US = 1_700_000_000_000_000


def _take(ex: SimExchange, blocks: int) -> list[TickBatch]:
    return [b for _ in range(blocks) for b in ex.next_block()]


def _trades(batches: list[TickBatch], symbol: str) -> TradeBatch:
    parts = [b for b in batches if isinstance(b, TradeBatch) and b.symbol == symbol]
    return TradeBatch(
        session_id="s",
        symbol=symbol,
        ts_us=np.concatenate([b.ts_us for b in parts]),
        trade_id=np.concatenate([b.trade_id for b in parts]),
        price=np.concatenate([b.price for b in parts]),
        qty=np.concatenate([b.qty for b in parts]),
        side=np.concatenate([b.side for b in parts]),
        seq=0,
    )


def test_a_one_second_session_at_one_trade_a_second_generates_two_trades_not_a_chunk() -> None:
    ex = SimExchange("s", ("A",), rate_per_s=1.0, start_us=START_US, duration_s=1.0)
    assert ex.blocks_per_chunk == CHUNK_EVENTS  # one trade a block: 256 blocks a chunk
    ex.next_block()
    generated = ex._states[0].events  # trades generated so far
    assert generated == 2  # the duration's one trade, and one block to spare
    unbounded = SimExchange("s", ("A",), rate_per_s=1.0, start_us=START_US)
    unbounded.next_block()
    assert unbounded._states[0].events == CHUNK_EVENTS


def test_past_its_duration_it_goes_on_block_by_block() -> None:
    ex = SimExchange("s", ("A",), rate_per_s=4.0, start_us=START_US, duration_s=1.0)
    _take(ex, ex.blocks_needed or 0)
    before = ex._states[0].events
    ex.next_block()
    assert ex._states[0].events - before == ex.block_events


def test_values_are_the_same_however_the_stream_is_chunked() -> None:
    symbols = ("A", "B")
    whole = SimExchange("s", symbols, seed=3, rate_per_s=24.0, start_us=START_US)
    short = SimExchange("s", symbols, seed=3, rate_per_s=24.0, start_us=START_US, duration_s=0.3)
    n = 2 * whole.blocks_per_chunk + 5  # across chunk boundaries of both
    a, b = _take(whole, n), _take(short, n)
    for symbol in symbols:
        ta, tb = _trades(a, symbol), _trades(b, symbol)
        assert np.array_equal(ta.trade_id, tb.trade_id)
        assert np.array_equal(ta.ts_us, tb.ts_us)
        assert np.array_equal(ta.qty, tb.qty) and np.array_equal(ta.side, tb.side)
        assert np.allclose(ta.price, tb.price, rtol=0, atol=1e-6)
        ba = [x for x in a if isinstance(x, BookBatch) and x.symbol == symbol]
        bb = [x for x in b if isinstance(x, BookBatch) and x.symbol == symbol]
        assert np.array_equal(
            np.concatenate([x.ts_us for x in ba]), np.concatenate([x.ts_us for x in bb])
        )
        assert np.array_equal(
            np.concatenate([x.ask_qty for x in ba]), np.concatenate([x.ask_qty for x in bb])
        )
