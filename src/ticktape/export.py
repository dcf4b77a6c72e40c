"""A session's data as CSV or Parquet, streamed page by page in constant memory.

The rows come from the store in pages of at most ``MAX_DATA_LIMIT`` (keyset
paging, :attr:`~ticktape.store.base.TickQuery.after`); each page is encoded and
handed on at once — a CSV chunk, or one Parquet row group — so memory holds one
page whatever the session's size.

Columns
-------
trades: ``symbol``, ``ts`` (exchange time; Parquet: ``timestamp[us, tz=UTC]``,
CSV: ISO 8601), ``trade_id`` (int64), ``price``, ``qty`` (float64, as stored),
``side`` (``buy`` / ``sell``), ``recv`` (the local receive time, typed like
``ts``; empty / null for a row stored without one, as the simulated exchange's).

orderbook: ``symbol``, ``ts``, ``recv``, then per level ``i`` = 1..depth (best first)
``bid_price_i``, ``bid_qty_i``, ``ask_price_i``, ``ask_qty_i`` (float64; empty /
null where the book was thinner than the depth).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING

from ticktape.store.base import MAX_DATA_LIMIT, TickQuery
from ticktape.store.rules import to_us
from ticktape.ticks import BookSnapshot, Trade

PAGE_ROWS = MAX_DATA_LIMIT


class ExportFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"


MEDIA_TYPES = {ExportFormat.CSV: "text/csv", ExportFormat.PARQUET: "application/vnd.apache.parquet"}
TRADE_COLUMNS = ["symbol", "ts", "trade_id", "price", "qty", "side", "recv"]

if TYPE_CHECKING:
    import pyarrow as pa


def trade_schema() -> pa.Schema:
    import pyarrow as pa  # imported on first use: the CLI and the server start without it

    return pa.schema(
        [
            ("symbol", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("trade_id", pa.int64()),
            ("price", pa.float64()),
            ("qty", pa.float64()),
            ("side", pa.string()),
            ("recv", pa.timestamp("us", tz="UTC")),
        ]
    )


def book_columns(depth: int) -> list[str]:
    return [
        f"{side}_{what}_{i}"
        for i in range(1, depth + 1)
        for side in ("bid", "ask")
        for what in ("price", "qty")
    ]


def book_schema(depth: int) -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("symbol", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("recv", pa.timestamp("us", tz="UTC")),
        ]
        + [(name, pa.float64()) for name in book_columns(depth)]
    )


async def trade_pages(
    read: Callable[[TickQuery], Awaitable[list[Trade]]], query: TickQuery
) -> AsyncIterator[list[Trade]]:
    after = None
    while True:
        page = await read(TickQuery(query.session_id, query.symbol, limit=PAGE_ROWS, after=after))
        if page:
            yield page
        if len(page) < PAGE_ROWS:
            return
        last = page[-1]
        after = (to_us(last.ts), last.trade_id, last.symbol)


async def book_pages(
    read: Callable[[TickQuery], Awaitable[list[BookSnapshot]]], query: TickQuery
) -> AsyncIterator[list[BookSnapshot]]:
    after = None
    while True:
        page = await read(TickQuery(query.session_id, query.symbol, limit=PAGE_ROWS, after=after))
        if page:
            yield page
        if len(page) < PAGE_ROWS:
            return
        after = (to_us(page[-1].ts), 0, page[-1].symbol)


def _trade_columns(page: list[Trade]) -> dict[str, list[object]]:
    return {
        "symbol": [t.symbol for t in page],
        "ts": [t.ts for t in page],
        "trade_id": [t.trade_id for t in page],
        "price": [t.price for t in page],
        "qty": [t.qty for t in page],
        "side": [t.side for t in page],
        "recv": [t.recv for t in page],
    }


def _book_columns(page: list[BookSnapshot], depth: int) -> dict[str, list[object]]:
    cols: dict[str, list[object]] = {
        "symbol": [b.symbol for b in page],
        "ts": [b.ts for b in page],
        "recv": [b.recv for b in page],
    }
    for i in range(depth):
        n = i + 1
        cols[f"bid_price_{n}"] = [b.bids[i][0] if i < len(b.bids) else None for b in page]
        cols[f"bid_qty_{n}"] = [b.bids[i][1] if i < len(b.bids) else None for b in page]
        cols[f"ask_price_{n}"] = [b.asks[i][0] if i < len(b.asks) else None for b in page]
        cols[f"ask_qty_{n}"] = [b.asks[i][1] if i < len(b.asks) else None for b in page]
    return cols


class _Sink(io.RawIOBase):
    """A write-only file that keeps what was written until it is taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        chunk = bytes(data)  # type: ignore[call-overload]
        self._parts.append(chunk)
        self._pos += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


async def encode(
    pages: AsyncIterator[list[Trade]] | AsyncIterator[list[BookSnapshot]],
    fmt: ExportFormat,
    *,
    depth: int | None = None,
) -> AsyncIterator[bytes]:
    """The bytes of an export, one chunk per page; ``depth`` set for order books."""
    names = TRADE_COLUMNS if depth is None else ["symbol", "ts", "recv", *book_columns(depth)]

    def columns(page: list[Trade] | list[BookSnapshot]) -> dict[str, list[object]]:
        if depth is None:
            return _trade_columns(page)  # type: ignore[arg-type]
        return _book_columns(page, depth)  # type: ignore[arg-type]

    if fmt is ExportFormat.CSV:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(names)
        yield buffer.getvalue().encode()
        async for page in pages:
            buffer.seek(0)
            buffer.truncate()
            cols = columns(page)
            cols["ts"] = [ts.isoformat() for ts in cols["ts"]]  # type: ignore[attr-defined]
            cols["recv"] = [None if r is None else r.isoformat() for r in cols["recv"]]  # type: ignore[attr-defined]
            for row in zip(*cols.values(), strict=True):
                writer.writerow(["" if v is None else v for v in row])
            yield buffer.getvalue().encode()
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = trade_schema() if depth is None else book_schema(depth)
    sink = _Sink()
    parquet = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        async for page in pages:
            parquet.write_table(pa.Table.from_pydict(columns(page), schema=schema))
            chunk = sink.take()
            if chunk:
                yield chunk
    finally:
        parquet.close()
    yield sink.take()
