"""``GET /api/sessions/stream``: session changes pushed as Server-Sent Events.

Each change the instance's change feed reads from the store is one event::

    event: session
    data: {...the session, as GET /api/sessions/{id} answers it...}

The stream opens with ``event: ready`` (from then on every committed change is
sent) and carries a comment every :data:`KEEPALIVE_S` so proxies keep it open.
A client that does not keep up is disconnected — its response simply ends — and
may reconnect; the server never buffers more than ``TICKTAPE_PUSH_QUEUE_MAX``
updates for it.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from ticktape.api.models import session_out
from ticktape.api.push import ChangeFeed, Subscription, feed_for

router = APIRouter(tags=["sessions"])

KEEPALIVE_S = 15.0


class SessionEventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, feed: ChangeFeed) -> None:
        super().__init__(media_type=self.media_type)
        self._feed = feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = await self._feed.subscribe()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            await self._chunk(send, "event: ready\ndata: {}\n\n")
            tasks = {
                asyncio.ensure_future(self._pump(sub, send)),
                asyncio.ensure_future(self._disconnected(receive)),
                asyncio.ensure_future(sub.dropped.wait()),
            }
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if not sub.dropped.is_set():
                with contextlib.suppress(OSError):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            # A dropped client gets no end of body: the server closes its connection.
        finally:
            sub.close()

    @staticmethod
    async def _chunk(send: Send, text: str) -> None:
        await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

    async def _pump(self, sub: Subscription, send: Send) -> None:
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    session = await sub.next()
            except TimeoutError:
                await self._chunk(send, ": keepalive\n\n")
                continue
            if session is None:
                return
            payload = session_out(session).model_dump_json()
            await self._chunk(send, f"event: session\ndata: {payload}\n\n")

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


@router.get(
    "/api/sessions/stream",
    response_class=Response,
    responses={
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {  # one event: ``ready`` once, then ``session`` per change
                        "type": "object",
                        "properties": {
                            "event": {"type": "string", "enum": ["ready", "session"]},
                            "data": {"type": "string"},
                        },
                        "required": ["event", "data"],
                    }
                }
            },
            "description": "`event: session` with the session as JSON, for every change",
        }
    },
)
async def stream_sessions(request: Request) -> Response:
    """Every session change, as it is committed to the store (Server-Sent Events)."""
    return SessionEventStream(feed_for(request.app))
