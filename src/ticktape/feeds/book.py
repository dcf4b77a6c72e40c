"""A local level-2 order book kept from a snapshot and absolute level updates.

Both exchanges publish a level's new *total* quantity (zero removes the level),
so a level update is a replace, never an increment. Prices are kept in sorted
lists beside a price → quantity map so that the top ``depth`` levels are a slice
— a snapshot after every update costs ``O(depth)``, not a sort of the book.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable


class LocalBook:
    """One symbol's book. Bids are kept as negated prices so both sides sort ascending."""

    __slots__ = ("_ask_px", "_ask_row", "_asks", "_bid_negpx", "_bid_row", "_bids", "_row_depth")

    def __init__(self) -> None:
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._bid_negpx: list[float] = []  # -price, best (highest) bid first
        self._ask_px: list[float] = []  # price, best (lowest) ask first
        # The top ``_row_depth`` levels of each side as :meth:`row` lays them out, kept
        # until an update touches a level within them (most updates are deeper).
        self._row_depth = 0
        self._bid_row: list[float] | None = None
        self._ask_row: list[float] | None = None

    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._bid_negpx.clear()
        self._ask_px.clear()
        self._bid_row = self._ask_row = None

    def reset(
        self, bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]]
    ) -> None:
        """Replace the whole book by a snapshot (levels with zero quantity are skipped)."""
        self._bids = {p: q for p, q in bids if q > 0}
        self._asks = {p: q for p, q in asks if q > 0}
        self._bid_negpx = sorted(-p for p in self._bids)
        self._ask_px = sorted(self._asks)
        self._bid_row = self._ask_row = None

    def set_bid(self, price: float, qty: float) -> None:
        book = self._bids
        keys = self._bid_negpx
        if qty > 0:
            if price not in book:
                insort(keys, -price)
            book[price] = qty
        elif price in book:
            del book[price]
            del keys[bisect_left(keys, -price)]
        else:
            return
        # A level within the cached top changed (after a removal the level that moved up
        # is at or below the removed one, so the same test holds).
        d = self._row_depth
        if self._bid_row is not None and (len(keys) <= d or -price <= keys[d - 1]):
            self._bid_row = None

    def set_ask(self, price: float, qty: float) -> None:
        book = self._asks
        keys = self._ask_px
        if qty > 0:
            if price not in book:
                insort(keys, price)
            book[price] = qty
        elif price in book:
            del book[price]
            del keys[bisect_left(keys, price)]
        else:
            return
        d = self._row_depth
        if self._ask_row is not None and (len(keys) <= d or price <= keys[d - 1]):
            self._ask_row = None

    def apply(
        self, bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]]
    ) -> None:
        """One diff update: each (price, quantity) level set, a quantity of 0 removing it."""
        for price, qty in bids:
            self.set_bid(price, qty)
        for price, qty in asks:
            self.set_ask(price, qty)

    def top(self, depth: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best ``depth`` bids (highest first) and asks (lowest first)."""
        bids = self._bids
        asks = self._asks
        return (
            [(-n, bids[-n]) for n in self._bid_negpx[:depth]],
            [(p, asks[p]) for p in self._ask_px[:depth]],
        )

    def row(self, depth: int) -> list[float]:
        """The top ``depth`` levels as one snapshot row: bid prices, bid quantities, ask
        prices, ask quantities (best first), missing levels as 0 — the layout of
        :func:`ticktape.feeds.contract.book_row`, without building level tuples."""
        if depth != self._row_depth:
            self._row_depth = depth
            self._bid_row = self._ask_row = None
        bid_row = self._bid_row
        if bid_row is None:
            bids = self._bids
            bid_px = [-n for n in self._bid_negpx[:depth]]
            pad = [0.0] * (depth - len(bid_px))
            bid_row = self._bid_row = bid_px + pad + [bids[p] for p in bid_px] + pad
        ask_row = self._ask_row
        if ask_row is None:
            asks = self._asks
            ask_px = self._ask_px[:depth]
            pad = [0.0] * (depth - len(ask_px))
            ask_row = self._ask_row = ask_px + pad + [asks[p] for p in ask_px] + pad
        return bid_row + ask_row

    @property
    def crossed(self) -> bool:
        """Best bid at or above best ask: a book that cannot be right (a missed update)."""
        return bool(self._bid_negpx and self._ask_px and -self._bid_negpx[0] >= self._ask_px[0])

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)
