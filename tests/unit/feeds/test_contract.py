"""The feed contract's building blocks: backoff, the bounded queue, the batch builders."""

from __future__ import annotations

import asyncio
import random

import numpy as np

from ticktape.feeds.contract import (
    BookBuilder,
    EventKind,
    FeedEvent,
    FeedQueue,
    TradeBuilder,
    reconnect_delay,
)


def test_reconnect_delay_is_capped_jittered_and_never_runs_out() -> None:
    random.seed(7)
    delays = [reconnect_delay(n, 0.25, 30.0) for n in range(10_000)]
    assert all(0 <= d <= 30.0 for d in delays)
    assert max(delays[:3]) <= 1.0  # early attempts are quick
    assert len(set(delays[100:200])) == 100  # full jitter: no two clients in lockstep


def test_queue_is_bounded_and_close_ends_the_consumer_after_the_queued_items() -> None:
    async def scenario() -> list[object]:
        q = FeedQueue(max_items=2)
        e = FeedEvent(EventKind.CONNECTED, 1)
        await q.put(e)
        await q.put(e)
        blocked = asyncio.create_task(q.put(e))  # full: the reader waits (back-pressure)
        await asyncio.sleep(0)
        assert not blocked.done()
        q.close()
        got = [await q.get(), await q.get()]
        await blocked
        got += [await q.get(), await q.get()]
        return got

    assert asyncio.run(scenario()) == [FeedEvent(EventKind.CONNECTED, 1)] * 3 + [None]


def test_trade_builder_makes_one_columnar_batch() -> None:
    b = TradeBuilder("s", "X")
    b.add(10, 1, 1.5, 2.0, 1, 15)
    b.add(10, 2, 1.6, 3.0, -1, 16)
    item = b.take(seq=4)
    assert len(b) == 0
    assert item.batch.trade_id.tolist() == [1, 2]
    assert item.batch.side.dtype == np.int8
    assert item.recv_us.tolist() == [15, 16]
    assert item.batch.seq == 4


def test_book_builder_pads_thin_books_and_keeps_times_strictly_increasing() -> None:
    b = BookBuilder("s", "X", depth=3)
    b.add(100, [(9.0, 1.0)], [(11.0, 2.0), (12.0, 1.0)], 150)
    b.add(100, [(9.0, 2.0)], [(11.0, 2.0)], 151)  # the same exchange time
    first = b.take(seq=0)
    b.add(100, [(9.0, 3.0)], [(11.0, 2.0)], 152)  # and again, in the next batch
    second = b.take(seq=1)
    assert first.batch.ts_us.tolist() == [100, 101]
    assert second.batch.ts_us.tolist() == [102]
    assert first.batch.bid_price[0].tolist() == [9.0, 0.0, 0.0]
    assert first.batch.ask_qty[0].tolist() == [2.0, 1.0, 0.0]
    assert first.batch.depth == 3


def test_book_builder_lays_out_full_thin_and_deep_books_the_same() -> None:
    # full books take one numpy conversion, a thin one the padded path: both give the
    # same layout (best first, levels past the depth cut, missing ones price 0 qty 0)
    full = [[(10.0 - i, 1.0 + i) for i in range(5)], [(20.0 - i, 0.5) for i in range(3)]]
    asks = [[(11.0 + i, 2.0) for i in range(3)], [(21.0 + i, 3.0 + i) for i in range(4)]]
    b = BookBuilder("s", "X", depth=3)
    for n, (bids, ask) in enumerate(zip(full, asks, strict=True)):
        b.add(100 + n, bids, ask, 200 + n)
    deep = b.take(seq=0).batch
    assert deep.bid_price.tolist() == [[10.0, 9.0, 8.0], [20.0, 19.0, 18.0]]
    assert deep.bid_qty.tolist() == [[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]
    assert deep.ask_price.tolist() == [[11.0, 12.0, 13.0], [21.0, 22.0, 23.0]]
    assert deep.ask_qty.tolist() == [[2.0, 2.0, 2.0], [3.0, 4.0, 5.0]]
    b.add(300, [], [(5.0, 1.0)], 400)  # an empty side and a thin one
    b.add(301, full[0], asks[0], 401)
    thin = b.take(seq=1).batch
    assert thin.bid_price.tolist() == [[0.0, 0.0, 0.0], [10.0, 9.0, 8.0]]
    assert thin.ask_price.tolist() == [[5.0, 0.0, 0.0], [11.0, 12.0, 13.0]]
    assert thin.ask_qty.tolist() == [[1.0, 0.0, 0.0], [2.0, 2.0, 2.0]]
    assert thin.bid_price.flags.c_contiguous and thin.bid_price.dtype == "float64"
