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
answered ``{"type": "status", "status": "pong"}``. Sessions are started and
stopped over HTTP, as the original frontend does: a ``command`` message is
refused, as are streams ticktape does not have (market data, indicators,
signals). A client that does not keep up is disconnected (close code 1013);
it may reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, WebSocket

from ticktape.api.compat._answers import PROTOCOL_VERSION, progress, session_entry
from ticktape.api.push import Subscription, feed_for
from ticktape.domain import ACTIVE_STATUSES, Session, utcnow
from ticktape.service import SessionService
from ticktape.store.base import SessionQuery

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


class _Connection:
    def __init__(self, websocket: WebSocket, service: SessionService) -> None:
        self.ws = websocket
        self.service = service
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
        elif kind == "command":
            await self.send(
                self._error(
                    "not_supported",
                    "session commands are sent over HTTP: "
                    "POST /sessions/start, POST /sessions/stop",
                    **extra,
                )
            )
        else:
            await self.send(
                self._error("unknown_message_type", f"unknown message type {kind!r}", **extra)
            )

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
            await asyncio.wait_for(websocket.close(code), CLOSE_TIMEOUT_S)
