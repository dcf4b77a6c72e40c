"""``ticktape.api.hot`` answers POST /api/sessions and GET /api/sessions/{id} as FastAPI does.

Two apps over one service: the default one (hot routes) and one with
``hot_routes=False`` (every request through FastAPI). The same requests to both
must get the same status, headers that matter and JSON; the hot path must really
have served the plain ones, and handed the rest to FastAPI.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from ticktape.api import create_app
from ticktape.api.limits import CreateRateLimiter
from ticktape.config import Settings
from ticktape.metrics import Metrics
from ticktape.service import SessionService
from ticktape.store.memory import MemoryStore

from .conftest_api import BASE_URL, FakeRuntime, Run, SyncAsgiTransport

VOLATILE = {"id", "created_at", "lease_expires_at"}  # differ between two creates


# bodies CreateSessionRequest accepts and the domain refuses (422 from the hot path)
HOT_PATH_ERRORS = {
    b'{"kind": "collect"}',
    b'{"kind": "collect", "symbols": ["BTC_USDT"], "strategy": "x"}',
    b'{"kind": "collect", "symbols": ["BAD SYMBOL"]}',
}


class ReachedFastAPI:
    """Outermost of FastAPI's user middleware: records each request that reached it."""

    def __init__(self, app: ASGIApp, reached: list[str]) -> None:
        self.app = app
        self.reached = reached

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.reached.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


class Pair:
    def __init__(self, run: Run[Any], **settings: Any) -> None:
        self.settings = Settings(
            store_url="memory://",
            instance_name="test-instance",
            allowed_hosts=("ticktape.test",),
            **settings,
        )
        store = MemoryStore()
        metrics = Metrics()
        self.service = SessionService(store, FakeRuntime(store), self.settings, metrics)
        self.hot_served: list[str] = []
        self._reached: list[str] = []  # requests FastAPI's stack saw (the hot app's)
        self.hot = self._client(run, hot_routes=True, metrics=metrics)
        self.plain = self._client(run, hot_routes=False, metrics=metrics)

    def _client(self, run: Run[Any], *, hot_routes: bool, metrics: Metrics) -> httpx.Client:
        app = create_app(
            self.settings, service=self.service, metrics=metrics, hot_routes=hot_routes
        )
        # Each app its own limiter, both on one stopped clock: a Retry-After computed
        # from the monotonic clock differs between the two requests when a loaded
        # machine delays the second by a second (it failed so at load ~23).
        app.state.create_limiter = CreateRateLimiter(
            self.settings.create_rate_per_min, clock=lambda: 1000.0
        )
        if hot_routes:
            app.add_middleware(ReachedFastAPI, reached=self._reached)
        return httpx.Client(transport=SyncAsgiTransport(app, run), base_url=BASE_URL)

    def request_hot(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self._reached.clear()
        response = self.hot.request(method, path, **kwargs)
        if not self._reached:
            self.hot_served.append(f"{method} {path}")
        return response

    def both(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
        return (
            self.request_hot(method, path, **kwargs),
            self.plain.request(method, path, **kwargs),
        )

    def close(self) -> None:
        self.hot.close()
        self.plain.close()


@pytest.fixture
def served(pair: Pair) -> list[str]:
    """What the hot path answered itself ('POST /api/sessions', 'GET /api/sessions/…'):
    the hot requests that did not reach FastAPI's stack."""
    return pair.hot_served


@pytest.fixture
def pair(run: Run[Any]) -> Iterator[Pair]:
    p = Pair(run)
    yield p
    p.close()


def same(hot: httpx.Response, plain: httpx.Response, *, ignore: set[str] = frozenset()) -> None:
    assert hot.status_code == plain.status_code, (hot.text, plain.text)
    assert hot.headers["content-type"] == plain.headers["content-type"]
    assert hot.headers.get("retry-after") == plain.headers.get("retry-after")
    body_hot, body_plain = hot.json(), plain.json()
    if ignore:
        body_hot = {k: v for k, v in body_hot.items() if k not in ignore}
        body_plain = {k: v for k, v in body_plain.items() if k not in ignore}
    assert body_hot == body_plain


def test_create_and_get_answer_alike_and_the_hot_path_served_them(
    pair: Pair, served: list[str]
) -> None:
    body = {"kind": "collect", "symbols": ["BTC_USDT", "ETH_USDT"], "rate_per_s": 3, "seed": 7}
    hot, plain = pair.both("POST", "/api/sessions", json=body)
    same(hot, plain, ignore=VOLATILE)
    assert hot.status_code == 201
    assert served == ["POST /api/sessions"]
    for sid in (hot.json()["id"], plain.json()["id"]):
        got_hot, got_plain = pair.both("GET", f"/api/sessions/{sid}")
        assert got_hot.status_code == 200
        assert got_hot.content == got_plain.content  # byte for byte
        assert got_hot.json()["id"] == sid
    assert served[1:] == [
        f"GET /api/sessions/{hot.json()['id']}",
        f"GET /api/sessions/{plain.json()['id']}",
    ]


def test_an_unknown_session_is_the_same_404(pair: Pair, served: list[str]) -> None:
    hot, plain = pair.both("GET", "/api/sessions/00000000-0000-4000-8000-000000000000")
    same(hot, plain)
    assert hot.status_code == 404
    assert served == ["GET /api/sessions/00000000-0000-4000-8000-000000000000"]


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"kind": "collect", "symbols": ["BTC_USDT"], "nope": 1}', None),  # unknown field
        (b'{"kind": "collect", "symbols": "BTC_USDT"}', None),  # wrong type
        (b'{"kind": "collect"}', None),  # symbols missing (the domain's check)
        (b'{"kind": "collect", "symbols": ["BTC_USDT"], "strategy": "x"}', None),
        (b'{"kind": "collect", "symbols": [', None),  # not JSON
        (b"[1, 2]", None),  # not an object
        (b"", None),  # no body
        (b'{"kind": "backtest", "source_session": "nope", "strategy": "x"}', None),
        (b'{"kind": "collect", "symbols": ["BTC_USDT"]}', {"content-type": "text/plain"}),
        (b'{"kind": "collect", "symbols": ["BTC_USDT"]}', {"idempotency-key": "k" * 201}),
        (b'{"kind": "collect", "symbols": ["BAD SYMBOL"]}', None),
    ],
)
def test_bad_creates_get_the_same_error(
    pair: Pair, served: list[str], content: bytes, headers: dict[str, str] | None
) -> None:
    sent = {"content-type": "application/json", **(headers or {})}
    hot, plain = pair.both("POST", "/api/sessions", content=content, headers=sent)
    assert hot.status_code >= 400
    same(hot, plain)
    # a body the model takes but the domain refuses is the hot path's; the rest FastAPI's
    hot_path = content in HOT_PATH_ERRORS and headers is None
    assert served == (["POST /api/sessions"] if hot_path else [])


def test_the_idempotency_key_gives_back_one_session(pair: Pair, served: list[str]) -> None:
    body = {"kind": "collect", "symbols": ["BTC_USDT"]}
    key = {"Idempotency-Key": "abc"}
    first = pair.request_hot("POST", "/api/sessions", json=body, headers=key)
    again_plain = pair.plain.post("/api/sessions", json=body, headers=key)
    again_hot = pair.request_hot("POST", "/api/sessions", json=body, headers=key)
    assert first.status_code == again_hot.status_code == again_plain.status_code == 201
    assert first.json()["id"] == again_hot.json()["id"] == again_plain.json()["id"]
    other = {"kind": "collect", "symbols": ["ETH_USDT"]}
    hot, plain = pair.both("POST", "/api/sessions", json=other, headers={"Idempotency-Key": "abc"})
    same(hot, plain)
    assert hot.status_code == 409
    assert served == ["POST /api/sessions"] * 3


def test_limits_answer_alike(run: Run[Any]) -> None:
    p = Pair(run, max_symbols_per_session=1, create_rate_per_min=3)
    try:
        two = {"kind": "collect", "symbols": ["BTC_USDT", "ETH_USDT"]}
        hot, plain = p.both("POST", "/api/sessions", json=two)  # 422 naming the setting
        same(hot, plain)
        assert hot.status_code == 422
        one = {"kind": "collect", "symbols": ["BTC_USDT"]}
        # each app has its own rate limiter of 3 a minute; the 422 above took one
        for _ in range(2):
            hot, plain = p.both("POST", "/api/sessions", json=one)
            same(hot, plain, ignore=VOLATILE)
            assert hot.status_code == 201
        hot, plain = p.both("POST", "/api/sessions", json=one)
        same(hot, plain)
        assert hot.status_code == 429
        assert hot.headers["retry-after"]
    finally:
        p.close()


def test_the_guard_still_comes_first(run: Run[Any]) -> None:
    p = Pair(run, api_token="s3cret")
    try:
        one = {"kind": "collect", "symbols": ["BTC_USDT"]}
        hot, plain = p.both("POST", "/api/sessions", json=one)
        same(hot, plain)
        assert hot.status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        hot, plain = p.both("POST", "/api/sessions", json=one, headers=auth)
        same(hot, plain, ignore=VOLATILE)
        assert hot.status_code == 201
    finally:
        p.close()
