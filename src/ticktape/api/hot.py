"""The two hottest routes served without FastAPI's per-request machinery.

``POST /api/sessions`` (a collect session) and ``GET /api/sessions/{id}`` are what a
client starting sessions does over and over; at 32 concurrent clients on SQLite
FastAPI's routing, dependency solving and validation took about a third of the
server's CPU (issue 13's profile, docs/benchmarks.md). :class:`HotApp` (the app
``create_app`` builds) answers those two requests itself, in front of FastAPI —
the same checks, the same service calls, the same JSON (``SessionOut``,
serialised by pydantic as FastAPI does) — and hands every other request to
FastAPI unchanged.

It only takes the plain case and falls back to FastAPI for anything else, so
every error a client can cause is still answered by the one code path that
documents it: a body that is not a JSON object or fails
``CreateSessionRequest``, a kind other than ``collect``, an ``Idempotency-Key``
that FastAPI would refuse, a content type other than JSON. The body read here is
replayed to the app on a fallback. What the service raises (limits, a failing
store, an unknown session) is rendered by :mod:`ticktape.api.errors`, as the
routes' errors are. The routes stay declared in FastAPI (OpenAPI, embedding apps,
the fallback); ``tests/unit/test_hot_routes.py`` checks both paths answer alike.

It makes the request guard's checks first (Host, credentials, Content-Length; a
refused request goes to FastAPI, whose guard answers it), counts a body without a
length against the same limit, and answers an unexpected exception as
:class:`~ticktape.api.errors.CatchAllMiddleware` does. With CORS origins
configured it is off: every answer then needs the CORS middleware's headers.

**For developers: a new check on the create or get route goes here too.** A
request that passes this module's checks never reaches FastAPI's route, its
dependencies or its middleware, so a check added only there (a new limit, a
validation rule, an access rule, a header) is silently skipped for the plain
requests this module answers — most of them. Add it to both paths, and add a
case to ``tests/unit/test_hot_routes.py``, which sends the same request down
the hot path and down FastAPI's and compares status, headers and JSON: that is
how to prove the two still agree.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request, cookie_parser
from starlette.types import Message, Receive, Scope, Send

from ticktape.api.auth import COOKIE_NAME, CSRF_HEADER, Authenticator, check_access
from ticktape.api.errors import error_body, http_error_response, ticktape_error_response
from ticktape.api.guard import BodyTooLarge, RequestGuard
from ticktape.api.limits import CreateRateLimiter
from ticktape.api.models import CreateSessionRequest, SessionOut, session_out
from ticktape.config import Settings
from ticktape.errors import TicktapeError
from ticktape.service import SessionService

log = logging.getLogger(__name__)

SESSIONS_PATH = "/api/sessions"
_SESSION_PATH = re.compile(r"/api/sessions/([0-9a-fA-F-]{36})")  # the ids ticktape makes
_CSRF = CSRF_HEADER.lower().encode()
MAX_IDEMPOTENCY_KEY_CHARS = 200  # as routes.py declares it


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """Request headers by lower-case name (a repeated header: the first)."""
    out: dict[bytes, bytes] = {}
    for key, value in scope["headers"]:
        out.setdefault(key, value)
    return out


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json"


def _cookie(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return cookie_parser(raw.decode("latin-1")).get(COOKIE_NAME)


class HotApp(FastAPI):
    """The ticktape app: FastAPI, with :class:`HotRoutes` in front when ``hot`` is set.

    In front of FastAPI's whole stack (its error, telemetry and body-limit
    middleware, Starlette's dispatch): those cost a fifth of a hot request again.
    """

    hot: HotRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.hot
        if hot is not None and scope["type"] == "http":
            scope["app"] = self  # as Starlette sets it: handlers read app.state
            if await hot.serve(scope, receive, send):
                return
        await super().__call__(scope, receive, send)


class HotRoutes:
    """Serves the two hot requests that pass the guard's checks; ``serve`` says whether
    it did (else the caller runs the full app, which refuses or answers as it does)."""

    def __init__(self, app: FastAPI, guard: RequestGuard) -> None:
        self.app = app
        self.guard = guard

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == SESSIONS_PATH:
            handler = self._create
        elif method == "GET" and path.startswith("/api/sessions/"):
            match = _SESSION_PATH.fullmatch(path)
            if match is None:
                return False
            handler = self._get
        else:
            return False
        if self.guard.refusal(scope) is not None:
            return False  # the app's own guard answers it
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await handler(scope, receive, tracking_send)
        except Exception:  # as CatchAllMiddleware does
            log.exception("unexpected error in %s %s", method, path)
            if not started:
                response = JSONResponse(
                    error_body("internal_error", "internal server error; see the server log"),
                    status_code=500,
                )
                await response(scope, _no_receive, send)
        return True

    async def _get(self, scope: Scope, receive: Receive, send: Send) -> None:
        del receive  # a GET's body is not read
        session_id = scope["path"].rsplit("/", 1)[1]
        service: SessionService = scope["app"].state.service
        try:
            session = await service.get(session_id)
        except TicktapeError as exc:
            await self._error(scope, exc, send)
            return
        await _send_json(send, 200, _session_json(session_out(session)))

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        body_parts: list[bytes] = []
        more, seen, limit = True, 0, self.guard.settings.max_body_bytes
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:  # a body without Content-Length, past the limit: the guard's 413
                response = await http_error_response(Request(scope), BodyTooLarge(limit))
                await response(scope, _no_receive, send)
                return
            body_parts.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(body_parts)
        request = self._plain_create(headers, body)
        if request is None:
            await FastAPI.__call__(self.app, scope, _replay(body, receive), send)
            return
        state = scope["app"].state
        try:
            settings: Settings = state.settings
            auth: Authenticator = state.authenticator
            check_access(  # what the route's require_token dependency checks
                settings.api_token,
                auth,
                authorization=_text(headers.get(b"authorization")),
                cookie=_cookie(headers.get(b"cookie")),
                csrf=_text(headers.get(_CSRF)),
                change=True,
            )
            limiter: CreateRateLimiter = state.create_limiter
            client = scope.get("client")
            limiter.take(client[0] if client else "unknown")
            service: SessionService = state.service
            key = _text(headers.get(b"idempotency-key"))
            session = await service.create(request.spec(), idempotency_key=key or None)
        except TicktapeError as exc:
            await self._error(scope, exc, send)
            return
        await _send_json(send, 201, _session_json(session_out(session)))

    @staticmethod
    def _plain_create(headers: dict[bytes, bytes], body: bytes) -> CreateSessionRequest | None:
        """The request, if it is a plain collect create this path answers; else None."""
        if not _is_json(headers.get(b"content-type")):
            return None
        key = headers.get(b"idempotency-key")
        if key is not None and len(key.decode("latin-1")) > MAX_IDEMPOTENCY_KEY_CHARS:
            return None
        try:
            data: Any = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("kind") != "collect":
            return None
        try:
            request = CreateSessionRequest.model_validate(data)
        except PydanticValidationError:
            return None
        return request

    @staticmethod
    async def _error(scope: Scope, exc: TicktapeError, send: Send) -> None:
        response = await ticktape_error_response(Request(scope), exc)
        await response(scope, _no_receive, send)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("latin-1")


def _session_json(out: SessionOut) -> bytes:
    return out.model_dump_json().encode()


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the body already read, then the real one's."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _no_receive() -> Message:  # an error response reads nothing
    return {"type": "http.disconnect"}
