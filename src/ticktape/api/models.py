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
    SessionKind,
    SessionSpec,
    SessionStatus,
    utcnow,
    validate_spec,
)
from ticktape.errors import ValidationError
from ticktape.quality import StreamQuality
from ticktape.ticks import BookSnapshot, Trade

TICKS_TOTAL = "ticks_total"  # as ticktape.service.TICKS_TOTAL

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


#: Request fields of backtest (and paper) sessions only; a collect request with one is 422.
STRATEGY_FIELDS = (
    "source_session",
    "strategy",
    "params",
    "form",
    "speed",
    "start",
    "end",
    "initial_cash",
    "fees",
    "latency_ms",
    "equity_interval_s",
    "partial_passive_fills",
)
#: Fields that shape a recording; a backtest replays one, so they are 422 there.
COLLECT_FIELDS = ("exchange", "data_types", "duration", "book_depth", "rate_per_s", "book_every")


class CreateSessionRequest(SessionOptions):
    """``POST /api/sessions``.

    collect: ``kind`` and ``symbols`` required. backtest: ``kind``, ``source_session``
    and ``strategy`` required; ``symbols`` (a subset of the source's) optional.
    Values are checked by the domain (collect) or ``ticktape.strategies.BacktestSpec``
    and the strategy's parameter schema (backtest): 422 naming the field.
    """

    kind: str = Field(description="'collect', 'backtest' or 'paper' (not yet)")
    symbols: list[str] | None = Field(
        default=None,
        description="e.g. ['BTC_USDT', 'ETH_USDT']; at most 100. Required for collect; "
        "for backtest a subset of the source's (default: all of them)",
    )
    source_session: str | None = Field(
        default=None, description="backtest: the finished collect or paper session to replay"
    )
    strategy: str | None = Field(
        default=None, description="backtest: a registered strategy (GET /api/strategies)"
    )
    params: dict[str, Any] | None = Field(
        default=None, description="backtest: the strategy's parameters, checked by its schema"
    )
    form: str | None = Field(
        default=None, description="backtest: 'event' or 'columnar' if the strategy has both"
    )
    speed: float | None = Field(
        default=None,
        description="backtest: 0 = as fast as possible (default), N = N x exchange time",
    )
    start: str | None = Field(default=None, description="backtest: replay from (ISO 8601)")
    end: str | None = Field(default=None, description="backtest: replay until (exclusive)")
    initial_cash: float | None = Field(default=None, description="backtest: quote currency")
    fees: dict[str, list[float]] | None = Field(
        default=None, description="backtest: exchange -> [maker, taker] fee rates"
    )
    latency_ms: float | None = Field(
        default=None, description="backtest: order entry and cancel latency (default 20)"
    )
    equity_interval_s: float | None = Field(
        default=None, description="backtest: equity curve sampling interval (default 60)"
    )
    partial_passive_fills: bool | None = None

    def spec(self) -> SessionSpec:
        """The collect fields as a spec (kind collect; a paper session's recording too)."""
        given = [f for f in STRATEGY_FIELDS if getattr(self, f) is not None]
        if given and self.kind == "collect":
            raise ValidationError(
                f"{given[0]} applies to backtest sessions, not to collect sessions", field=given[0]
            )
        if self.symbols is None:
            raise ValidationError("symbols is required", field="symbols")
        return self.to_spec(kind=self.kind, symbols=self.symbols)

    def backtest_fields(self) -> dict[str, Any]:
        """The fields ``ticktape.strategies.validate_backtest`` checks (422 on collect ones)."""
        for name in COLLECT_FIELDS:
            if name in self.model_fields_set:
                raise ValidationError(
                    f"{name} applies to collect sessions: a backtest replays its "
                    "source session as recorded",
                    field=name,
                )
        data: dict[str, Any] = {"seed": self.seed}
        for name in ("symbols", *STRATEGY_FIELDS):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    def paper_fields(self) -> dict[str, Any]:
        """The fields ``ticktape.strategies.validate_paper`` checks (422 on backtest ones)."""
        for name in ("source_session", "speed", "start", "end"):
            if getattr(self, name) is not None:
                raise ValidationError(
                    f"{name} applies to backtest sessions: a paper session trades a live feed",
                    field=name,
                )
        if self.symbols is None:
            raise ValidationError("symbols is required", field="symbols")
        data: dict[str, Any] = {"seed": self.seed, "symbols": self.symbols}
        data["exchange"] = self.exchange
        for name in STRATEGY_FIELDS:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


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
    strategy_run: dict[str, Any] | None = Field(
        default=None,
        description="backtest: the validated request (strategy, params, fill model, source)",
    )


class StatsOut(BaseModel):
    trades: int = Field(description="collect: trades stored; backtest: trades replayed")
    orderbook: int = Field(description="collect: snapshots stored; backtest: replayed")
    records_collected: int
    errors: int
    ticks_total: int | None = Field(
        default=None,
        description="backtest: ticks to replay, of the chosen symbols and range (null: none)",
    )
    progress: float | None = Field(default=None, description="backtest: replayed / total")
    eta_s: float | None = Field(
        default=None, description="backtest: seconds left at the rate so far (running only)"
    )


class ResultSummaryOut(BaseModel):
    session_id: str
    status: str = Field(
        description="how the run ended: completed, stopped, strategy_error; partial while it "
        "runs (or if it never ended): the rows stored so far"
    )
    hash: str = Field(description="SHA-256 over the orders then the fills (docs/strategies.md)")
    summary: dict[str, Any] = Field(
        description="pnl, return, sharpe, sortino, max_drawdown, fees, turnover, trade_count, "
        "win_rate, max_position, exposure_time, ..."
    )
    orders: int
    fills: int
    equity: int
    written_at: datetime


class ResultRowsOut(BaseModel):
    rows: list[dict[str, Any]]
    next_cursor: str | None = Field(description="pass back as cursor for the next page")


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
    recv: datetime | None = Field(
        default=None, description="local receive time (null where the feed gave none)"
    )


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
    recv: datetime | None = Field(
        default=None, description="local receive time (null where the feed gave none)"
    )


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
    duplicates_dropped: int = Field(
        default=0, description="rows the feed dropped as already seen (trades, by exchange id)"
    )
    gap_rows: list[GapOut]


class QualityOut(BaseModel):
    session_id: str
    exchange: str
    start: datetime = Field(description="the session's start (its creation if it never ran)")
    end: datetime = Field(description="its end, or now while it runs")
    streams: list[StreamQualityOut]
    malformed: int = Field(
        default=0, description="messages the feed could not read (most name no symbol)"
    )
    malformed_by_kind: dict[str, int] = Field(
        default_factory=dict, description="the malformed messages per kind"
    )


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
            strategy_run=_public_run(cfg.strategy_fields()),
        ),
        created_at=session.created_at,
        started_at=session.started_at,
        ended_at=session.ended_at,
        reason=session.reason,
        stats=_stats_out(session),
        owner=session.owner,
        lease_expires_at=session.lease_expires_at,
        version=session.version,
        deleted=session.deleted,
    )


def _public_run(fields: dict[str, object] | None) -> dict[str, object] | None:
    if fields is None:
        return None
    return {k: v for k, v in fields.items() if k != TICKS_TOTAL}


def _stats_out(session: Session) -> StatsOut:
    out = StatsOut(**session.stats.to_dict())
    fields = session.config.strategy_fields()
    if session.kind is not SessionKind.BACKTEST or fields is None:
        return out
    total = fields.get(TICKS_TOTAL)
    if not isinstance(total, int) or total <= 0:
        return out
    done = session.stats.records_collected
    out.ticks_total = total
    out.progress = min(1.0, done / total)
    if session.status is SessionStatus.RUNNING and session.started_at is not None and done:
        elapsed = (utcnow() - session.started_at).total_seconds()
        out.eta_s = round(max(0.0, elapsed * (total - done) / done), 3)
    return out


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
        recv=trade.recv,
    )


def book_out(book: BookSnapshot) -> BookOut:
    return BookOut(
        symbol=book.symbol, ts=book.ts, bids=list(book.bids), asks=list(book.asks), recv=book.recv
    )


def _dt_us(us: int) -> datetime:
    return datetime.fromtimestamp(0, UTC) + timedelta(microseconds=us)


def quality_out(
    session: Session,
    start: datetime,
    end: datetime,
    streams: list[StreamQuality],
    malformed: dict[str, int],
) -> QualityOut:
    return QualityOut(
        session_id=session.id,
        exchange=session.exchange,
        start=start,
        end=end,
        malformed=sum(malformed.values()),
        malformed_by_kind=malformed,
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
                duplicates_dropped=q.duplicates_dropped,
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
