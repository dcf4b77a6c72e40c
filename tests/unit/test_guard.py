"""Host names, the token before the body, body size while reading, no echo, no secrets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.unit.conftest_api import FakeRuntime, Run, SyncAsgiTransport
from ticktape.api import create_app
from ticktape.api.guard import host_name
from ticktape.config import Settings
from ticktape.metrics import Metrics
from ticktape.redact import redact
from ticktape.service import SessionService
from ticktape.store.memory import MemoryStore

LIMIT = 4096
TOKEN = "s3cret-token"


def guard_app(**overrides: Any) -> FastAPI:
    settings = Settings(
        **{
            "store_url": "memory://",
            "instance_name": "guard",
            "max_body_bytes": LIMIT,
            "allowed_hosts": ("127.0.0.1", "localhost", "::1"),
            **overrides,
        }
    )
    store = MemoryStore()
    service = SessionService(store, FakeRuntime(store), settings, Metrics())
    return create_app(settings, service=service)


def client(run: Run[Any], app: FastAPI | None = None, **overrides: Any) -> httpx.Client:
    """A client of ``app`` (default: a new app with ``overrides``)."""
    app = app if app is not None else guard_app(**overrides)
    return httpx.Client(transport=SyncAsgiTransport(app, run), base_url="http://127.0.0.1:8765")


@pytest.fixture
def http(run: Run[Any]) -> Iterator[httpx.Client]:
    with client(run) as c:
        yield c


class Counting:
    """A streamed body (no Content-Length) that records how much of it was read."""

    def __init__(self, chunks: int, size: int = 1024) -> None:
        self.chunks, self.size, self.sent = chunks, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.sent += self.size
            yield b" " * self.size


def test_a_body_over_the_limit_by_content_length_is_refused_before_reading(
    http: httpx.Client,
) -> None:
    response = http.post("/api/sessions", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "TICKTAPE_MAX_BODY_BYTES" in error["message"]


def test_a_streamed_body_is_cut_off_as_soon_as_it_passes_the_limit(run: Run[Any]) -> None:
    app = guard_app()
    body = Counting(chunks=1000)  # 1 MB offered, the limit is 4 KB

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as c:
            return await c.post(
                "/api/sessions", content=body, headers={"Content-Type": "application/json"}
            )

    response = run(send())
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"
    # httpx's ASGI transport reads the whole stream up front; what matters is that the
    # server stops at the limit, which the 413 (not a 400 parse error) shows.


def test_the_token_is_checked_before_the_body_is_read(run: Run[Any]) -> None:
    app = guard_app(api_token=TOKEN)
    with client(run, app) as http:
        received: list[str] = []

        async def call() -> list[dict[str, Any]]:
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                received.append("body")
                return {"type": "http.request", "body": b"{}" * 10, "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "method": "POST",
                "path": "/api/sessions",
                "raw_path": b"/api/sessions",
                "query_string": b"",
                "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
                "scheme": "http",
                "server": ("127.0.0.1", 8765),
                "client": ("127.0.0.1", 5000),
                "http_version": "1.1",
                "root_path": "",
                "asgi": {"version": "3.0"},
            }
            await app(scope, receive, send)
            return sent

        sent = run(call())
        assert sent[0]["status"] == 401
        assert received == [], "the body was read before the token was checked"
        wrong = http.post("/api/sessions", json={}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "invalid bearer token" in wrong.text
        # A read stays open unless TICKTAPE_PROTECT_READS is set.
        assert http.get("/api/sessions").status_code == 200


def test_protect_reads_needs_the_token_for_every_read_but_the_probes(run: Run[Any]) -> None:
    with client(run, api_token=TOKEN, protect_reads=True) as http:
        for path in ("/api/sessions", "/metrics", "/docs", "/openapi.json", "/"):
            response = http.get(path)
            assert response.status_code == 401, path
            assert response.json()["error"]["code"] == "unauthorized"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert http.get("/api/sessions", headers=auth).status_code == 200
        assert http.get("/health").status_code == 200
        assert http.get("/ready").status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.", ""])
def test_a_host_not_allowed_is_refused(http: httpx.Client, host: str) -> None:
    response = http.get("/api/sessions", headers={"Host": host})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost", "[::1]:8765", "LOCALHOST:1"])
def test_loopback_names_are_served_by_default(http: httpx.Client, host: str) -> None:
    assert http.get("/health", headers={"Host": host}).status_code == 200


def test_configured_hosts_and_the_wildcard(run: Run[Any]) -> None:
    with client(run, allowed_hosts=("ticktape.internal",)) as http:
        assert http.get("/health", headers={"Host": "ticktape.internal:80"}).status_code == 200
        assert http.get("/health", headers={"Host": "localhost"}).status_code == 400
    with client(run, allowed_hosts=("*",)) as http:
        assert http.get("/health", headers={"Host": "anything.example"}).status_code == 200


def test_host_name_parsing() -> None:
    assert host_name("Example.COM:8765") == "example.com"
    assert host_name("[::1]:80") == "::1"
    assert host_name("::1") == "::1"


def test_error_messages_never_echo_unbounded_input(http: httpx.Client) -> None:
    huge = "A" * 3000  # under the body limit, far over what a message may quote
    for body in (
        {"kind": "collect", "symbols": [huge]},
        {"kind": huge, "symbols": ["BTC_USDT"]},
        {"kind": "collect", "symbols": ["BTC_USDT"], "duration": huge},
        {"kind": "collect", "symbols": ["BTC_USDT"], "data_types": [huge]},
        {"kind": "collect", "symbols": ["BTC_USDT"], huge: 1},
    ):
        response = http.post("/api/sessions", json=body)
        assert 400 <= response.status_code < 500
        assert len(response.text) < 600, response.text[:200]
    response = http.get("/api/sessions", params={"status": huge, "cursor": huge})
    assert response.status_code == 422 and len(response.text) < 600


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("questdb://admin:quest@db:8812?ilp=http://u:p4ss@db:9000", "p4ss"),
        ("questdb://admin:p@ss:w/rd#x@db:8812", "ss:w/rd#x"),
        ("questdb://db:8812?user=admin&password=hunter2&ilp=http://db:9000", "hunter2"),
        ("questdb://db:8812?ilp=http://db:9000&ilp_token=tok123", "tok123"),
        ("http::addr=db:9000;username=admin;password=quest;", "quest"),
    ],
)
def test_store_credentials_are_redacted_in_any_form(url: str, secret: str) -> None:
    shown = redact(url)
    assert secret not in shown and "***" in shown
    in_message = redact(f"could not open {url}: refused")
    assert secret not in in_message and in_message.startswith("could not open ")


def test_health_never_shows_the_store_password(run: Run[Any]) -> None:
    url = "questdb://admin:top@secret@db:8812?password=q1&ilp=http://db:9000"
    with client(run, store_url=url) as http:
        text = http.get("/health").text
        assert "top@secret" not in text and "q1" not in text and "secret" not in text


def test_questdb_credentials_can_come_from_the_environment_or_a_file(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ticktape.store.questdb import QuestDBAddress

    url = "questdb://db:8812?ilp=http://db:9000"
    assert QuestDBAddress.from_url(url).password == "quest"  # QuestDB's default
    monkeypatch.setenv("TICKTAPE_STORE_USER", "reader")
    monkeypatch.setenv("TICKTAPE_STORE_PASSWORD", "from-env")
    address = QuestDBAddress.from_url(url)
    assert (address.user, address.password) == ("reader", "from-env")
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    monkeypatch.setenv("TICKTAPE_STORE_PASSWORD_FILE", str(secret))
    assert QuestDBAddress.from_url(url).password == "from-file"
    assert QuestDBAddress.from_url("questdb://u:in-url@db:8812").password == "in-url"


def test_an_unknown_store_url_error_does_not_show_its_password() -> None:
    from ticktape.errors import ValidationError
    from ticktape.store import open_store

    with pytest.raises(ValidationError) as caught:
        open_store("postgres://admin:hunter2@db/x")
    assert "hunter2" not in str(caught.value)


def test_health_and_ready_report_a_store_that_does_not_answer(run: Run[Any]) -> None:
    """Any backend (QuestDB down looks like this): /health stays 200 and says so, /ready 503."""
    from ticktape.errors import StoreUnavailable
    from ticktape.testing import FaultyStore

    settings = Settings(store_url="memory://", instance_name="h", allowed_hosts=("localhost",))
    store = FaultyStore(MemoryStore())
    service = SessionService(store, FakeRuntime(store.inner), settings, Metrics())  # type: ignore[arg-type]
    app = create_app(settings, service=service)
    with httpx.Client(transport=SyncAsgiTransport(app, run), base_url="http://localhost") as http:
        store.fail("list_sessions", times=None, error=StoreUnavailable("cannot reach QuestDB"))
        store.fail("count_sessions", times=None, error=StoreUnavailable("cannot reach QuestDB"))
        health = http.get("/health")
        assert health.status_code == 200
        assert health.json()["store_ok"] is False
        assert "cannot reach QuestDB" in health.json()["store_error"]
        ready = http.get("/ready")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "store_unavailable"
        assert "ticktape_store_up 0.0" in http.get("/metrics").text
        store.clear()
        assert http.get("/ready").status_code == 200
        assert http.get("/health").json()["store_ok"] is True
