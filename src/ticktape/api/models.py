"""The JSON the API reads and writes.

Request models check only the *shape* of a request — JSON types, no unknown
fields (``extra="forbid"``), strict so ``"3"`` is not silently an integer. Every
rule about *values* (symbol format, limits, known kinds) lives once, in
:func:`ticktape.domain.validate_spec`, so the API, the legacy routes and any
other caller refuse the same inputs with the same messages.

Response models are built from domain objects by the ``*_out`` functions and
double as the client's typed view of the server's answers (``ticktape.cli.client``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ticktape.domain import (
    DEFAULT_BOOK_DEPTH,
    DEFAULT_BOOK_EVERY,
    DEFAULT_SIM_RATE_PER_S,
    Session,
    SessionEvent,
    SessionSpec,
    validate_spec,
)
from ticktape.quality import StreamQuality
from ticktape.ticks import BookSnapshot, Trade

_REQUEST = ConfigDict(extra="forbid", strict=True)


class SessionOptions(BaseModel):
    """Optional settings shared by the create request and the legacy ``config`` object."""

    model_config = _REQUEST

    exchange: str = Field(
        default="sim",
        description="'sim' (simulated), 'binance' (Binance USD-M futures, symbols like "
        "'BTCUSDT') or 'mexc' (MEXC futures, symbols like 'BTC_USDT')",
    )
    data_types: list[str] | None = Field(
        default=None, description="'trades' and/or 'orderbook'; default both"
    )
    duration: str | None = Field(
        default=None, description="'30s', '5m', '2h', '1d'; null runs until stopped"
    )
    book_depth: int = DEFAULT_BOOK_DEPTH
    seed: int = 0
    rate_per_s: float = Field(
        default=DEFAULT_SIM_RATE_PER_S,
        description="simulated trades per second per symbol; 0 = as fast as possible",
    )
    book_every: int = DEFAULT_BOOK_EVERY
    on_owner_loss: str = Field(default="fail", description="'fail' or 'resume'")

    def to_spec(self, *, kind: str, symbols: list[str]) -> SessionSpec:
        """Apply the domain's rules (raises :class:`ticktape.errors.ValidationError`)."""
        return validate_spec(
            kind=kind,
            symbols=symbols,
            exchange=self.exchange,
            data_types=self.data_types,
            duration=self.duration,
            book_depth=self.book_depth,
            seed=self.seed,
            rate_per_s=self.rate_per_s,
            book_every=self.book_every,
            on_owner_loss=self.on_owner_loss,
        )


class CreateSessionRequest(SessionOptions):
    """``POST /api/sessions``: only ``kind`` and ``symbols`` are required."""

    kind: str = Field(description="'collect' (today), 'backtest' or 'paper' (not yet)")
    symbols: list[str] = Field(description="e.g. ['BTC_USDT', 'ETH_USDT']; at most 100")

    def spec(self) -> SessionSpec:
        return self.to_spec(kind=self.kind, symbols=self.symbols)


class ConfigOut(BaseModel):
    duration_s: float | None
    book_depth: int
    seed: int
    rate_per_s: float
    book_every: int
    on_owner_loss: str
    ignored: dict[str, Any] = Field(
        default_factory=dict,
        description="fields of an original-platform request accepted but not acted on",
    )


class StatsOut(BaseModel):
    trades: int
    orderbook: int
    records_collected: int
    errors: int


class SessionOut(BaseModel):
    id: str
    kind: str
    status: str
    symbols: list[str]
    exchange: str
    data_types: list[str]
    config: ConfigOut
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    reason: str | None
    stats: StatsOut
    owner: str | None
    lease_expires_at: datetime | None
    version: int
    deleted: bool

    @property
    def is_terminal(self) -> bool:
        return self.status in {"stopped", "completed", "failed"}


class SessionListOut(BaseModel):
    sessions: list[SessionOut]
    next_cursor: str | None


class EventOut(BaseModel):
    seq: int
    at: datetime
    from_status: str | None
    to_status: str
    actor: str
    reason: str
    detail: str | None


class EventListOut(BaseModel):
    events: list[EventOut]


class TradeOut(BaseModel):
    symbol: str
    ts: datetime
    trade_id: int
    price: float
    qty: float
    side: str


class TradeListOut(BaseModel):
    trades: list[TradeOut]
    count: int
    next_cursor: str | None = Field(
        default=None, description="pass back as ``cursor`` for the next page; null: no more"
    )


class BookOut(BaseModel):
    symbol: str
    ts: datetime
    bids: list[tuple[float, float]] = Field(description="(price, qty), best first")
    asks: list[tuple[float, float]]


class BookListOut(BaseModel):
    orderbook: list[BookOut]
    count: int
    next_cursor: str | None = Field(
        default=None, description="pass back as ``cursor`` for the next page; null: no more"
    )


class GapOut(BaseModel):
    symbol: str
    data_type: str
    start: datetime = Field(description="exchange time of the last row before the gap")
    end: datetime = Field(description="exchange time of the first row after it")
    duration_s: float
    cause: str = Field(
        description="disconnect, stale, sequence_break, resync, overflow, refused or restart"
    )
    lost: int | None = Field(
        description="messages known lost (exchange sequence numbers); null: unknown"
    )
    detail: str


class LatencyOut(BaseModel):
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


class StreamQualityOut(BaseModel):
    symbol: str
    data_type: str
    rows: int
    first_ts: datetime | None
    last_ts: datetime | None
    rate_per_s: float = Field(description="rows per second of the session's wall time")
    gaps: int
    gap_total_s: float = Field(description="time inside at least one gap")
    gap_longest_s: float
    lost: int = Field(description="messages known lost, summed over the gaps")
    reconnects: int = Field(description="gaps caused by a disconnect or a stall")
    sequence_breaks: int
    out_of_order: int = Field(description="rows older than the row that arrived before them")
    latency: LatencyOut = Field(description="receive time minus exchange time")
    coverage_pct: float = Field(description="share of the session's wall time outside every gap")
    gap_rows: list[GapOut]


class QualityOut(BaseModel):
    session_id: str
    exchange: str
    start: datetime = Field(description="the session's start (its creation if it never ran)")
    end: datetime = Field(description="its end, or now while it runs")
    streams: list[StreamQualityOut]


class HealthOut(BaseModel):
    status: str = Field(description="'ok', or 'degraded' while the store is failing")
    instance: str
    store: str = Field(description="the store URL, credentials masked")
    store_ok: bool
    store_error: str | None = Field(description="why the store is failing, if it is")


class ReadyOut(BaseModel):
    status: Literal["ready"]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    """Every error the API answers has this body."""

    error: ErrorDetail


def session_out(session: Session) -> SessionOut:
    cfg = session.config
    return SessionOut(
        id=session.id,
        kind=session.kind.value,
        status=session.status.value,
        symbols=list(session.symbols),
        exchange=session.exchange,
        data_types=[dt.value for dt in session.data_types],
        config=ConfigOut(
            duration_s=cfg.duration_s,
            book_depth=cfg.book_depth,
            seed=cfg.seed,
            rate_per_s=cfg.rate_per_s,
            book_every=cfg.book_every,
            on_owner_loss=cfg.on_owner_loss.value,
            ignored=cfg.ignored_fields(),
        ),
        created_at=session.created_at,
        started_at=session.started_at,
        ended_at=session.ended_at,
        reason=session.reason,
        stats=StatsOut(**session.stats.to_dict()),
        owner=session.owner,
        lease_expires_at=session.lease_expires_at,
        version=session.version,
        deleted=session.deleted,
    )


def event_out(event: SessionEvent) -> EventOut:
    return EventOut(
        seq=event.seq,
        at=event.at,
        from_status=None if event.from_status is None else event.from_status.value,
        to_status=event.to_status.value,
        actor=event.actor,
        reason=event.reason,
        detail=event.detail,
    )


def trade_out(trade: Trade) -> TradeOut:
    return TradeOut(
        symbol=trade.symbol,
        ts=trade.ts,
        trade_id=trade.trade_id,
        price=trade.price,
        qty=trade.qty,
        side=trade.side,
    )


def book_out(book: BookSnapshot) -> BookOut:
    return BookOut(symbol=book.symbol, ts=book.ts, bids=list(book.bids), asks=list(book.asks))


def _dt_us(us: int) -> datetime:
    return datetime.fromtimestamp(0, UTC) + timedelta(microseconds=us)


def quality_out(
    session: Session, start: datetime, end: datetime, streams: list[StreamQuality]
) -> QualityOut:
    return QualityOut(
        session_id=session.id,
        exchange=session.exchange,
        start=start,
        end=end,
        streams=[
            StreamQualityOut(
                symbol=q.symbol,
                data_type=q.data_type.value,
                rows=q.rows,
                first_ts=None if q.first_ts_us is None else _dt_us(q.first_ts_us),
                last_ts=None if q.last_ts_us is None else _dt_us(q.last_ts_us),
                rate_per_s=q.rate_per_s,
                gaps=len(q.gaps),
                gap_total_s=q.gap_total_s,
                gap_longest_s=q.gap_longest_s,
                lost=q.lost_known,
                reconnects=q.reconnects,
                sequence_breaks=q.sequence_breaks,
                out_of_order=q.out_of_order,
                latency=LatencyOut(
                    p50_ms=q.latency_p50_ms, p99_ms=q.latency_p99_ms, max_ms=q.latency_max_ms
                ),
                coverage_pct=q.coverage_pct,
                gap_rows=[
                    GapOut(
                        symbol=g.symbol,
                        data_type=g.data_type.value,
                        start=_dt_us(g.start_us),
                        end=_dt_us(g.end_us),
                        duration_s=g.duration_s,
                        cause=g.cause.value,
                        lost=g.lost,
                        detail=g.detail,
                    )
                    for g in q.gaps
                ],
            )
            for q in streams
        ],
    )
