"""Routes the dashboard draws from: a session's price chart and the exchanges a collect
session may use.

``GET /api/sessions/{id}/chart`` sums one symbol's recorded trades into at most
``points`` time buckets *in the store* (SQL ``GROUP BY`` on SQLite, ``SAMPLE BY`` on
QuestDB), so a long session's chart costs a few hundred rows, whatever it recorded.
The bucket width is the smallest of :data:`WIDTHS_US` that covers the range in
``points`` buckets; every width divides a day, so bucket edges are round UTC times.
Zooming in asks again with a narrower ``start``/``end`` and gets finer buckets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ticktape.api.routes import ERRORS, Service
from ticktape.domain import validate_spec
from ticktape.errors import TicktapeError, ValidationError
from ticktape.store.base import MAX_DATA_LIMIT, TickQuery
from ticktape.store.rules import to_us

DEFAULT_POINTS: Final = 600
MAX_POINTS: Final = 5_000
_S = 1_000_000
WIDTHS_US: Final = (
    *(1, 2, 5, 10, 20, 50, 100, 200, 500),
    *(1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000),
    *(_S, 2 * _S, 5 * _S, 10 * _S, 15 * _S, 30 * _S),
    *(60 * _S, 120 * _S, 300 * _S, 600 * _S, 900 * _S, 1800 * _S),
    *(3600 * _S, 7200 * _S, 10800 * _S, 14400 * _S, 21600 * _S, 43200 * _S, 86400 * _S),
)
# Exchanges a collect session may name, asked of the domain's own rule (validate_spec),
# so the list follows what the server accepts.
EXCHANGE_CANDIDATES: Final = ("sim", "binance", "mexc")


class BucketOut(BaseModel):
    t_us: int = Field(description="bucket start, microseconds since the Unix epoch (UTC)")
    open: float
    high: float
    low: float
    close: float
    count: int = Field(description="trades in the bucket")
    volume: float = Field(description="sum of the trades' quantities")


class ChartOut(BaseModel):
    session_id: str
    symbol: str
    start: datetime | None = Field(description="inclusive; null when there are no trades")
    end: datetime | None = Field(description="exclusive")
    width_us: int = Field(description="bucket width in microseconds")
    buckets: list[BucketOut] = Field(description="buckets with trades, oldest first")
    trades: int = Field(description="trades summed in the buckets")
    truncated: bool = Field(
        description="true when the range needs more than `points` buckets even a day wide "
        "(the first `points` are returned)"
    )


class ExchangesOut(BaseModel):
    exchanges: list[str] = Field(description="exchanges a collect session may use here")


def _utc(ts: datetime | None) -> datetime | None:
    """Times without an offset are taken as UTC (as the other range routes do)."""
    return ts if ts is None or ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def width_for(start_us: int, end_us: int, points: int) -> int:
    """The smallest width whose epoch-aligned buckets cover ``[start, end)`` in ``points``."""
    for width in WIDTHS_US:
        if (end_us - 1) // width - start_us // width + 1 <= points:
            return width
    return WIDTHS_US[-1]


router = APIRouter(tags=["dashboard"], responses=ERRORS)


@router.get("/api/sessions/{session_id}/chart", response_model=ChartOut)
async def session_chart(
    session_id: str,
    service: Service,
    symbol: Annotated[str | None, Query(description="default: the session's first")] = None,
    start: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    end: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    points: Annotated[int, Query(ge=1, le=MAX_POINTS)] = DEFAULT_POINTS,
) -> ChartOut:
    """One symbol's trades as at most ``points`` OHLC buckets, summed by the store.

    Without ``start``/``end`` the range is the symbol's first to last trade.
    """
    session = await service.get(session_id)
    chosen = symbol or session.symbols[0]
    if chosen not in session.symbols:
        raise ValidationError(
            f"{chosen!r} is not one of the session's symbols ({', '.join(session.symbols)})",
            field="symbol",
        )
    asked_start, asked_end = _utc(start), _utc(end)
    start, end = asked_start, asked_end
    if start is None or end is None:
        span = await service.trade_span(session_id, chosen)
        if span is None:  # nothing recorded: nothing to draw
            return ChartOut(
                session_id=session_id,
                symbol=chosen,
                start=start,
                end=end,
                width_us=WIDTHS_US[0],
                buckets=[],
                trades=0,
                truncated=False,
            )
        start = start or span[0]
        end = end or span[1] + timedelta(microseconds=1)
    if end <= start:
        raise ValidationError("end must be after start", field="end")
    width = width_for(to_us(start), to_us(end), points)
    needed = (to_us(end) - 1) // width - to_us(start) // width + 1
    # The store is asked for the range as the client gave it: an open end lets SQLite
    # read the symbol's rows in key order instead of through the time index (twice
    # as fast for a whole session); the span only chose the width.
    query = TickQuery(session_id, symbol=chosen, start=asked_start, end=asked_end, limit=points)
    buckets = await service.trade_buckets(query, width)
    return ChartOut(
        session_id=session_id,
        symbol=chosen,
        start=start,
        end=end,
        width_us=width,
        buckets=[
            BucketOut(
                t_us=to_us(b.start),
                open=b.open,
                high=b.high,
                low=b.low,
                close=b.close,
                count=b.count,
                volume=b.volume,
            )
            for b in buckets
        ],
        trades=sum(b.count for b in buckets),
        truncated=needed > points,
    )


@router.get("/api/exchanges", response_model=ExchangesOut)
async def exchanges() -> ExchangesOut:
    """The exchanges ``POST /api/sessions`` accepts for a collect session on this server."""
    usable = []
    for name in EXCHANGE_CANDIDATES:
        try:
            validate_spec(kind="collect", symbols=["BTC_USDT"], exchange=name)
        except TicktapeError:
            continue
        usable.append(name)
    return ExchangesOut(exchanges=usable)


assert MAX_POINTS <= MAX_DATA_LIMIT
