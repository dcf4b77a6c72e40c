"""The ILP frames of a grouped tick write are what QuestDB stores, row for row.

One write carries a mixed group — several sessions and symbols, trades with and without
receive times, order books of different depths — so that every branch of
``trades_frame`` / ``book_frame`` builds one frame; the rows read back over the
PostgreSQL wire must be exactly the frames' rows (values, fences, nulls), no more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from tests.conftest import Run
from ticktape.store import open_store
from ticktape.store.questdb import QuestDBAddress, book_frame, trades_frame
from ticktape.ticks import BookBatch, TickBatch, TradeBatch

pytestmark = pytest.mark.questdb

T0_US = 1_700_000_000_000_000


def _trades(sid: str, symbol: str, n: int, first_id: int, recv: bool, seq: int) -> TradeBatch:
    ts = T0_US + first_id * 1000 + np.arange(n, dtype=np.int64) * 1000
    return TradeBatch(
        sid,
        symbol,
        ts,
        np.arange(first_id, first_id + n, dtype=np.int64),
        np.round(100 + np.arange(n) * 0.37, 2),
        np.round(0.001 + np.arange(n) * 0.013, 6),
        np.where(np.arange(n) % 3 == 0, 1, -1).astype(np.int8),
        seq=seq,
        recv_us=ts + 250 if recv else None,
    )


def _books(
    sid: str, symbol: str, n: int, depth: int, at_us: int, recv: bool, seq: int
) -> BookBatch:
    ts = at_us + np.arange(n, dtype=np.int64) * 10_000
    grid = np.arange(n * depth, dtype=np.float64).reshape(n, depth)
    return BookBatch(
        sid,
        symbol,
        ts,
        100 - grid * 0.01,
        1 + grid * 0.5,
        100.01 + grid * 0.01,
        2 + grid * 0.25,
        seq=seq,
        recv_us=ts + 500 if recv else None,
    )


def _naive(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, UTC).replace(tzinfo=None)


def _frame_rows(frame: Any, columns: list[str]) -> list[tuple[Any, ...]]:
    """A frame's rows as the PostgreSQL wire returns them (naive UTC times, None for null)."""
    rows = []
    for record in frame[columns].itertuples(index=False):
        row = []
        for name, value in zip(columns, record, strict=True):
            if name == "ts":
                row.append(value.to_pydatetime().replace(tzinfo=None))
            elif name == "recv_us":
                row.append(None if value is None or value is pd.NA or _isnan(value) else int(value))
            elif name in ("session_id", "symbol", "side"):
                row.append(str(value))
            else:
                row.append(value.item() if hasattr(value, "item") else value)
        rows.append(tuple(row))
    return sorted(rows, key=repr)


def _reference(batches: list[TickBatch], tenures: dict[str, int]) -> tuple[list[Any], list[Any]]:
    """The rows each batch stands for, written out one by one: trades, then book levels
    (the columns of ``TRADE_COLUMNS`` / ``BOOK_COLUMNS``, then the tenure)."""
    trades, levels = [], []
    for b in batches:
        recv = [None] * len(b) if b.recv_us is None else [int(r) for r in b.recv_us]
        tenure = tenures[b.session_id]
        if isinstance(b, TradeBatch):
            for i in range(len(b)):
                side = "buy" if b.side[i] > 0 else "sell"
                trades.append(
                    (
                        b.session_id,
                        b.symbol,
                        int(b.trade_id[i]),
                        float(b.price[i]),
                        float(b.qty[i]),
                        side,
                        _naive(int(b.ts_us[i])),
                        b.seq,
                        recv[i],
                        tenure,
                    )
                )
        else:
            for i in range(len(b)):
                for level in range(b.depth):
                    sides = (b.bid_price, b.bid_qty, b.ask_price, b.ask_qty)
                    levels.append(
                        (
                            b.session_id,
                            b.symbol,
                            level,
                            *tuple(float(side[i, level]) for side in sides),
                            _naive(int(b.ts_us[i])),
                            b.seq,
                            recv[i],
                            tenure,
                        )
                    )
    return sorted(trades, key=repr), sorted(levels, key=repr)


TRADE_COLUMNS = ["session_id", "symbol", "trade_id", "price", "qty", "side", "ts"]
TRADE_COLUMNS += ["batch_seq", "recv_us", "tenure"]
BOOK_COLUMNS = ["session_id", "symbol", "level", "bid_price", "bid_qty", "ask_price"]
BOOK_COLUMNS += ["ask_qty", "ts", "batch_seq", "recv_us", "tenure"]


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def test_a_mixed_groups_frames_are_the_rows_read_back(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    store = open_store(qdb_url)
    sessions = [make_session(owner="me", symbols=("BTC_USDT", "ETH_USDT")) for _ in range(3)]
    a, b, c = (s.id for s in sessions)
    batches: list[TickBatch] = [
        _trades(a, "BTC_USDT", 5, 1, recv=True, seq=0),
        _trades(a, "ETH_USDT", 3, 1, recv=False, seq=0),  # no receive times: nulls
        _trades(b, "BTC_USDT", 7, 1, recv=True, seq=4),
        _trades(c, "ETH_USDT", 1, 9, recv=True, seq=2),
        _books(a, "BTC_USDT", 2, 3, T0_US + 1, recv=True, seq=0),
        _books(b, "BTC_USDT", 3, 2, T0_US + 2, recv=False, seq=4),  # another depth
        _books(b, "ETH_USDT", 1, 5, T0_US + 3, recv=True, seq=4),
        _books(c, "BTC_USDT", 2, 3, T0_US + 50_000, recv=True, seq=2),
    ]
    trades = [x for x in batches if isinstance(x, TradeBatch)]
    books = [x for x in batches if isinstance(x, BookBatch)]
    address = QuestDBAddress.from_url(qdb_url)

    async def scenario() -> None:
        await store.open()
        try:
            for s in sessions:
                await store.sessions.create_session(s, actor="t")
            result = await store.ticks.write(batches, owner="me")  # one write: one group
            assert (result.counts.trades, result.counts.orderbook) == (16, 8)
            await store.ticks.wait_visible(30)
        finally:
            await store.close()

    run(scenario())
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        tenures = {
            str(sid): int(t)
            for sid, t in conn.execute(
                f"SELECT id, tenure FROM {address.prefix}session_log LATEST ON ts PARTITION BY id"
            ).fetchall()
        }
        stored = [
            sorted([tuple(str(v) if isinstance(v, str) else v for v in r) for r in rows], key=repr)
            for rows in (
                conn.execute(
                    f"SELECT {', '.join(TRADE_COLUMNS)} FROM {address.prefix}trades"
                ).fetchall(),
                conn.execute(
                    f"SELECT {', '.join(BOOK_COLUMNS)} FROM {address.prefix}orderbook"
                ).fetchall(),
            )
        ]
    want_trades, want_levels = _reference(batches, tenures)
    assert len(want_trades) == 16 and len(want_levels) == 2 * 3 + 3 * 2 + 1 * 5 + 2 * 3
    assert any(r[-2] is None for r in want_trades) and any(r[-2] is None for r in want_levels)
    # the frames hold exactly those rows ...
    assert _frame_rows(trades_frame(trades, tenures), TRADE_COLUMNS) == want_trades
    assert _frame_rows(book_frame(books, tenures), BOOK_COLUMNS) == want_levels
    # ... and so does QuestDB, after the grouped send
    assert stored == [want_trades, want_levels]
