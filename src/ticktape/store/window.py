"""Rows of one replay window as columnar batches: shared by the SQL backends.

``TickStore.read_window`` returns a window's ticks as one trade batch and one book
batch per symbol; backends fetch the rows their own way and build the batches here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ticktape.ticks import BookBatch, Float64Array, TickBatch, TradeBatch

#: (symbol, ts_us, trade_id, price, qty, side)
TradeRow = tuple[str, int, int, float, float, int]
#: (symbol, ts_us, depth, bid_price, bid_qty, ask_price, ask_qty): levels as float64
#: little-endian blobs, best first
BookRow = tuple[str, int, int, bytes, bytes, bytes, bytes]


def window_batches(
    session_id: str,
    trade_rows: Sequence[tuple[Any, ...]],
    book_rows: Sequence[tuple[Any, ...]],
    symbols: tuple[str, ...] | None,
) -> list[TickBatch]:
    """Rows of one window (any order) as columnar batches (``TickStore.read_window``)."""
    out: list[TickBatch] = []
    by_symbol: dict[str, tuple[list[int], list[int]]] = {}
    for n, r in enumerate(trade_rows):
        by_symbol.setdefault(r[0], ([], []))[0].append(n)
    for n, b in enumerate(book_rows):
        by_symbol.setdefault(b[0], ([], []))[1].append(n)
    wanted = by_symbol.keys() if symbols is None else set(symbols) & by_symbol.keys()
    if trade_rows:
        _, ts_all, tid_all, px_all, qty_all, side_all = zip(*trade_rows, strict=True)
        ts_a = np.fromiter(ts_all, np.int64, len(trade_rows))
        tid_a = np.fromiter(tid_all, np.int64, len(trade_rows))
        px_a = np.fromiter(px_all, np.float64, len(trade_rows))
        qty_a = np.fromiter(qty_all, np.float64, len(trade_rows))
        side_a = np.fromiter(side_all, np.int8, len(trade_rows))
    for sym in sorted(wanted):
        trade_idx, book_idx = by_symbol[sym]
        if trade_idx:
            idx = np.asarray(trade_idx, np.int64)
            order = idx[np.lexsort((tid_a[idx], ts_a[idx]))]
            out.append(
                TradeBatch(
                    session_id,
                    sym,
                    ts_a[order],
                    tid_a[order],
                    px_a[order],
                    qty_a[order],
                    side_a[order],
                )
            )
        if book_idx:
            rows = sorted((book_rows[i] for i in book_idx), key=lambda b: b[1])
            out.append(_book_batch(session_id, sym, rows))
    return out


def _book_batch(session_id: str, symbol: str, rows: list[tuple[Any, ...]]) -> BookBatch:
    n = len(rows)
    depth = max(r[2] for r in rows)
    ts = np.fromiter((r[1] for r in rows), np.int64, n)

    def side(col: int, pad: float) -> Float64Array:
        if all(r[2] == depth for r in rows):
            return np.frombuffer(b"".join(r[col] for r in rows), "<f8").reshape(n, depth).copy()
        out = np.full((n, depth), pad)
        for i, r in enumerate(rows):
            out[i, : r[2]] = np.frombuffer(r[col], "<f8")
        return out

    return BookBatch(
        session_id, symbol, ts, side(3, np.nan), side(4, 0.0), side(5, np.nan), side(6, 0.0)
    )
