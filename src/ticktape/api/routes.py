"""``/api/sessions``: thin handlers over :class:`~ticktape.service.SessionService`.

Handlers parse the request, call the service once, and shape the answer; they
keep nothing between requests (DESIGN.md, invariant 1). Errors are raised as
ticktape errors and rendered by :mod:`ticktape.api.errors`.

Idempotency: ``POST /api/sessions`` with an ``Idempotency-Key`` header already
used for the same request returns the session created by the first request —
same id, its current state — with status 201 like the first time; nothing new is
created. The key with a different request is 409 ``idempotency_key_reused``; a
key older than 24 hours has expired (422).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ticktape.api.auth import COOKIE_NAME, CSRF_HEADER, Authenticator, check_access
from ticktape.api.limits import CreateRateLimiter
from ticktape.api.models import (
    STRATEGY_FIELDS,
    BookListOut,
    CreateSessionRequest,
    ErrorOut,
    EventListOut,
    QualityOut,
    ResultRowsOut,
    ResultSummaryOut,
    SessionListOut,
    SessionOut,
    TradeListOut,
    book_out,
    event_out,
    quality_out,
    session_out,
    trade_out,
)
from ticktape.config import STOP_WAIT_TIMEOUT_S, Settings
from ticktape.domain import DataType, OwnerLossPolicy, SessionKind, SessionStatus
from ticktape.errors import ResultsNotFound, ValidationError, clip
from ticktape.export import MEDIA_TYPES, ExportFormat
from ticktape.service import SessionService, paper_spec
from ticktape.store.base import (
    DEFAULT_DATA_LIMIT,
    DEFAULT_LIST_LIMIT,
    MAX_DATA_LIMIT,
    MAX_LIST_LIMIT,
    ResultTable,
    SessionQuery,
    TickQuery,
)
from ticktape.store.rules import decode_tick_cursor, encode_tick_cursor, to_us
from ticktape.strategies import StrategyRegistry, validate_backtest, validate_paper

MAX_STOP_WAIT_S = 300.0  # longest a client may hold a "stop and wait" request open
MAX_IDEMPOTENCY_KEY_CHARS = 200

_bearer = HTTPBearer(auto_error=False, description="required on POST/DELETE when a token is set")

# The dependencies are ``async def`` although they do not await: FastAPI runs a plain
# ``def`` dependency on a worker thread, one thread hand-off each per request (the
# SQLite start profile at 32 clients: 12 % of the event loop's time, issue 13).


async def get_service(request: Request) -> SessionService:
    service: SessionService = request.app.state.service
    return service


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def require_token(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Mutating routes need ``Authorization: Bearer <token>``, or a browser sign-in cookie
    with its ``X-CSRF-Token``, when a token or users are configured (:mod:`.auth`).

    The request guard (:mod:`.guard`) makes the same check before the body is read;
    this dependency keeps every mutating route closed even where the guard is not
    in front of it (an embedding app), and documents the scheme in OpenAPI.
    """
    del credentials  # declared for the OpenAPI security scheme; check_access reads the header
    auth: Authenticator = request.app.state.authenticator
    check_access(
        settings.api_token,
        auth,
        authorization=request.headers.get("authorization"),
        cookie=request.cookies.get(COOKIE_NAME),
        csrf=request.headers.get(CSRF_HEADER),
        change=True,
    )


async def limit_create_rate(request: Request) -> None:
    """``TICKTAPE_CREATE_RATE_PER_MIN`` per client address (429 beyond it)."""
    limiter: CreateRateLimiter = request.app.state.create_limiter
    limiter.take(request.client.host if request.client else "unknown")


Service = Annotated[SessionService, Depends(get_service)]
Authorized = Depends(require_token)
RateLimited = Depends(limit_create_rate)


def parse_statuses(values: list[str] | None) -> frozenset[SessionStatus]:
    """``?status=running&status=stopped`` or ``?status=running,stopped``."""
    out: set[SessionStatus] = set()
    for value in values or []:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            try:
                out.add(SessionStatus(name))
            except ValueError:
                choices = ", ".join(repr(s.value) for s in SessionStatus)
                raise ValidationError(
                    f"unknown status {clip(part.strip())!r}: choose from {choices}", field="status"
                ) from None
    return frozenset(out)


async def session_query(
    status: Annotated[list[str] | None, Query(description="repeat or comma-separate")] = None,
    kind: SessionKind | None = None,
    symbol: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    include_deleted: bool = False,
) -> SessionQuery:
    """The list filters, shared by ``/api/sessions`` and the legacy listing."""
    return SessionQuery(
        statuses=parse_statuses(status),
        kind=kind,
        symbol=symbol,
        include_deleted=include_deleted,
        limit=limit,
        cursor=cursor or None,
    )


def _utc(ts: datetime | None) -> datetime | None:
    """Times without an offset are taken as UTC."""
    if ts is None or ts.tzinfo is not None:
        return ts
    return ts.replace(tzinfo=UTC)


async def tick_query(
    session_id: str,
    symbol: str | None = None,
    start: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    end: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_DATA_LIMIT)] = DEFAULT_DATA_LIMIT,
    cursor: Annotated[
        str | None,
        Query(max_length=400, description="a page's next_cursor: continue right after it"),
    ] = None,
) -> TickQuery:
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and end < start:
        raise ValidationError("end must not be before start", field="end")
    return TickQuery(
        session_id=session_id,
        symbol=symbol or None,
        start=start,
        end=end,
        limit=limit,
        after=decode_tick_cursor(cursor) if cursor else None,
    )


# Every route may answer these (the request guard answers 400/401/413 before any
# handler; 400 is also a body that is not JSON at all).
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 409, 413, 422, 429, 503)
}

router = APIRouter(prefix="/api/sessions", tags=["sessions"], responses=ERRORS)


@router.post(
    "",
    status_code=201,
    response_model=SessionOut,
    dependencies=[Authorized, RateLimited],
)
async def create_session(
    body: CreateSessionRequest,
    service: Service,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=MAX_IDEMPOTENCY_KEY_CHARS,
            description="repeat a create safely: same key, same session",
        ),
    ] = None,
) -> SessionOut:
    """Create a session; it is durable and readable everywhere when this answers.

    A backtest names a finished collect session (``source_session``) and a registered
    ``strategy`` with its ``params``; an unknown strategy, a bad parameter or a source
    that is not a finished recording with data is 422.
    """
    registry: StrategyRegistry = request.app.state.strategies
    if body.kind == SessionKind.BACKTEST.value:
        run = validate_backtest(body.backtest_fields(), registry)
        spec = await service.backtest_spec(run, on_owner_loss=_owner_loss(body.on_owner_loss))
    elif body.kind == SessionKind.PAPER.value:
        paper = validate_paper(body.paper_fields(), registry)
        recording = body.model_copy(update={"kind": "collect"}, deep=True)
        for name in STRATEGY_FIELDS:  # checked above; the recording takes the collect fields
            setattr(recording, name, None)
        spec = paper_spec(recording.spec(), paper)
    else:
        spec = body.spec()
    session = await service.create(spec, idempotency_key=idempotency_key or None)
    return session_out(session)


def _owner_loss(value: str) -> OwnerLossPolicy:
    try:
        return OwnerLossPolicy(value)
    except ValueError:
        raise ValidationError(
            "on_owner_loss must be 'fail' or 'resume'", field="on_owner_loss"
        ) from None


@router.get("", response_model=SessionListOut)
async def list_sessions(
    service: Service,
    query: Annotated[SessionQuery, Depends(session_query)],
    order: Annotated[
        Literal["newest", "oldest"],
        Query(description="by creation time; a cursor pages on in the order it was made in"),
    ] = "newest",
) -> SessionListOut:
    """Sessions newest first (``order=oldest``: oldest first); pass ``next_cursor`` back as
    ``cursor``, with the same filters and order, for the next page."""
    page = await service.list_sessions(replace(query, oldest_first=order == "oldest"))
    return SessionListOut(
        sessions=[session_out(s) for s in page.sessions], next_cursor=page.next_cursor
    )


@router.get("/{session_id}", response_model=SessionOut)
async def get_session(session_id: str, service: Service) -> SessionOut:
    return session_out(await service.get(session_id))


@router.post(
    "/{session_id}/stop",
    response_model=SessionOut,
    dependencies=[Authorized],
    responses={504: {"model": ErrorOut}},
)
async def stop_session(
    session_id: str,
    service: Service,
    wait: Annotated[bool, Query(description="answer once the session is terminal")] = False,
    timeout_s: Annotated[
        float, Query(alias="timeout", gt=0, le=MAX_STOP_WAIT_S, description="seconds")
    ] = STOP_WAIT_TIMEOUT_S,
) -> SessionOut:
    """Ask a session to stop (idempotent); a terminal session is returned unchanged."""
    return session_out(await service.stop(session_id, wait=wait, timeout_s=timeout_s))


@router.delete("/{session_id}", response_model=SessionOut, dependencies=[Authorized])
async def delete_session(session_id: str, service: Service) -> SessionOut:
    """Hide a terminal session from listings (409 while it is active)."""
    return session_out(await service.delete(session_id))


@router.get("/{session_id}/events", response_model=EventListOut)
async def session_events(session_id: str, service: Service) -> EventListOut:
    """The session's transitions, oldest first."""
    return EventListOut(events=[event_out(e) for e in await service.events(session_id)])


@router.get("/{session_id}/trades", response_model=TradeListOut)
async def session_trades(
    service: Service, query: Annotated[TickQuery, Depends(tick_query)]
) -> TradeListOut:
    """Stored trades, oldest first; ``next_cursor`` (when the page is full) continues."""
    found = await service.trades(query)
    cursor = None
    if len(found) == query.limit:
        last = found[-1]
        cursor = encode_tick_cursor((to_us(last.ts), last.trade_id, last.symbol))
    trades = [trade_out(t) for t in found]
    return TradeListOut(trades=trades, count=len(trades), next_cursor=cursor)


@router.get("/{session_id}/orderbook", response_model=BookListOut)
async def session_orderbook(
    service: Service, query: Annotated[TickQuery, Depends(tick_query)]
) -> BookListOut:
    """Stored snapshots, oldest first; ``next_cursor`` (when the page is full) continues."""
    found = await service.orderbook(query)
    cursor = None
    if len(found) == query.limit:
        cursor = encode_tick_cursor((to_us(found[-1].ts), 0, found[-1].symbol))
    books = [book_out(b) for b in found]
    return BookListOut(orderbook=books, count=len(books), next_cursor=cursor)


@router.get("/{session_id}/quality", response_model=QualityOut)
async def session_quality(session_id: str, service: Service) -> QualityOut:
    """Data quality per symbol and data type: rows, rate, gaps (with their rows), lost
    messages, reconnects, sequence breaks, out-of-order rows, receive latency, coverage."""
    return quality_out(*await service.quality(session_id))


@router.get(
    "/{session_id}/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the rows, streamed (docs/feeds.md lists the columns)",
            "content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
        }
    },
)
async def export_session(
    session_id: str,
    service: Service,
    format: Annotated[ExportFormat, Query(description="csv or parquet")] = ExportFormat.CSV,
    data: Annotated[DataType, Query(description="trades or orderbook")] = DataType.TRADES,
    symbol: Annotated[str | None, Query(max_length=64)] = None,
) -> StreamingResponse:
    """Every stored trade or snapshot of the session, oldest first, streamed in constant
    memory (one page of rows at a time)."""
    chunks = await service.export(session_id, data, format, symbol or None)
    name = f"{session_id}-{data.value}.{format.value}"
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --------------------------------------------------------------------------- results


@router.get("/{session_id}/results", response_model=ResultSummaryOut)
async def session_results(session_id: str, service: Service) -> ResultSummaryOut:
    """A backtest's results summary and hash (404 ``results_not_found`` until it has any;
    status ``partial`` while the run is still appending them)."""
    found = await service.results(session_id)
    if found is None:
        raise ResultsNotFound(session_id, "results are stored as the backtest runs")
    return ResultSummaryOut(
        session_id=found.session_id,
        status=found.status,
        hash=found.hash,
        summary=json.loads(found.summary),
        orders=found.orders,
        fills=found.fills,
        equity=found.equity,
        written_at=found.written_at,
    )


def _cursor(value: str | None) -> int:
    if value is None or value == "":
        return -1
    try:
        after = int(value)
    except ValueError:
        after = -2
    if after < -1:
        raise ValidationError(f"invalid cursor {clip(value)!r}", field="cursor")
    return after


async def _rows(
    service: SessionService, session_id: str, table: ResultTable, cursor: str | None, limit: int
) -> ResultRowsOut:
    rows = await service.result_rows(session_id, table, after=_cursor(cursor), limit=limit)
    return ResultRowsOut(
        rows=[json.loads(r.body) for r in rows],
        next_cursor=str(rows[-1].seq) if len(rows) == limit else None,
    )


Limit = Annotated[int, Query(ge=1, le=MAX_DATA_LIMIT)]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]


@router.get("/{session_id}/orders", response_model=ResultRowsOut)
async def session_orders(
    session_id: str, service: Service, cursor: Cursor = None, limit: Limit = DEFAULT_DATA_LIMIT
) -> ResultRowsOut:
    """A backtest's orders with their lifecycle, by order id (cursor-paged)."""
    return await _rows(service, session_id, "orders", cursor, limit)


@router.get("/{session_id}/fills", response_model=ResultRowsOut)
async def session_fills(
    session_id: str, service: Service, cursor: Cursor = None, limit: Limit = DEFAULT_DATA_LIMIT
) -> ResultRowsOut:
    """A backtest's fills: price, qty, fee, liquidity, ts (cursor-paged)."""
    return await _rows(service, session_id, "fills", cursor, limit)


@router.get("/{session_id}/equity", response_model=ResultRowsOut)
async def session_equity(
    session_id: str, service: Service, cursor: Cursor = None, limit: Limit = DEFAULT_DATA_LIMIT
) -> ResultRowsOut:
    """A backtest's equity curve: every sampling interval and every fill (cursor-paged)."""
    return await _rows(service, session_id, "equity", cursor, limit)
