"""What every request passes before any handler runs: Host, token, body size.

A plain ASGI middleware, outermost, so that it acts on the raw request:

1. **Host.** Only the names in ``TICKTAPE_ALLOWED_HOSTS`` are served (loopback by
   default): a page on another site that rebinds its DNS name to 127.0.0.1 sends
   its own name as ``Host`` and is refused (400 ``host_not_allowed``).
2. **Credentials, before the body is read.** With ``TICKTAPE_API_TOKEN`` set or
   users configured (``TICKTAPE_USERS_FILE``), a change (any method but
   GET/HEAD/OPTIONS) needs the bearer token, or a browser's sign-in cookie with its
   ``X-CSRF-Token`` (:func:`ticktape.api.auth.check_access`); without them it is
   answered 401 (403 ``csrf_failed`` for a cookie without its CSRF token) at once.
   With ``TICKTAPE_PROTECT_READS`` reads need the token or a sign-in cookie too,
   except the probes ``/health`` and ``/ready`` and CORS preflights. The sign-in
   routes themselves (``/api/v1/auth/...``) are open: they check what they need.
   Nothing of the body is read first. On the original platform's routes the
   refusal has the original's error shape, as the route itself would answer.
3. **Body size, while reading.** A ``Content-Length`` above
   ``TICKTAPE_MAX_BODY_BYTES`` is refused before reading; a body without one is
   counted as it arrives and refused (413 ``request_too_large``) as soon as it
   passes the limit, so memory never holds more than the limit.

WebSocket handshakes (``/ws``) pass the same Host check and, with
``TICKTAPE_PROTECT_READS``, the same credential check (bearer token or sign-in
cookie; a handshake is a read). A browser's handshake also names its page's
``Origin``: it must be an allowed host or one of ``TICKTAPE_CORS_ORIGINS``
(403 ``origin_not_allowed``), so a page elsewhere cannot ride a signed-in
browser's cookie into the socket (cross-site WebSocket hijacking). A refused
handshake is answered with the HTTP error (400/401/403 and the JSON error body).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import cookie_parser
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ticktape.api.auth import COOKIE_NAME, CSRF_HEADER, Authenticator, check_access
from ticktape.api.compat import error_response
from ticktape.api.compat import router as compat_router
from ticktape.api.errors import error_body, status_for
from ticktape.config import Settings
from ticktape.errors import TicktapeError, clip

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBE_PATHS = frozenset({"/health", "/ready"})  # always open: load balancers call them
# Browser sign-in: open to anyone, each checks what it needs itself (compat/_auth.py).
SIGN_IN_PATHS = frozenset({"/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/logout"})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit; rendered as 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))


def too_large_message(limit: int) -> str:
    return f"request body is larger than {limit} bytes (limit TICKTAPE_MAX_BODY_BYTES)"


def host_name(raw: str) -> str:
    """``example.com:8765`` → ``example.com``; ``[::1]:8765`` → ``::1``."""
    raw = raw.strip().lower()
    if raw.startswith("["):
        return raw[1:].split("]", 1)[0]
    if raw.count(":") == 1:
        return raw.split(":", 1)[0]
    return raw


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    return cookie_parser(raw).get(name) if raw else None


def _is_compat_route(scope: Scope) -> bool:
    """Whether the request goes to one of the original platform's routes (their paths
    are disjoint from ticktape's own ``/api/sessions``)."""
    return any(route.matches(scope)[0] is not Match.NONE for route in compat_router.routes)


def _refusal_for(scope: Scope, exc: TicktapeError) -> JSONResponse:
    if _is_compat_route(scope):
        return error_response(exc)
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(exc.code, exc.message), status_code=status, headers=headers)


async def _refuse_handshake(
    refusal: JSONResponse, scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer a WebSocket handshake with an HTTP error (ASGI's denial response), or close
    it before accepting where the server does not offer that (the client sees 403)."""
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": refusal.status_code,
                "headers": refusal.raw_headers,
            }
        )
        await send({"type": "websocket.http.response.body", "body": refusal.body})
    else:
        await send({"type": "websocket.close", "code": 1008})


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings, authenticator: Authenticator) -> None:
        self.app = app
        self.settings = settings
        self.auth = authenticator
        self.any_host = "*" in settings.allowed_hosts
        self.hosts = frozenset(settings.allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            refusal = self.refusal(scope) or self._origin_refusal(scope)
            if refusal is not None:
                await _refuse_handshake(refusal, scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        limit = self.settings.max_body_bytes
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, bounded_receive, send)

    def refusal(self, scope: Scope) -> JSONResponse | None:
        """The answer refusing this request (Host, credentials, Content-Length), or None."""
        if not self.any_host:
            host = host_name(_header(scope, b"host") or "")
            if host not in self.hosts:
                return JSONResponse(
                    error_body(
                        "host_not_allowed",
                        f"Host {clip(host)!r} is not served here "
                        "(allowed names: TICKTAPE_ALLOWED_HOSTS)",
                    ),
                    status_code=400,
                )
        if self._needs_credentials(scope):
            try:
                check_access(
                    self.settings.api_token,
                    self.auth,
                    authorization=_header(scope, b"authorization"),
                    cookie=_cookie(scope, COOKIE_NAME),
                    csrf=_header(scope, CSRF_HEADER.lower().encode()),
                    change=scope.get("method", "GET") not in SAFE_METHODS,
                )
            except TicktapeError as exc:
                return _refusal_for(scope, exc)
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.settings.max_body_bytes
            except ValueError:
                return JSONResponse(
                    error_body("bad_request", "Content-Length is not a number"), status_code=400
                )
            if too_big:
                return JSONResponse(
                    error_body(
                        "request_too_large", too_large_message(self.settings.max_body_bytes)
                    ),
                    status_code=413,
                )
        return None

    def _origin_refusal(self, scope: Scope) -> JSONResponse | None:
        """A browser's WebSocket from a page this server does not serve nor allow (CORS)."""
        origin = _header(scope, b"origin")
        if origin is None or self.any_host or origin in self.settings.cors_origins:
            return None
        if host_name(origin.partition("://")[2].split("/", 1)[0]) in self.hosts:
            return None
        return JSONResponse(
            error_body(
                "origin_not_allowed",
                f"Origin {clip(origin)!r} may not open this WebSocket "
                "(allowed: TICKTAPE_ALLOWED_HOSTS, TICKTAPE_CORS_ORIGINS)",
            ),
            status_code=403,
        )

    def _needs_credentials(self, scope: Scope) -> bool:
        if not self.settings.api_token and not self.auth.enabled:
            return False
        path = scope["path"]
        if path in SIGN_IN_PATHS:
            return False
        method = scope.get("method", "GET")  # a WebSocket handshake is a GET
        if method not in SAFE_METHODS:
            return True
        if method == "OPTIONS" and _header(scope, b"access-control-request-method"):
            return False  # a CORS preflight: browsers never send credentials on it
        return self.settings.protect_reads and path not in PROBE_PATHS
