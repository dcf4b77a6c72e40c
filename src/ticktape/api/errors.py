"""The one place that turns errors into HTTP answers.

Every error body is ``{"error": {"code": ..., "message": ..., "field": ...}}``
(``field`` only when a request field is to blame). ticktape's own errors map to
a status by their class (the most specific class in :data:`STATUS_BY_ERROR`
wins); request-shape errors from FastAPI become 422 (400 for a body that is not
JSON at all); unknown routes 404, wrong methods 405. Anything unexpected is
logged with its traceback and answered with a generic 500 — a client never
sees a traceback.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ticktape import errors
from ticktape.api.auth import Forbidden, TooManyAttempts
from ticktape.errors import clip
from ticktape.redact import redact

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[errors.TicktapeError], int] = {
    errors.ValidationError: 422,
    errors.UnsupportedError: 422,
    errors.SessionNotFound: 404,
    errors.ResultsNotFound: 404,
    errors.SessionConflict: 409,  # and InvalidTransition
    errors.TransitionRace: 409,
    errors.LeaseLost: 409,
    errors.StoreError: 503,  # and StoreUnavailable, StoreBusy
    errors.StopTimeout: 504,
    errors.Unauthorized: 401,
    errors.IdempotencyKeyReused: 409,
    errors.LimitExceeded: 429,
    Forbidden: 403,  # signed in, but no valid CSRF token
    TooManyAttempts: 429,
}

_CODE_BY_HTTP_STATUS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    401: "unauthorized",
    413: "request_too_large",
}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return {"error": detail}


def status_for(exc: errors.TicktapeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def _field_path(loc: Sequence[Any]) -> str:
    """``("body", "symbols", 3)`` → ``"symbols[3]"``; ``("query", "limit")`` → ``"limit"``."""
    parts = list(loc[1:]) if loc and loc[0] in {"body", "query", "path", "header"} else list(loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def describe_validation_error(error: dict[str, Any]) -> tuple[str, str, str | None]:
    """One pydantic/FastAPI error → (code, human message naming the field, field)."""
    kind = str(error.get("type", ""))
    loc = error.get("loc", ())
    field = str(clip(_field_path(loc))) or None  # a field name is input too
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "JSON decode error")
        position = loc[1] if len(loc) > 1 else "?"
        return (
            "malformed_json",
            f"request body is not valid JSON: {reason} at position {position}",
            None,
        )
    if kind == "extra_forbidden":
        return "validation_error", f"unknown field {clip(field)!r}", field
    if field is None:
        if kind == "missing":
            return "validation_error", "a JSON request body is required", None
        if isinstance(error.get("input"), str | bytes):
            # FastAPI parses JSON only when the client says so (a CSRF guard): tell them
            return (
                "validation_error",
                ("request body must be a JSON object sent with 'Content-Type: application/json'"),
                None,
            )
        return "validation_error", "request body must be a JSON object", None
    if kind == "missing":
        return "validation_error", f"{field} is required", field
    message = str(error.get("msg", "is invalid"))
    return "validation_error", f"{field}: {message[0].lower()}{message[1:]}", field


def count_error(request: HTTPConnection, exc: errors.TicktapeError) -> None:
    """Count a refusal in /metrics: store errors by code, limits by setting. Every route
    family answering a ticktape error calls this (the original's routes too)."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is None:
        return
    if isinstance(exc, errors.StoreError):
        metrics.store_errors.labels(code=exc.code).inc()
    if isinstance(exc, errors.LimitExceeded):
        metrics.limits_hit.labels(limit=exc.limit).inc()


async def _ticktape_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.TicktapeError)
    return await ticktape_error_response(request, exc)


async def ticktape_error_response(request: Request, exc: errors.TicktapeError) -> JSONResponse:
    """A ticktape error as its HTTP answer (logged if 5xx, counted in /metrics)."""
    status = status_for(exc)
    message = exc.message
    if status >= 500:
        message = redact(message)  # a driver's message may quote a store URL
        log.warning(
            "%s %s → %d: %s",
            request.method,
            request.url.path,
            status,
            message,
            exc_info=exc.__cause__ is not None,
        )
    count_error(request, exc)
    field = getattr(exc, "field", None)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse(
        error_body(exc.code, message, field), status_code=status, headers=headers or None
    )


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [describe_validation_error(dict(e)) for e in exc.errors()]
    if not problems:
        return JSONResponse(error_body("validation_error", "invalid request"), status_code=422)
    code, _, field = problems[0]
    message = "; ".join(dict.fromkeys(message for _, message, _ in problems))
    status = 400 if code == "malformed_json" else 422
    return JSONResponse(error_body(code, message, field), status_code=status)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return await http_error_response(request, exc)


async def http_error_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's HTTP errors (404, 405, the guard's 413 while reading) in our shape."""
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    code = _CODE_BY_HTTP_STATUS.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


class CatchAllMiddleware:
    """Last line of defence: an unexpected exception becomes a logged, generic 500.

    A plain ASGI middleware rather than an ``Exception`` handler, because
    Starlette re-raises after calling such a handler and the server would log
    the same traceback a second time.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                return  # too late for an error body; the client sees a cut response
            response = JSONResponse(
                error_body("internal_error", "internal server error; see the server log"),
                status_code=500,
            )
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.TicktapeError, _ticktape_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(CatchAllMiddleware)
