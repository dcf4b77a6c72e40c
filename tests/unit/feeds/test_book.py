"""The local order book against a plain dictionary model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ticktape.feeds.book import LocalBook
from ticktape.feeds.contract import book_row

prices = st.integers(1, 60).map(lambda i: i / 2)
updates = st.lists(st.tuples(st.booleans(), prices, st.sampled_from([0.0, 1.0, 2.5, 7.0])))


def test_snapshot_then_updates() -> None:
    book = LocalBook()
    book.reset([(99.0, 1.0), (98.0, 2.0), (97.0, 0.0)], [(101.0, 3.0), (102.0, 4.0)])
    assert book.top(5) == ([(99.0, 1.0), (98.0, 2.0)], [(101.0, 3.0), (102.0, 4.0)])
    book.set_bid(99.5, 5.0)  # a new best bid
    book.set_bid(98.0, 0.0)  # removed
    book.set_ask(101.0, 9.0)  # replaced, not added to
    book.set_ask(150.0, 0.0)  # removing an absent level changes nothing
    assert book.top(2) == ([(99.5, 5.0), (99.0, 1.0)], [(101.0, 9.0), (102.0, 4.0)])
    assert len(book) == 4
    assert not book.crossed
    book.set_bid(101.0, 1.0)
    assert book.crossed


@given(updates, st.integers(1, 10))
def test_top_matches_a_sorted_dict(ops: list[tuple[bool, float, float]], depth: int) -> None:
    book = LocalBook()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for is_bid, price, qty in ops:
        (book.set_bid if is_bid else book.set_ask)(price, qty)
        side = bids if is_bid else asks
        if qty:
            side[price] = qty
        else:
            side.pop(price, None)
    want_bids = sorted(bids.items(), reverse=True)[:depth]
    want_asks = sorted(asks.items())[:depth]
    assert book.top(depth) == (want_bids, want_asks)


def test_apply_sets_and_removes_levels_of_both_sides() -> None:
    book = LocalBook()
    book.reset([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0)])
    book.apply([(100.0, 0.0), (98.0, 3.0)], [(101.0, 5.0), (102.0, 1.0)])
    assert book.top(5) == ([(99.0, 2.0), (98.0, 3.0)], [(101.0, 5.0), (102.0, 1.0)])


@given(
    st.lists(st.tuples(st.integers(0, 2), st.booleans(), prices, st.sampled_from([0.0, 1.0, 3.0]))),
    st.integers(1, 8),
)
def test_the_cached_row_always_equals_the_top_laid_out(
    ops: list[tuple[int, bool, float, float]], depth: int
) -> None:
    """``row`` keeps each side's top between updates: after any mix of updates, resets and
    rows taken (at this depth or another), it equals the top laid out by ``book_row``."""
    book = LocalBook()
    book.reset([(10.0, 1.0), (9.5, 2.0)], [(20.0, 1.0)])
    for action, is_bid, price, qty in ops:
        if action == 0:
            (book.set_bid if is_bid else book.set_ask)(price, qty)
        elif action == 1:
            book.row(depth if is_bid else depth + 1)  # cached, maybe at another depth
        elif qty == 0.0:
            book.clear()
        else:
            book.reset([(price, qty)], [(price + 40.0, qty)])
        bids, asks = book.top(depth)
        assert book.row(depth) == book_row(bids, asks, depth)
