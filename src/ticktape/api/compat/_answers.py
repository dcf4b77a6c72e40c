"""Answers in the shapes the original platform's clients read.

Everything here is derived from one :class:`~ticktape.domain.Session` just read
from the store (DESIGN.md, invariant 1) — nothing is kept between requests.

Envelopes: routes that had one answer ``{"type": "response", "data": {...},
"version": "1.0", "timestamp": ...}``; errors on every compat route are
``{"type": "error", "error_code", "error_message", "detail", "error": {"code",
"message"}}`` — the original's fields (``detail`` is what its data-collection
routes' clients read) beside ticktape's own ``error`` object.

Vocabulary (these routes only; ticktape's own routes keep theirs): status
``pending`` is the original's ``starting``, the rest keep their names (the
original used ``running``, ``stopping``, ``stopped``, ``completed``,
``failed``); data type ``trades`` is the original's ``price``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ticktape.api.auth import Forbidden, TooManyAttempts
from ticktape.api.errors import status_for
from ticktape.api.models import ErrorDetail
from ticktape.domain import DataType, Session, SessionKind, SessionStatus, utcnow
from ticktape.errors import (
    SessionConflict,
    SessionNotFound,
    TicktapeError,
    UnsupportedError,
    ValidationError,
)
from ticktape.strategies import InvalidParams, UnknownStrategy

PROTOCOL_VERSION = "1.0"
TICKS_TOTAL = "ticks_total"  # as ticktape.service.TICKS_TOTAL (a backtest's replay total)

_STATUS_NAMES = {SessionStatus.PENDING: "starting"}
_STATUS_BY_NAME = {name: status for status, name in _STATUS_NAMES.items()}
_DATA_TYPE_NAMES = {DataType.TRADES: "price", DataType.ORDERBOOK: "orderbook"}


class AlreadyStopped(SessionConflict):
    code = "session_already_stopped"


class AmbiguousSession(SessionConflict):
    """An empty stop body while several sessions are running."""

    code = "ambiguous_session"


class NoRunningSession(SessionNotFound):
    """An empty stop body while no session is running."""

    def __init__(self) -> None:
        TicktapeError.__init__(self, "no session is running; give the session_id to stop")
        self.session_id = ""


class NoChartData(SessionNotFound):
    code = "no_chart_data"

    def __init__(self, session_id: str, symbol: str) -> None:
        TicktapeError.__init__(
            self,
            f"No chart data found for session {session_id}, symbol {symbol}",
            session_id=session_id,
        )
        self.session_id = session_id


def status_name(status: SessionStatus) -> str:
    return _STATUS_NAMES.get(status, status.value)


def status_from_name(name: str) -> str:
    """An original status name in a query → ticktape's (``starting`` → ``pending``)."""
    found = _STATUS_BY_NAME.get(name.strip().lower())
    return found.value if found is not None else name


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def duration_text(seconds: float | None) -> str:
    """``30.0`` → ``"30s"``, ``7200.0`` → ``"2h"``; ``None`` → ``"continuous"``."""
    if seconds is None:
        return "continuous"
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def elapsed_s(session: Session) -> float:
    if session.started_at is None:
        return 0.0
    end = session.ended_at or utcnow()
    return max(0.0, (end - session.started_at).total_seconds())


def session_entry(session: Session) -> dict[str, Any]:
    """One session as the original's listings and lookups showed it."""
    stats = session.stats
    times = [t for t in (session.created_at, session.started_at, session.ended_at) if t]
    return {
        "session_id": session.id,
        "id": session.id,
        "kind": session.kind.value,
        "status": status_name(session.status),
        "symbols": list(session.symbols),
        "data_types": [_DATA_TYPE_NAMES[dt] for dt in session.data_types],
        "exchange": session.exchange,
        "start_time": _iso(session.started_at),
        "end_time": _iso(session.ended_at),
        "created_at": _iso(session.created_at),
        "updated_at": _iso(max(times)),
        "duration": duration_text(session.config.duration_s),
        "duration_seconds": elapsed_s(session),
        "records_collected": stats.records_collected,
        "prices_count": stats.trades,
        "orderbook_count": stats.orderbook,
        "error_message": session.reason if session.status is SessionStatus.FAILED else None,
        "session_type": session.kind.value,
        **strategy_fields(session),
    }


def strategy_fields(session: Session) -> dict[str, Any]:
    """A backtest's or paper session's strategy in the original's names; ``{}`` for a
    collect session. The results are ticktape's own (``results_url``)."""
    run = session.config.strategy_fields()
    if run is None:
        return {}
    out: dict[str, Any] = {
        "strategy": run.get("strategy"),
        "selected_strategies": [run.get("strategy")],
        "strategy_params": run.get("params"),
        "initial_balance": run.get("initial_cash"),
        "results_url": f"/api/sessions/{session.id}/results",
    }
    if session.kind is SessionKind.BACKTEST:
        out["source_session_id"] = run.get("source_session")
        out["acceleration_factor"] = run.get("speed")
    return out


def _replay_share(session: Session) -> float | None:
    """A whole-source backtest's share replayed (0..1); None when the total is unknown."""
    run = session.config.strategy_fields()
    total = None if run is None else run.get(TICKS_TOTAL)
    if session.kind is not SessionKind.BACKTEST or not isinstance(total, int) or total <= 0:
        return None
    return min(1.0, session.stats.records_collected / total)


def lookup_entry(session: Session) -> dict[str, Any]:
    """``GET /sessions/{id}``: the listing's fields and the lookup's own."""
    return {
        **session_entry(session),
        "mode": session.kind.value,
        "is_active": not session.is_terminal,
        "source": "database",
    }


def progress(session: Session) -> dict[str, Any]:
    """Progress of a session with a duration; ``percentage``/``eta_seconds`` are null without."""
    duration = session.config.duration_s
    elapsed = elapsed_s(session)
    share = _replay_share(session)
    if session.status is SessionStatus.COMPLETED:
        percentage: float | None = 100.0
        eta: float | None = 0.0
    elif share is not None:  # a backtest: replayed ticks of the source's
        percentage = round(100.0 * share, 2)
        eta = round(elapsed * (1 - share) / share, 3) if share > 0 else None
    elif duration:
        percentage = round(min(100.0, 100.0 * elapsed / duration), 2)
        eta = round(max(0.0, duration - elapsed), 3)
    else:
        percentage = eta = None
    return {
        "percentage": percentage,
        "eta_seconds": eta,
        "elapsed_seconds": round(elapsed, 3),
        "records_collected": session.stats.records_collected,
        "current_date": _iso(utcnow()) if not session.is_terminal else _iso(session.ended_at),
    }


def execution_status(session: Session | None, active_count: int) -> dict[str, Any]:
    """``GET /sessions/execution-status``'s ``data``; ``{"status": "idle", ...}`` with none."""
    if session is None:
        return {
            "status": "idle",
            "session_id": None,
            "error_message": None,
            "records_collected": 0,
            "active_sessions": 0,
        }
    entry = session_entry(session)
    prog = progress(session)
    eta_at = None
    if session.started_at is not None and session.config.duration_s:
        eta_at = session.started_at.timestamp() + session.config.duration_s
    return {
        **entry,
        "mode": session.kind.value,
        "command_type": session.kind.value,
        "progress": prog,
        "eta": None
        if eta_at is None
        else datetime.fromtimestamp(eta_at, utcnow().tzinfo).isoformat(),
        "metrics": {
            "records_collected": session.stats.records_collected,
            "prices_count": session.stats.trades,
            "orderbook_count": session.stats.orderbook,
            "errors": session.stats.errors,
        },
        "active_sessions": active_count,
    }


def envelope(data: Any) -> dict[str, Any]:
    return {
        "type": "response",
        "data": data,
        "version": PROTOCOL_VERSION,
        "timestamp": utcnow().isoformat(),
    }


def ok(data: Any) -> JSONResponse:
    return JSONResponse(envelope(data))


def _status(exc: TicktapeError) -> int:
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, TooManyAttempts):
        return 429
    if isinstance(exc, UnknownStrategy | InvalidParams):
        return 422  # as on ticktape's own API: the request is well-formed, the strategy is not
    if isinstance(exc, ValidationError):
        return 400  # the original answered bad input with 400
    if isinstance(exc, UnsupportedError):
        return 422
    return status_for(exc)


class OriginalErrorOut(BaseModel):
    """An error on the original's routes: its fields, with ticktape's ``error`` beside them.

    Refusals made before any route runs (the request guard's Host and body-size checks)
    carry ticktape's ``error`` only.
    """

    type: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    detail: str | None = None
    error: ErrorDetail
    version: str | None = None
    timestamp: str | None = None


# What the original's routes may answer besides 200 (documented in OpenAPI).
ORIGINAL_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OriginalErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 429, 503, 504)
}


def error_response(exc: TicktapeError) -> JSONResponse:
    """A ticktape error in the original's error shape, with ticktape's ``error`` beside it."""
    code = "not_built_yet" if type(exc) is UnsupportedError else exc.code
    detail: dict[str, Any] = {"code": code, "message": exc.message}
    field = getattr(exc, "field", None)
    if field:
        detail["field"] = field
    status = _status(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    retry_after = getattr(exc, "retry_after_s", None)  # throttled sign-ins, limits (429)
    if retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
    body = {
        "type": "error",
        "error_code": code,
        "error_message": exc.message,
        "detail": exc.message,
        "error": detail,
        "version": PROTOCOL_VERSION,
        "timestamp": utcnow().isoformat(),
    }
    return JSONResponse(body, status_code=status, headers=headers)
