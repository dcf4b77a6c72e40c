"""MEXC's book snapshot on the no-await path: the book's cached row with its quantities
scaled to base-asset units equals the snapshot laid out from the scaled top levels (the
path it replaced), for every kind of contract size."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from ticktape.domain import DataType
from ticktape.feeds.book import LocalBook
from ticktape.feeds.contract import book_row
from ticktape.feeds.mexc import MexcEndpoints, MexcFeed, base_quantity

SYM = "BTC_USDT"
prices = st.integers(1, 60).map(lambda i: i / 2)
updates = st.lists(st.tuples(st.booleans(), prices, st.sampled_from([0.0, 1.0, 2.0, 7.0, 13.0])))
# exact multiple, exact divisor (10^-k and 1/2), rounded (0.3, 3.7), unit
sizes = st.sampled_from([10.0, 0.0001, 0.5, 0.3, 3.7, 1.0])


class _Link:
    name = "edge"


class _Conn:
    link = _Link()


@settings(max_examples=60, deadline=None)
@given(updates, st.integers(1, 10), sizes)
def test_the_stored_row_is_the_scaled_top(
    ops: list[tuple[bool, float, float]], depth: int, size: float
) -> None:
    feed = MexcFeed(
        "s",
        (SYM,),
        data_types=(DataType.ORDERBOOK,),
        depth=depth,
        endpoints=MexcEndpoints("ws://127.0.0.1:1/edge", "http://127.0.0.1:1"),
    )
    try:
        feed._scale[SYM] = base_quantity(size)
        conn = cast(Any, _Conn())
        stored: list[list[float]] = []

        def capture(symbol: str, ts_us: int, row: list[float], *_: Any) -> None:
            stored.append(row)

        feed.put_book_row = capture  # type: ignore[method-assign]
        book = LocalBook()
        feed.put_top(conn, SYM, book, 1, 1)  # not the link's primary connection: nothing
        assert stored == []
        feed._primary["edge"] = conn
        for is_bid, price, qty in ops:
            (book.set_bid if is_bid else book.set_ask)(price, qty)
            feed.put_top(conn, SYM, book, 1, 1)
            bids, asks = book.top(depth)
            expected = book_row(feed._base(SYM, bids), feed._base(SYM, asks), depth)
            assert stored[-1] == expected
            # the book's own cached row is left in contract units
            assert book.row(depth) == book_row(bids, asks, depth)
    finally:
        asyncio.run(feed.aclose())
