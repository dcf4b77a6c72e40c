"""Rows of one replay window as columnar batches: shared by the SQL backends.

``TickStore.read_window`` returns a window's ticks as one trade batch and one book
batch per symbol; backends fetch the rows their own way and build the batches here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

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


def _symbol_codes(symbols: pa.ChunkedArray) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Each row's symbol as an index into the returned list of distinct symbols."""
    encoded = pc.dictionary_encode(symbols).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return codes, [str(s) for s in encoded.dictionary.to_pylist()]


def _column(table: pa.Table, name: str, dtype: type[Any]) -> npt.NDArray[Any]:
    values: npt.NDArray[Any] = table.column(name).to_numpy().astype(dtype, copy=False)
    return values


def table_batches(
    session_id: str,
    trades: pa.Table,
    levels: pa.Table,
    symbols: tuple[str, ...] | None,
) -> list[TickBatch]:
    """One window's rows as Arrow tables (any order) as columnar batches, without a Python
    object per row: the same batches :func:`window_batches` builds from row tuples.

    ``trades``: columns symbol, ts, trade_id, price, qty, side (+1 / -1). ``levels``:
    one row per book level (symbol, ts, level, bid_price, bid_qty, ask_price, ask_qty);
    the rows of one (symbol, ts) form a snapshot, best level (lowest ``level``) first.
    """
    t_codes, t_names = _symbol_codes(trades.column("symbol"))
    b_codes, b_names = _symbol_codes(levels.column("symbol"))
    names = set(t_names) | set(b_names)
    wanted = names if symbols is None else names & set(symbols)
    trade_out = _trade_batches(session_id, trades, t_codes, t_names, wanted)
    book_out = _book_batches(session_id, levels, b_codes, b_names, wanted)
    out: list[TickBatch] = []
    for sym in sorted(wanted):
        if sym in trade_out:
            out.append(trade_out[sym])
        if sym in book_out:
            out.append(book_out[sym])
    return out


def _trade_batches(
    session_id: str,
    table: pa.Table,
    codes: npt.NDArray[np.int64],
    names: list[str],
    wanted: set[str],
) -> dict[str, TradeBatch]:
    if not len(codes):
        return {}
    ts = _column(table, "ts", np.int64)
    tid = _column(table, "trade_id", np.int64)
    order = np.lexsort((tid, ts, codes))
    sorted_codes = codes[order]
    price = _column(table, "price", np.float64)[order]
    qty = _column(table, "qty", np.float64)[order]
    side = _column(table, "side", np.int8)[order]
    ts, tid = ts[order], tid[order]
    out = {}
    for code, sym in enumerate(names):
        if sym not in wanted:
            continue
        lo, hi = np.searchsorted(sorted_codes, [code, code + 1])
        out[sym] = TradeBatch(
            session_id, sym, ts[lo:hi], tid[lo:hi], price[lo:hi], qty[lo:hi], side[lo:hi]
        )
    return out


def _book_batches(
    session_id: str,
    table: pa.Table,
    codes: npt.NDArray[np.int64],
    names: list[str],
    wanted: set[str],
) -> dict[str, BookBatch]:
    n = len(codes)
    if not n:
        return {}
    ts = _column(table, "ts", np.int64)
    order = np.lexsort((_column(table, "level", np.int64), ts, codes))
    codes, ts = codes[order], ts[order]
    first = np.ones(n, dtype=bool)  # the first level row of each snapshot
    first[1:] = (codes[1:] != codes[:-1]) | (ts[1:] != ts[:-1])
    starts = np.flatnonzero(first)
    snapshot = np.cumsum(first) - 1  # each row's snapshot number
    position = np.arange(n) - starts[snapshot]  # its place in the snapshot, best first
    sizes = np.diff(np.append(starts, n))
    snap_codes = codes[starts]
    values = {
        col: _column(table, col, np.float64)[order]
        for col in ("bid_price", "bid_qty", "ask_price", "ask_qty")
    }
    out = {}
    for code, sym in enumerate(names):
        if sym not in wanted:
            continue
        s_lo, s_hi = (int(x) for x in np.searchsorted(snap_codes, [code, code + 1]))
        r_lo, r_hi = int(starts[s_lo]), int(starts[s_hi]) if s_hi < len(starts) else n
        depth = int(sizes[s_lo:s_hi].max())
        rows = snapshot[r_lo:r_hi] - s_lo
        cols = position[r_lo:r_hi]
        shape = (s_hi - s_lo, depth)
        grids = [
            _grid(values[col][r_lo:r_hi], shape, rows, cols, pad)
            for col, pad in (
                ("bid_price", np.nan),
                ("bid_qty", 0.0),
                ("ask_price", np.nan),
                ("ask_qty", 0.0),
            )
        ]
        out[sym] = BookBatch(
            session_id, sym, ts[starts[s_lo:s_hi]], grids[0], grids[1], grids[2], grids[3]
        )
    return out


def _grid(
    values: Float64Array,
    shape: tuple[int, int],
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    pad: float,
) -> Float64Array:
    """``values`` placed at (rows, cols) of a ``shape`` array, the rest ``pad``."""
    filled = np.full(shape, pad)
    filled[rows, cols] = values
    return filled
