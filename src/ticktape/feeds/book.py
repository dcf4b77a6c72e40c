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

    __slots__ = ("_ask_px", "_asks", "_bid_negpx", "_bids")

    def __init__(self) -> None:
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._bid_negpx: list[float] = []  # -price, best (highest) bid first
        self._ask_px: list[float] = []  # price, best (lowest) ask first

    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._bid_negpx.clear()
        self._ask_px.clear()

    def reset(
        self, bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]]
    ) -> None:
        """Replace the whole book by a snapshot (levels with zero quantity are skipped)."""
        self._bids = {p: q for p, q in bids if q > 0}
        self._asks = {p: q for p, q in asks if q > 0}
        self._bid_negpx = sorted(-p for p in self._bids)
        self._ask_px = sorted(self._asks)

    def set_bid(self, price: float, qty: float) -> None:
        book = self._bids
        if qty > 0:
            if price not in book:
                insort(self._bid_negpx, -price)
            book[price] = qty
        elif price in book:
            del book[price]
            keys = self._bid_negpx
            del keys[bisect_left(keys, -price)]

    def set_ask(self, price: float, qty: float) -> None:
        book = self._asks
        if qty > 0:
            if price not in book:
                insort(self._ask_px, price)
            book[price] = qty
        elif price in book:
            del book[price]
            keys = self._ask_px
            del keys[bisect_left(keys, price)]

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

    @property
    def crossed(self) -> bool:
        """Best bid at or above best ask: a book that cannot be right (a missed update)."""
        return bool(self._bid_negpx and self._ask_px and -self._bid_negpx[0] >= self._ask_px[0])

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)
