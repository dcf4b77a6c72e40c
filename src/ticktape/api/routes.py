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

from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ticktape.api.auth import COOKIE_NAME, CSRF_HEADER, Authenticator, check_access
from ticktape.api.limits import CreateRateLimiter
from ticktape.api.models import (
    BookListOut,
    CreateSessionRequest,
    ErrorOut,
    EventListOut,
    SessionListOut,
    SessionOut,
    TradeListOut,
    book_out,
    event_out,
    session_out,
    trade_out,
)
from ticktape.config import STOP_WAIT_TIMEOUT_S, Settings
from ticktape.domain import SessionKind, SessionStatus
from ticktape.errors import ValidationError, clip
from ticktape.service import SessionService
from ticktape.store.base import (
    DEFAULT_DATA_LIMIT,
    DEFAULT_LIST_LIMIT,
    MAX_DATA_LIMIT,
    MAX_LIST_LIMIT,
    SessionQuery,
    TickQuery,
)

MAX_STOP_WAIT_S = 300.0  # longest a client may hold a "stop and wait" request open
MAX_IDEMPOTENCY_KEY_CHARS = 200

_bearer = HTTPBearer(auto_error=False, description="required on POST/DELETE when a token is set")


def get_service(request: Request) -> SessionService:
    service: SessionService = request.app.state.service
    return service


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def require_token(
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


def limit_create_rate(request: Request) -> None:
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


def session_query(
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


def tick_query(
    session_id: str,
    symbol: str | None = None,
    start: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    end: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_DATA_LIMIT)] = DEFAULT_DATA_LIMIT,
) -> TickQuery:
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and end < start:
        raise ValidationError("end must not be before start", field="end")
    return TickQuery(
        session_id=session_id, symbol=symbol or None, start=start, end=end, limit=limit
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
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=MAX_IDEMPOTENCY_KEY_CHARS,
            description="repeat a create safely: same key, same session",
        ),
    ] = None,
) -> SessionOut:
    """Create a session; it is durable and readable everywhere when this answers."""
    session = await service.create(body.spec(), idempotency_key=idempotency_key or None)
    return session_out(session)


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
    trades = [trade_out(t) for t in await service.trades(query)]
    return TradeListOut(trades=trades, count=len(trades))


@router.get("/{session_id}/orderbook", response_model=BookListOut)
async def session_orderbook(
    service: Service, query: Annotated[TickQuery, Depends(tick_query)]
) -> BookListOut:
    books = [book_out(b) for b in await service.orderbook(query)]
    return BookListOut(orderbook=books, count=len(books))
