"""The original platform's WebSocket, ``/ws``: live session updates in its message shapes.

On connect the server says ``{"type": "status", "status": "connected",
"client_id", ...}``. A client subscribes with ``{"type": "subscribe",
"stream": "execution_status"}`` (answered ``{"type": "response", "status":
"subscribed", ...}`` and then the current session's status at once) and from
then on receives, for every session change the instance's change feed reads
from the store:

- ``{"type": "session_update", "data": {...}}`` when the session moved to a new status;
- ``{"type": "data", "stream": "execution_status", "data": {...}}`` with its progress;
- ``{"type": "execution_result", "stream": "execution_result", "data": {...}}``
  once it ended (status, ``records_collected``, ``final_results.progress``).

``data`` is the session entry of the HTTP routes (docs/compat.md) plus
``progress``, ``mode`` and ``command_type``. ``{"type": "heartbeat"}`` is
answered ``{"type": "status", "status": "pong"}``. Streams ticktape does not
have (market data, indicators, signals) are refused. A client that does not
keep up is disconnected (close code 1013); it may reconnect.

Commands, as the original's protocol sent them — ``{"type": "command", "action",
"params"}``, answered ``{"type": "response", "status": "success", "command",
"data"}`` or ``{"type": "error", "error_code", "error_message"}``:
``start_data_collection`` (``symbols``, ``duration``), ``start_backtest``
(``symbols``, ``acceleration_factor``, ``session_id`` of the recording, the strategy),
``start_live_trading`` (``mode: "paper"`` only; real orders are refused) — the
other params are the start body's ``config`` (:func:`_start_body`),
``stop_execution`` (``session_id``, or the one running) and ``get_status``. They
start and stop sessions exactly as ``POST /sessions/start`` and ``/sessions/stop``
do (same validation, limits and answers). A command is a change: on a server with
a token or users it needs a connection that is authenticated — its handshake
carried the bearer token or a sign-in cookie (the request guard checked its Origin),
or it sent ``{"type": "auth", "token": "<TICKTAPE_API_TOKEN>"}`` (answered
``{"type": "response", "status": "authenticated", ...}``, or ``invalid_token``);
else ``authentication_required``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import uuid
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, WebSocket

from ticktape.api.auth import COOKIE_NAME, Authenticator, check_access
from ticktape.api.compat._answers import (
    PROTOCOL_VERSION,
    execution_status,
    progress,
    session_entry,
)
from ticktape.api.compat._requests import parse_start
from ticktape.api.compat._routes import start_parsed, started_answer, stop_session
from ticktape.api.errors import count_error
from ticktape.api.limits import CreateRateLimiter
from ticktape.api.push import Subscription, feed_for
from ticktape.config import Settings
from ticktape.domain import ACTIVE_STATUSES, Session, utcnow
from ticktape.errors import TicktapeError, ValidationError
from ticktape.service import SessionService
from ticktape.store.base import MAX_LIST_LIMIT, SessionQuery

router = APIRouter()

STREAMS = frozenset({"execution_status", "execution_result"})
MAX_MESSAGE_CHARS = 65_536  # a client message larger than this is refused
CLOSE_TOO_SLOW = 1013  # "try again later": the client did not keep up
CLOSE_GOING_AWAY = 1001  # the server is shutting down
CLOSE_TIMEOUT_S = 1.0
VERSIONS_REMEMBERED = 1000  # per connection, to tell a status change from progress


def _now() -> str:
    return utcnow().isoformat()


def _status_data(session: Session) -> dict[str, Any]:
    return {
        **session_entry(session),
        "mode": session.kind.value,
        "command_type": session.kind.value,
        "progress": progress(session),
    }


def _handshake_may_change(websocket: WebSocket) -> bool:
    """Whether the handshake's own credentials allow changes: nothing is asked (an open
    server), or it carried the bearer token or a sign-in cookie. A cookie needs no CSRF
    token here: the request guard refused handshakes from origins not allowed."""
    settings: Settings = websocket.app.state.settings
    try:
        check_access(
            settings.api_token,
            websocket.app.state.authenticator,
            authorization=websocket.headers.get("authorization"),
            cookie=websocket.cookies.get(COOKIE_NAME),
            csrf=None,
            change=False,
        )
    except TicktapeError:
        return False
    return True


def _params(message: dict[str, Any]) -> dict[str, Any]:
    params = message.get("params")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValidationError("params must be a JSON object", field="params")
    return params


#: Start-command params that are not ``config`` fields of the start body.
_TOP_PARAMS = frozenset({"symbols", "strategy_config", "selected_strategies"})


def _start_body(action: str, params: dict[str, Any]) -> dict[str, Any]:
    """A start command's params as the body of ``POST /sessions/start``: ``symbols``,
    ``strategy_config`` and ``selected_strategies`` at the top, every other param (budget,
    stop-loss, ... and unknown ones, recorded as ignored) under ``config``."""
    body: dict[str, Any] = {k: params[k] for k in _TOP_PARAMS if k in params}
    config: dict[str, Any] = {k: v for k, v in params.items() if k not in _TOP_PARAMS}
    if action == "start_data_collection":
        config.setdefault("duration", "1h")
        body.update(session_type="collect", config=config)
    elif action == "start_backtest":
        # the original's command took "acceleration_factor" (its client's "acceleration")
        speed = config.pop("acceleration", None)
        if speed is not None:
            config.setdefault("acceleration_factor", speed)
        config.setdefault("acceleration_factor", 10.0)
        body.update(session_type="backtest", config=config)
    else:  # start_live_trading: "paper" unless it says otherwise; "live" is refused
        mode = config.pop("mode", "paper")
        body.update(session_type="live" if mode == "live" else mode, config=config)
    if not isinstance(body.get("symbols"), list) or not body["symbols"]:
        raise ValidationError("Parameter 'symbols' must be a non-empty list", field="symbols")
    return body


START_ACTIONS = frozenset({"start_data_collection", "start_backtest", "start_live_trading"})
ACTIONS = START_ACTIONS | {"stop_execution", "get_status"}


class _Connection:
    def __init__(self, websocket: WebSocket, service: SessionService) -> None:
        self.ws = websocket
        self.service = service
        self.settings: Settings = websocket.app.state.settings
        self.may_change = _handshake_may_change(websocket)
        self.client_id = uuid.uuid4().hex
        self.streams: set[str] = set()
        self.versions: OrderedDict[str, int] = OrderedDict()
        self._send_lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        message.setdefault("timestamp", _now())
        async with self._send_lock:
            await self.ws.send_text(json.dumps(message))

    def _error(self, code: str, message: str, **extra: Any) -> dict[str, Any]:
        return {"type": "error", "error_code": code, "error_message": message, **extra}

    async def current(self) -> Session | None:
        page = await self.service.list_sessions(SessionQuery(statuses=ACTIVE_STATUSES, limit=1))
        return page.sessions[0] if page.sessions else None

    async def handle(self, raw: str) -> None:
        if len(raw) > MAX_MESSAGE_CHARS:
            await self.send(
                self._error("message_too_large", f"at most {MAX_MESSAGE_CHARS} characters")
            )
            return
        try:
            message = json.loads(raw)
        except ValueError:
            await self.send(self._error("invalid_json", "the message is not valid JSON"))
            return
        if not isinstance(message, dict):
            await self.send(self._error("invalid_message", "a message is a JSON object"))
            return
        kind, reply_id = message.get("type"), message.get("id")
        extra = {"id": reply_id} if reply_id is not None else {}
        if kind in {"heartbeat", "ping"}:
            await self.send({"type": "status", "status": "pong", **extra})
        elif kind == "subscribe":
            await self.subscribe(message.get("stream"), message.get("params") or {}, extra)
        elif kind == "unsubscribe":
            self.streams.discard(str(message.get("stream")))
            await self.send(
                {
                    "type": "response",
                    "status": "unsubscribed",
                    "stream": message.get("stream"),
                    **extra,
                }
            )
        elif kind == "auth":
            await self.authenticate(message.get("token"), extra)
        elif kind == "command":
            await self.command(message, extra)
        else:
            await self.send(
                self._error("unknown_message_type", f"unknown message type {kind!r}", **extra)
            )

    async def authenticate(self, token: object, extra: dict[str, Any]) -> None:
        """The original's ``auth`` message; the token here is ``TICKTAPE_API_TOKEN``."""
        expected = self.settings.api_token
        auth: Authenticator = self.ws.app.state.authenticator
        if not expected and not auth.enabled:
            self.may_change = True  # nothing is asked on this server: open, as over HTTP
        elif (
            expected
            and isinstance(token, str)
            and hmac.compare_digest(token.encode(), expected.encode())
        ):
            self.may_change = True
        else:
            await self.send(
                self._error("invalid_token", "the token is not this server's API token", **extra)
            )
            return
        await self.send(
            {
                "type": "response",
                "status": "authenticated",
                "user_id": "api-token" if expected else "anonymous",
                "permissions": ["read", "write"],
                "session_expires": None,
                **extra,
            }
        )

    async def command(self, message: dict[str, Any], extra: dict[str, Any]) -> None:
        action = message.get("action")
        if action not in ACTIONS:
            await self.send(
                self._error(
                    "unknown_command",
                    f"unknown command {str(action)[:64]!r}: ticktape serves "
                    + ", ".join(sorted(ACTIONS)),
                    **extra,
                )
            )
            return
        if not self.may_change:
            await self.send(
                self._error(
                    "authentication_required",
                    "Authentication required for commands: connect with the bearer token or a "
                    'sign-in cookie, or send {"type": "auth", "token": ...} first',
                    **extra,
                )
            )
            return
        try:
            data = await self._run(str(action), _params(message))
        except TicktapeError as exc:
            count_error(self.ws, exc)
            await self.send(self._error(exc.code, exc.message, command=action, **extra))
            return
        await self.send(
            {"type": "response", "status": "success", "command": action, "data": data, **extra}
        )

    async def _run(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        if action in START_ACTIONS:
            parsed = parse_start(_start_body(action, params), self.ws.app.state.strategies)
            limiter: CreateRateLimiter = self.ws.app.state.create_limiter
            limiter.take(self.ws.client.host if self.ws.client else "unknown")
            session = await start_parsed(self.ws.app, self.service, parsed, None)
            return started_answer(session)
        if action == "stop_execution":
            session_id = params.get("session_id")
            if session_id is not None and not isinstance(session_id, str):
                raise ValidationError("session_id must be a string", field="session_id")
            return await stop_session(self.service, session_id)
        page = await self.service.list_sessions(
            SessionQuery(statuses=ACTIVE_STATUSES, limit=MAX_LIST_LIMIT)
        )
        active = page.sessions
        return execution_status(active[0] if active else None, len(active))

    async def subscribe(self, stream: object, params: object, extra: dict[str, Any]) -> None:
        if stream not in STREAMS:
            await self.send(
                self._error(
                    "stream_not_supported",
                    f"stream {stream!r} is not served; ticktape serves "
                    + ", ".join(sorted(STREAMS)),
                    stream=stream,
                    **extra,
                )
            )
            return
        self.streams.add(str(stream))
        current = await self.current()
        await self.send(
            {
                "type": "response",
                "status": "subscribed",
                "stream": stream,
                "params": params,
                "session_id": current.id if current else None,
                **extra,
            }
        )
        if current is not None and stream == "execution_status":
            await self.send(
                {
                    "type": "data",
                    "stream": "execution_status",
                    "data": _status_data(current),
                    "session_id": current.id,
                }
            )

    async def publish(self, session: Session) -> None:
        if not self.streams:
            return
        data = _status_data(session)
        seen = self.versions.get(session.id)
        self.versions[session.id] = session.version
        self.versions.move_to_end(session.id)
        while len(self.versions) > VERSIONS_REMEMBERED:
            self.versions.popitem(last=False)
        if seen != session.version:
            await self.send({"type": "session_update", "data": data, "session_id": session.id})
        if "execution_status" in self.streams:
            await self.send(
                {
                    "type": "data",
                    "stream": "execution_status",
                    "data": data,
                    "session_id": session.id,
                }
            )
        if session.is_terminal:
            result = {
                "session_id": session.id,
                "status": data["status"],
                "error_message": data["error_message"],
                "command_type": session.kind.value,
                "mode": session.kind.value,
                "records_collected": session.stats.records_collected,
                "final_results": {"progress": data["progress"]},
            }
            await self.send(
                {
                    "type": "execution_result",
                    "stream": "execution_result",
                    "data": result,
                    "session_id": session.id,
                }
            )

    async def pump(self, sub: Subscription) -> None:
        while (session := await sub.next()) is not None:
            await self.publish(session)

    async def receive(self) -> None:
        while True:
            await self.handle(await self.ws.receive_text())


@router.websocket("/ws")
async def original_websocket(websocket: WebSocket) -> None:
    service: SessionService = websocket.app.state.service
    await websocket.accept()
    conn = _Connection(websocket, service)
    await conn.send(
        {
            "type": "status",
            "status": "connected",
            "client_id": conn.client_id,
            "server_time": _now(),
            "features": ["heartbeat", "subscriptions"],
            "reconnected": False,
            "version": PROTOCOL_VERSION,
        }
    )
    sub = await feed_for(websocket.app).subscribe()
    tasks = {
        asyncio.ensure_future(conn.receive()),
        asyncio.ensure_future(conn.pump(sub)),
        asyncio.ensure_future(sub.dropped.wait()),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sub.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    code = CLOSE_TOO_SLOW if sub.dropped.is_set() else CLOSE_GOING_AWAY if sub.ended.is_set() else 0
    if code:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await websocket.close(code)
