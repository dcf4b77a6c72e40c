"""Helpers for the API and CLI unit tests (imported explicitly by those modules).

The app is served from a real :class:`SessionService` over the in-memory store,
with a :class:`FakeRuntime` in place of the supervisor: it records what the
service asks of it and, if told to, finishes stops the way an owner would, so
tests see real store transitions without runners. Requests run on the test's
own event loop (the ``run`` fixture of ``tests/conftest.py``) through httpx's
ASGI transport — no server, no threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import httpx
import numpy as np
from fastapi import FastAPI

from ticktape.api import create_app
from ticktape.config import Settings
from ticktape.domain import Reason, Session, SessionStatus
from ticktape.metrics import Metrics
from ticktape.service import SessionService
from ticktape.store.memory import MemoryStore
from ticktape.ticks import BookBatch, TradeBatch

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

OWNER = "test-instance/0001"
BASE_URL = "http://ticktape.test"


class FakeRuntime:
    """Stands in for the supervisor: records launches and stop requests."""

    def __init__(self, store: MemoryStore, *, finish_stops: bool = True) -> None:
        self.store = store
        self.finish_stops = finish_stops
        self.launched: list[str] = []
        self.stop_requests: list[str] = []
        self.running: list[str] = []  # what running_ids reports (it runs nothing itself)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def owner(self) -> str:
        return OWNER

    @property
    def running_ids(self) -> list[str]:
        return list(self.running)

    def start_lease_until(self) -> datetime | None:
        return None  # it runs nothing: a session it launches stays pending

    def launch(self, session: Session) -> None:
        if session.id not in self.launched:  # like the supervisor: a no-op while it runs
            self.launched.append(session.id)

    def request_stop(self, session_id: str) -> None:
        self.stop_requests.append(session_id)
        if self.finish_stops:
            task = asyncio.get_running_loop().create_task(self._finish(session_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _finish(self, session_id: str) -> None:
        session = await self.store.sessions.get_session(session_id)
        if session.status is SessionStatus.STOPPING:
            await self.store.sessions.transition(
                session_id,
                expected_version=session.version,
                to_status=SessionStatus.STOPPED,
                actor=OWNER,
                reason=Reason.USER_STOP,
            )


class SyncAsgiTransport(httpx.BaseTransport):
    """A synchronous httpx transport that drives an ASGI app on the test's event loop."""

    def __init__(self, app: FastAPI, run: Run[Any]) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._run = run

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def call() -> httpx.Response:
            response = await self._inner.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(
                response.status_code, headers=response.headers, content=content, request=request
            )

        result: httpx.Response = self._run(call())
        return result


@dataclass
class ApiHarness:
    app: FastAPI
    store: MemoryStore
    runtime: FakeRuntime
    service: SessionService
    settings: Settings
    http: httpx.Client
    run: Run[Any]
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def create(self, **body: Any) -> dict[str, Any]:
        payload = {"kind": "collect", "symbols": ["BTC_USDT"], **body}
        response = self.http.post("/api/sessions", json=payload, headers=self.auth)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    @property
    def auth(self) -> dict[str, str]:
        token = self.settings.api_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def stopped(self, **body: Any) -> dict[str, Any]:
        """A session that is already ``stopped``."""
        created = self.create(**body)
        response = self.http.post(
            f"/api/sessions/{created['id']}/stop?wait=true&timeout=5", headers=self.auth
        )
        assert response.status_code == 200, response.text
        stopped: dict[str, Any] = response.json()
        assert stopped["status"] == "stopped"
        return stopped

    def write_ticks(
        self,
        session_id: str,
        symbol: str = "BTC_USDT",
        n: int = 10,
        t0_us: int = 1_700_000_000_000_000,
    ) -> None:
        ts = np.arange(n, dtype=np.int64) * 1_000_000 + t0_us
        trades = TradeBatch(
            session_id,
            symbol,
            ts,
            np.arange(1, n + 1, dtype=np.int64),
            np.full(n, 100.0),
            np.full(n, 0.5),
            np.ones(n, dtype=np.int8),
        )
        levels = np.full((n, 2), 1.0)
        books = BookBatch(session_id, symbol, ts, levels * 99, levels, levels * 101, levels)
        self.run(self.store.ticks.write([trades, books], owner=OWNER))

    def close(self) -> None:
        self.http.close()


def make_harness(
    run: Run[Any], *, token: str | None = None, finish_stops: bool = True
) -> ApiHarness:
    settings = Settings(
        store_url="memory://",
        instance_name="test-instance",
        api_token=token,
        allowed_hosts=("ticktape.test",),
    )
    store = MemoryStore()
    metrics = Metrics()
    runtime = FakeRuntime(store, finish_stops=finish_stops)
    service = SessionService(store, runtime, settings, metrics)
    app = create_app(settings, service=service, metrics=metrics)
    http = httpx.Client(transport=SyncAsgiTransport(app, run), base_url=BASE_URL)
    return ApiHarness(app, store, runtime, service, settings, http, run)
