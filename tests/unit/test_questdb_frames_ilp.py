"""The ILP a grouped send's frames serialise to is the ILP of their rows written one by one.

``trades_frame`` / ``book_frame`` build columns in whatever pandas types serialise
cheapest; what QuestDB receives must not depend on them. Every row of a mixed group
(several sessions and symbols, trades with and without receive times, order books of
two depths, with and without send marks) is written here with the client's ``row()``,
from the batches themselves: symbols as symbols, integers as integers, NULLs left out,
the designated timestamp in microseconds — and the two buffers must be equal byte for
byte, in both ILP protocol versions (text and binary doubles).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from questdb import TimestampMicros

from tests.integration.test_questdb_frames import T0_US, _books, _trades
from ticktape.store.questdb import book_frame, send_marks, serialise_frame, trades_frame
from ticktape.ticks import BookBatch, TickBatch, TradeBatch


def _buffer(version: int) -> Any:
    with warnings.catch_warnings():  # the client's Buffer lives at its legacy import path
        warnings.simplefilter("ignore", DeprecationWarning)
        from questdb.ingress import Buffer
    return Buffer(protocol_version=version)


A, B, C = "aaaaaaaa-0000-4000-8000-000000000001", "b-2", "c-3"
BATCHES: list[TickBatch] = [
    _trades(A, "BTC_USDT", 5, 1, recv=True, seq=0),
    _trades(A, "ETH_USDT", 3, 1, recv=False, seq=0),  # no receive times: NULLs
    _trades(B, "BTC_USDT", 7, 1, recv=True, seq=4),
    _trades(A, "BTC_USDT", 2, 6, recv=True, seq=1),  # A again, after B
    _trades(C, "ETH_USDT", 1, 9, recv=True, seq=2),
    _books(A, "BTC_USDT", 2, 3, T0_US + 1, recv=True, seq=0),
    _books(B, "BTC_USDT", 3, 3, T0_US + 2, recv=False, seq=4),
    _books(C, "ETH_USDT", 1, 3, T0_US + 3, recv=True, seq=2),
]
TENURES = {A: 3, B: 1, C: 7}


def _split() -> tuple[list[TradeBatch], list[BookBatch]]:
    return (
        [b for b in BATCHES if isinstance(b, TradeBatch)],
        [b for b in BATCHES if isinstance(b, BookBatch)],
    )


def _reference(
    buffer: Any, trades: list[TradeBatch], books: list[BookBatch], marks: dict[str, Any] | None
) -> None:
    """Every row, one ``row()`` each, in the frames' row and column order."""
    for table, batches in (("tt_trades", trades), ("tt_orderbook", books)):
        marked: set[str] = set()  # sessions whose first row in this table carried the marks
        for b in batches:
            mark = marks[b.session_id] if marks is not None else None
            for i in range(len(b)):
                levels = range(b.depth) if isinstance(b, BookBatch) else [None]
                for level in levels:
                    symbols = {"session_id": b.session_id, "symbol": b.symbol}
                    columns: dict[str, Any] = {}
                    if isinstance(b, TradeBatch):
                        symbols["side"] = "buy" if b.side[i] > 0 else "sell"
                        columns |= {
                            "trade_id": int(b.trade_id[i]),
                            "price": float(b.price[i]),
                            "qty": float(b.qty[i]),
                        }
                    else:
                        assert level is not None
                        columns["level"] = level
                        for side in ("bid_price", "bid_qty", "ask_price", "ask_qty"):
                            columns[side] = float(getattr(b, side)[i, level])
                    columns |= {"tenure": TENURES[b.session_id], "batch_seq": b.seq}
                    if mark is not None:
                        columns["send_id"] = mark.send_id
                        first = b.session_id not in marked
                        marked.add(b.session_id)
                        for name in ("first", "trades", "books"):
                            columns[f"send_{name}"] = getattr(mark, name) if first else None
                    recv = b.recv_us
                    columns["recv_us"] = None if recv is None else int(recv[i])
                    buffer.row(
                        table, symbols=symbols, columns=columns, at=TimestampMicros(int(b.ts_us[i]))
                    )


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("with_marks", [True, False])
def test_the_frames_ilp_is_their_rows_written_one_by_one(version: int, with_marks: bool) -> None:
    trades, books = _split()
    marks = send_marks(1_764_000_000_000_000_001, trades, books) if with_marks else None
    framed = _buffer(version)
    serialise_frame(framed, "tt_trades", trades_frame(trades, TENURES, marks))
    serialise_frame(framed, "tt_orderbook", book_frame(books, TENURES, marks))
    rows = _buffer(version)
    _reference(rows, trades, books, marks)
    assert bytes(framed).decode("latin-1").splitlines() == (
        bytes(rows).decode("latin-1").splitlines()
    )
    assert len(framed) > 0


def test_books_of_two_depths_serialise_as_their_rows() -> None:
    """The frame's other branch: snapshots whose depths differ in one send."""
    trades, books = _split()
    books = [*books, _books(B, "ETH_USDT", 2, 5, T0_US + 4, recv=True, seq=5)]
    marks = send_marks(9, trades, books)
    framed = _buffer(2)
    serialise_frame(framed, "tt_orderbook", book_frame(books, TENURES, marks))
    rows = _buffer(2)
    _reference(rows, [], books, marks)
    assert bytes(framed).decode("latin-1").splitlines() == (
        bytes(rows).decode("latin-1").splitlines()
    )


@pytest.mark.parametrize("with_marks", [True, False])
def test_no_frame_column_makes_the_client_hold_the_gil(with_marks: bool) -> None:
    """The client serialises a frame without the GIL unless a column holds Python objects
    (questdb 6.0.0: a column of ``str`` objects is read under the GIL, row by row), and the
    send thread serialises while the event loop runs: no column of dtype ``object``."""
    trades, books = _split()
    books = [*books, _books(B, "ETH_USDT", 2, 5, T0_US + 4, recv=False, seq=5)]
    marks = send_marks(9, trades, books) if with_marks else None
    for frame in (trades_frame(trades, TENURES, marks), book_frame(books, TENURES, marks)):
        assert [c for c in frame.columns if frame[c].dtype == object] == []
        assert frame.shape[0] > 0
