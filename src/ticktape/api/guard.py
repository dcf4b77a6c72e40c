"""What every request passes before any handler runs: Host, token, body size.

A plain ASGI middleware, outermost, so that it acts on the raw request:

1. **Host.** Only the names in ``TICKTAPE_ALLOWED_HOSTS`` are served (loopback by
   default): a page on another site that rebinds its DNS name to 127.0.0.1 sends
   its own name as ``Host`` and is refused (400 ``host_not_allowed``).
2. **Token, before the body is read.** With ``TICKTAPE_API_TOKEN`` set, a change
   (any method but GET/HEAD/OPTIONS) without the right bearer token is answered
   401 at once; with ``TICKTAPE_PROTECT_READS`` reads need it too, except the
   probes ``/health`` and ``/ready``. Nothing of the body is read first.
3. **Body size, while reading.** A ``Content-Length`` above
   ``TICKTAPE_MAX_BODY_BYTES`` is refused before reading; a body without one is
   counted as it arrives and refused (413 ``request_too_large``) as soon as it
   passes the limit, so memory never holds more than the limit.
"""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ticktape.api.errors import error_body
from ticktape.config import Settings
from ticktape.errors import clip

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBE_PATHS = frozenset({"/health", "/ready"})  # always open: load balancers call them


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


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.any_host = "*" in settings.allowed_hosts
        self.hosts = frozenset(settings.allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
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

    def _refusal(self, scope: Scope) -> JSONResponse | None:
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
        if self._needs_token(scope):
            problem = self._token_problem(scope)
            if problem is not None:
                return JSONResponse(
                    error_body("unauthorized", problem),
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
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

    def _needs_token(self, scope: Scope) -> bool:
        if not self.settings.api_token:
            return False
        if scope["method"] not in SAFE_METHODS:
            return True
        return self.settings.protect_reads and scope["path"] not in PROBE_PATHS

    def _token_problem(self, scope: Scope) -> str | None:
        token = self.settings.api_token or ""
        header = _header(scope, b"authorization") or ""
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            what = "changes" if scope["method"] not in SAFE_METHODS else "every request"
            return f"this server requires 'Authorization: Bearer <token>' on {what}"
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return "invalid bearer token"
        return None
