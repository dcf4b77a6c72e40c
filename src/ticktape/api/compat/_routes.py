"""The original platform's session and data-collection routes, over the one service.

Handlers read the store through :class:`~ticktape.service.SessionService` on
every request and shape its sessions with :mod:`._answers`; errors of every
kind (domain, request shape, auth) leave these routes in the original's error
shape (:class:`CompatRoute`). docs/compat.md lists every route with its status.

"Current" session (``GET /sessions/execution-status``, ``POST /sessions/stop``
with no ``session_id``): the original ran one session at a time; ticktape runs
many. The current one is the newest (by creation) active session — starting,
running or stopping — that is not deleted. An empty stop body stops the one
starting or running session, and refuses (409 ``ambiguous_session``) when
there are several.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ticktape.api.compat._answers import (
    ORIGINAL_ERRORS,
    AlreadyStopped,
    AmbiguousSession,
    NoChartData,
    NoRunningSession,
    error_response,
    execution_status,
    lookup_entry,
    ok,
    session_entry,
    status_from_name,
)
from ticktape.api.compat._requests import StartRequest, parse_start
from ticktape.api.errors import count_error, describe_validation_error
from ticktape.api.routes import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    Authorized,
    RateLimited,
    Service,
    parse_statuses,
)
from ticktape.domain import (
    ACTIVE_STATUSES,
    Session,
    SessionKind,
    SessionSpec,
    SessionStatus,
    utcnow,
)
from ticktape.errors import StopTimeout, TicktapeError, ValidationError
from ticktape.service import SessionService
from ticktape.store.base import MAX_DATA_LIMIT, MAX_LIST_LIMIT, SessionQuery, TickQuery
from ticktape.ticks import Trade

COMPAT_STOP_WAIT_S = 10.0  # the original's stop answered once stopped; wait this long at most
DEFAULT_LIST_LIMIT = 50  # the original's default and bounds for the listing
MAX_COMPAT_LIST_LIMIT = 200
DEFAULT_MAX_POINTS = 10_000  # the original's chart-data default and bounds
MIN_MAX_POINTS, MAX_MAX_POINTS = 100, 50_000
STARTABLE = frozenset({SessionStatus.PENDING, SessionStatus.RUNNING})


class CompatRoute(APIRoute):
    """Answers every error of its handler in the original's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def compat_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except TicktapeError as exc:
                count_error(request, exc)
                return error_response(exc)
            except RequestValidationError as exc:
                problems = [describe_validation_error(dict(e)) for e in exc.errors()]
                message = "; ".join(dict.fromkeys(m for _, m, _ in problems)) or "invalid request"
                return error_response(
                    ValidationError(message, field=problems[0][2] if problems else None)
                )

        return compat_handler


router = APIRouter(tags=["original platform"], route_class=CompatRoute, responses=ORIGINAL_ERRORS)


async def _json_body(request: Request) -> object:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}") from None


async def _active(service: SessionService, statuses: frozenset[SessionStatus]) -> list[Session]:
    page = await service.list_sessions(SessionQuery(statuses=statuses, limit=MAX_LIST_LIMIT))
    return page.sessions


def _same_request(session: Session, spec: SessionSpec) -> bool:
    return (
        session.kind is spec.kind
        and sorted(session.symbols) == sorted(spec.symbols)
        and session.data_types == spec.data_types
        and replace(session.config, ignored=()) == replace(spec.config, ignored=())
    )


def _idempotent_lock(app: Any) -> asyncio.Lock:
    """The instance's one lock for ``idempotent: true`` starts (made on first use)."""
    lock: asyncio.Lock | None = getattr(app.state, "idempotent_start_lock", None)
    if lock is None:
        lock = app.state.idempotent_start_lock = asyncio.Lock()
    return lock


async def start_parsed(
    app: Any, service: SessionService, parsed: StartRequest, key: str | None
) -> Session:
    """Start ``parsed`` (the HTTP route and the WebSocket ``command`` share this).

    ``idempotent: true`` without an Idempotency-Key: the look for an active twin and
    the create happen under one lock, so two identical starts arriving together on
    this instance give one session, not two that each saw no twin. (With an
    Idempotency-Key the store decides: one session per key, on every instance.)
    """
    spec = await parsed.resolve(service)
    if not parsed.idempotent or key is not None:
        return await service.create(spec, idempotency_key=key)
    async with _idempotent_lock(app):
        running = await _active(service, STARTABLE)
        twin = next((s for s in running if _same_request(s, spec)), None)
        return twin if twin is not None else await service.create(spec)


def started_answer(session: Session) -> dict[str, Any]:
    return {
        "status": "session_started",
        "session_id": session.id,
        "session_type": session.kind.value,
        "symbols": list(session.symbols),
    }


@router.post("/sessions/start", dependencies=[Authorized, RateLimited])
async def start(request: Request, service: Service) -> JSONResponse:
    """Start a session from the original's body; answers the session's own id."""
    parsed = parse_start(await _json_body(request), request.app.state.strategies)
    key = request.headers.get("idempotency-key") or None
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise ValidationError(
            f"Idempotency-Key is at most {MAX_IDEMPOTENCY_KEY_CHARS} characters",
            field="Idempotency-Key",
        )
    return ok(started_answer(await start_parsed(request.app, service, parsed, key)))


async def stop_session(service: SessionService, session_id: str | None) -> dict[str, Any]:
    """Stop the named session — or, with none named, the one starting or running — and
    answer as the original did (the HTTP route and the WebSocket ``command`` share this)."""
    if session_id:
        session = await service.get(session_id)
    else:
        running = await _active(service, STARTABLE)
        if not running:
            raise NoRunningSession
        if len(running) > 1:
            ids = ", ".join(s.id for s in running[:10])
            raise AmbiguousSession(
                f"{len(running)} sessions are running ({ids}); say which with session_id",
                session_id="",
                status="running",
            )
        session = running[0]
    if session.is_terminal:
        raise AlreadyStopped(
            f"Session {session.id} is already {session.status.value}",
            session_id=session.id,
            status=session.status.value,
        )
    here = session.owner == service.owner
    orphaned = session.lease_expires_at is not None and session.lease_expires_at < utcnow()
    try:
        after = await service.stop(session.id, wait=True, timeout_s=COMPAT_STOP_WAIT_S)
    except StopTimeout:
        after = await service.get(session.id)
    result = {
        "session_id": session.id,
        "stopped_via": "controller" if here else "database",
        "was_orphaned": orphaned,
    }
    # The original nested these under data.data; its page reads them one level up.
    return {
        "status": "session_stopped",
        **result,
        "session_status": after.status.value,
        "data": result,
    }


@router.post("/sessions/stop", dependencies=[Authorized])
async def stop(request: Request, service: Service) -> JSONResponse:
    """Stop the named session — or, with an empty body, the one starting or running."""
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object")
    session_id = body.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        raise ValidationError("session_id must be a string", field="session_id")
    return ok(await stop_session(service, session_id))


@router.get("/sessions/execution-status")
async def get_execution_status(service: Service) -> JSONResponse:
    """The current session's status and progress (see the module docstring)."""
    active = await _active(service, ACTIVE_STATUSES)
    return ok(execution_status(active[0] if active else None, len(active)))


@router.get("/sessions/{session_id}")
async def get_session(session_id: str, service: Service) -> JSONResponse:
    return ok(lookup_entry(await service.get(session_id)))


@router.get("/api/data-collection/sessions")
async def list_sessions(
    service: Service,
    limit: Annotated[int, Query(ge=1, le=MAX_COMPAT_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    include_stats: bool = False,
    status: Annotated[
        list[str] | None, Query(description="original names; repeat or comma-separate")
    ] = None,
    symbol: str | None = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Collect sessions, newest first; ``total_count`` counts every match, not just this page."""
    names = [",".join(status_from_name(p) for p in value.split(",")) for value in status or []]
    query = SessionQuery(
        statuses=parse_statuses(names),
        kind=SessionKind.COLLECT,
        symbol=symbol,
        limit=limit,
        cursor=cursor or None,
    )
    page = await service.list_sessions(query)
    total = await service.count(replace(query, cursor=None))
    sessions = []
    for s in page.sessions:
        entry = session_entry(s)
        if include_stats:
            entry["stats"] = s.stats.to_dict()
        sessions.append(entry)
    return {
        "sessions": sessions,
        "total_count": total,
        "limit": limit,
        "next_cursor": page.next_cursor,
    }


@router.delete("/api/data-collection/sessions/{session_id}", dependencies=[Authorized])
async def delete_session(session_id: str, service: Service) -> dict[str, Any]:
    """Stop the session if it is active (as the original did), then soft-delete it."""
    session = await service.get(session_id)
    if not session.is_terminal:
        # A stop that is not done in time: the soft delete below refuses it (409).
        with contextlib.suppress(StopTimeout):
            await service.stop(session_id, wait=True, timeout_s=COMPAT_STOP_WAIT_S)
    await service.delete(session_id)
    return {
        "success": True,
        "message": f"Session {session_id} deleted successfully",
        "session_id": session_id,
        # A soft delete: the recorded data is kept and the session hidden from listings.
        "deleted_counts": {},
    }


def _downsample(max_points: int) -> tuple[list[Trade], Callable[[Trade], None]]:
    """Keep every k-th trade, doubling k whenever more than ``max_points`` are kept."""
    kept: list[Trade] = []
    state = {"seen": 0, "stride": 1}

    def feed(trade: Trade) -> None:
        if state["seen"] % state["stride"] == 0:
            kept.append(trade)
            if len(kept) > max_points:
                kept[:] = kept[::2]
                state["stride"] *= 2
        state["seen"] += 1

    return kept, feed


@router.get("/api/data-collection/{session_id}/chart-data")
async def chart_data(
    session_id: str,
    service: Service,
    symbol: str,
    max_points: Annotated[int, Query(ge=MIN_MAX_POINTS, le=MAX_MAX_POINTS)] = DEFAULT_MAX_POINTS,
) -> dict[str, Any]:
    """Trades of one symbol as ``{timestamp, price, volume, symbol}``, evenly thinned to
    at most ``max_points`` (first trade kept); read in pages, memory bounded by max_points."""
    session = await service.get(session_id)
    if symbol not in session.symbols:
        raise NoChartData(session_id, symbol)
    kept, feed = _downsample(max_points)
    start = None
    seen_at_start: set[int] = set()
    while True:
        page = await service.trades(
            TickQuery(session_id=session_id, symbol=symbol, start=start, limit=MAX_DATA_LIMIT)
        )
        fresh = [t for t in page if not (t.ts == start and t.trade_id in seen_at_start)]
        for trade in fresh:
            feed(trade)
        if len(page) < MAX_DATA_LIMIT:
            break
        last = page[-1].ts
        if last == start and not fresh:
            # a whole page at one instant, all seen: move past it
            start, seen_at_start = last + timedelta(microseconds=1), set()
            continue
        seen_at_start = {t.trade_id for t in page if t.ts == last} | (
            seen_at_start if last == start else set()
        )
        start = last
    if not kept:
        raise NoChartData(session_id, symbol)
    data = [
        {"timestamp": t.ts.isoformat(), "price": t.price, "volume": t.qty, "symbol": t.symbol}
        for t in kept
    ]
    return {"session_id": session_id, "symbol": symbol, "data_points": len(data), "data": data}
