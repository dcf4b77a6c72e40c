"""The HTTP API over the in-memory store: status codes, bodies and error messages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.oracle import Recording, StoredTicks, assert_stats_match_tally, check_recording
from ticktape import errors
from ticktape.api import create_app
from ticktape.api.app import dashboard_dir, redact_url
from ticktape.config import Settings

from .conftest_api import ApiHarness, Run, make_harness

SESSION_KEYS = {
    "id",
    "kind",
    "status",
    "symbols",
    "exchange",
    "data_types",
    "config",
    "created_at",
    "started_at",
    "ended_at",
    "reason",
    "stats",
    "owner",
    "lease_expires_at",
    "version",
    "deleted",
}


@pytest.fixture
def api(run: Run[Any]) -> Iterator[ApiHarness]:
    harness = make_harness(run)
    yield harness
    harness.close()


@pytest.fixture
def http(api: ApiHarness) -> httpx.Client:
    return api.http


def assert_error(
    response: httpx.Response, status: int, code: str | None = None, mentions: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert {"code", "message"} <= set(error)
    if code is not None:
        assert error["code"] == code
    if mentions is not None:
        assert mentions in error["message"], error["message"]
    return error


# --------------------------------------------------------------------------- create


def test_create_returns_the_stored_session_and_it_is_readable_at_once(
    api: ApiHarness, http: httpx.Client
) -> None:
    response = http.post("/api/sessions", json={"kind": "collect", "symbols": ["BTC_USDT"]})
    assert response.status_code == 201
    session = response.json()
    assert set(session) == SESSION_KEYS
    assert session["status"] == "pending"
    assert session["exchange"] == "sim"
    assert session["data_types"] == ["trades", "orderbook"]
    assert session["config"] == {
        "duration_s": None,
        "book_depth": 3,
        "seed": 0,
        "rate_per_s": 20.0,
        "book_every": 5,
        "on_owner_loss": "fail",
        "ignored": {},
        "strategy_run": None,
    }
    assert session["stats"] == {
        "trades": 0,
        "orderbook": 0,
        "records_collected": 0,
        "errors": 0,
        "ticks_total": None,  # backtests only
        "progress": None,
        "eta_s": None,
    }
    assert session["created_at"].endswith("Z") and session["ended_at"] is None
    assert api.runtime.launched == [session["id"]]
    got = http.get(f"/api/sessions/{session['id']}")
    assert got.status_code == 200 and got.json() == session


def test_create_with_every_option(http: httpx.Client) -> None:
    body = {
        "kind": "collect",
        "symbols": ["BTC_USDT", "ETH_USDT"],
        "exchange": "sim",
        "data_types": ["trades"],
        "duration": "2m",
        "book_depth": 7,
        "seed": 42,
        "rate_per_s": 0,
        "book_every": 9,
        "on_owner_loss": "resume",
    }
    session = http.post("/api/sessions", json=body).json()
    assert session["symbols"] == ["BTC_USDT", "ETH_USDT"]
    assert session["data_types"] == ["trades"]
    assert session["config"] == {
        "duration_s": 120.0,
        "book_depth": 7,
        "seed": 42,
        "rate_per_s": 0.0,
        "book_every": 9,
        "on_owner_loss": "resume",
        "ignored": {},
        "strategy_run": None,
    }


def test_same_idempotency_key_gives_the_same_session(api: ApiHarness, http: httpx.Client) -> None:
    body = {"kind": "collect", "symbols": ["BTC_USDT"]}
    first = http.post("/api/sessions", json=body, headers={"Idempotency-Key": "k-1"})
    again = http.post("/api/sessions", json=body, headers={"Idempotency-Key": "k-1"})
    other = http.post("/api/sessions", json=body, headers={"Idempotency-Key": "k-2"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert api.runtime.launched == [first.json()["id"], other.json()["id"]]


@pytest.mark.parametrize(
    ("change", "field", "mentions"),
    [
        ({"kind": "nope"}, "kind", "unknown session kind 'nope'"),
        ({"symbols": []}, "symbols", "non-empty"),
        ({"symbols": ["btc_usdt"]}, "symbols", "invalid symbol 'btc_usdt'"),
        ({"symbols": ["BTCUSDT"]}, "symbols", "invalid symbol"),
        ({"symbols": ["BTC_USDT", "BTC_USDT"]}, "symbols", "duplicate symbol"),
        ({"symbols": [f"S{i}_USDT" for i in range(101)]}, "symbols", "at most 100 symbols"),
        ({"data_types": []}, "data_types", "non-empty"),
        ({"data_types": ["ticks"]}, "data_types", "unknown data type 'ticks'"),
        ({"data_types": ["trades", "trades"]}, "data_types", "duplicate data type"),
        ({"duration": "10x"}, "duration", "invalid duration '10x'"),
        ({"duration": "0s"}, "duration", "greater than zero"),
        ({"duration": "31d"}, "duration", "at most 30d"),
        ({"book_depth": 0}, "book_depth", "book_depth must be"),
        ({"book_depth": 21}, "book_depth", "book_depth must be"),
        ({"seed": -1}, "seed", "seed must be"),
        ({"rate_per_s": -1}, "rate_per_s", "rate_per_s must be"),
        ({"rate_per_s": 2_000_000}, "rate_per_s", "rate_per_s must be"),
        ({"book_every": 0}, "book_every", "book_every must be"),
        ({"on_owner_loss": "explode"}, "on_owner_loss", "on_owner_loss must be"),
        ({"exchange": "kraken"}, "exchange", "unknown exchange 'kraken'"),
        ({"exchange": "binance"}, "symbols", "invalid symbol 'BTC_USDT' for binance"),
        ({"exchange": "mexc", "symbols": ["BTCUSDT"]}, "symbols", "invalid symbol 'BTCUSDT'"),
    ],
)
def test_each_domain_rule_is_a_422_naming_the_field(
    api: ApiHarness, http: httpx.Client, change: dict[str, Any], field: str, mentions: str
) -> None:
    body = {"kind": "collect", "symbols": ["BTC_USDT"], **change}
    error = assert_error(http.post("/api/sessions", json=body), 422, "validation_error", mentions)
    assert error["field"] == field
    assert api.runtime.launched == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"symbols": "BTC_USDT"}, "symbols"),
        ({"symbols": ["BTC_USDT", 3]}, "symbols[1]"),
        ({"kind": 1}, "kind"),
        ({"book_depth": "3"}, "book_depth"),
        ({"book_depth": 3.5}, "book_depth"),
        ({"book_depth": True}, "book_depth"),
        ({"seed": 1.5}, "seed"),
        ({"rate_per_s": "fast"}, "rate_per_s"),
        ({"duration": 30}, "duration"),
        ({"data_types": "trades"}, "data_types"),
        ({"on_owner_loss": None}, "on_owner_loss"),
    ],
)
def test_wrong_json_types_are_422_naming_the_field(
    http: httpx.Client, change: dict[str, Any], field: str
) -> None:
    body = {"kind": "collect", "symbols": ["BTC_USDT"], **change}
    error = assert_error(http.post("/api/sessions", json=body), 422, "validation_error")
    assert error["field"] == field
    assert error["message"].startswith(f"{field}: ")


def test_missing_required_fields_are_named(http: httpx.Client) -> None:
    error = assert_error(
        http.post("/api/sessions", json={"kind": "collect"}),
        422,
        "validation_error",
        "symbols is required",
    )
    assert error["field"] == "symbols"
    both = assert_error(http.post("/api/sessions", json={}), 422)
    assert "kind is required" in both["message"]  # symbols: not for a backtest


def test_unknown_fields_are_refused(http: httpx.Client) -> None:
    body = {"kind": "collect", "symbols": ["BTC_USDT"], "colour": "blue"}
    error = assert_error(
        http.post("/api/sessions", json=body), 422, "validation_error", "unknown field 'colour'"
    )
    assert error["field"] == "colour"


def test_malformed_json_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/api/sessions",
        content=b'{"kind": "collect", ',
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, "malformed_json", "not valid JSON")


@pytest.mark.parametrize("raw", [b"[1, 2]", b"null", b'"collect"'])
def test_json_that_is_not_an_object_is_422(http: httpx.Client, raw: bytes) -> None:
    response = http.post("/api/sessions", content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 422, "validation_error", "must be a JSON object")


def test_a_body_without_json_content_type_says_how_to_send_it(http: httpx.Client) -> None:
    response = http.post(
        "/api/sessions", content=b'{"kind": "collect"}', headers={"Content-Type": "text/plain"}
    )
    assert_error(response, 422, "validation_error", "Content-Type: application/json")
    assert_error(http.post("/api/sessions"), 422, "validation_error", "body is required")


def test_oversized_idempotency_key_is_refused(http: httpx.Client) -> None:
    response = http.post(
        "/api/sessions",
        json={"kind": "collect", "symbols": ["BTC_USDT"]},
        headers={"Idempotency-Key": "k" * 201},
    )
    assert assert_error(response, 422)["field"] == "idempotency-key"


# --------------------------------------------------------------------------- read


def test_unknown_session_is_404_everywhere(http: httpx.Client) -> None:
    for method, path in [
        ("GET", "/api/sessions/nope"),
        ("GET", "/api/sessions/nope/events"),
        ("GET", "/api/sessions/nope/trades"),
        ("GET", "/api/sessions/nope/orderbook"),
        ("POST", "/api/sessions/nope/stop"),
        ("DELETE", "/api/sessions/nope"),
    ]:
        assert_error(http.request(method, path), 404, "session_not_found", "'nope'")


def test_list_is_newest_first_with_filters(api: ApiHarness, http: httpx.Client) -> None:
    a = api.create(symbols=["BTC_USDT"])
    b = api.stopped(symbols=["ETH_USDT"])
    c = api.create(symbols=["ETH_USDT", "SOL_USDT"])

    def ids(query: str) -> list[str]:
        response = http.get(f"/api/sessions{query}")
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["sessions"]]

    assert ids("") == [c["id"], b["id"], a["id"]]
    assert ids("?status=pending") == [c["id"], a["id"]]
    assert ids("?status=stopped&status=pending") == [c["id"], b["id"], a["id"]]
    assert ids("?status=stopped,running") == [b["id"]]
    assert ids("?symbol=ETH_USDT") == [c["id"], b["id"]]
    assert ids("?kind=collect&symbol=SOL_USDT") == [c["id"]]


def test_list_pages_with_a_cursor(api: ApiHarness, http: httpx.Client) -> None:
    created = [api.create()["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = http.get("/api/sessions", params=params).json()
        seen += [s["id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created[::-1]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("status=bogus", "status"),
        ("kind=robot", "kind"),
        ("cursor=%21%21", "cursor"),
        ("include_deleted=maybe", "include_deleted"),
    ],
)
def test_bad_list_parameters_are_422(http: httpx.Client, query: str, field: str) -> None:
    error = assert_error(http.get(f"/api/sessions?{query}"), 422)
    assert error["field"] == field
    assert field in error["message"] or "cursor" in error["message"]


def test_events_tell_the_history(api: ApiHarness, http: httpx.Client) -> None:
    session = api.stopped()
    events = http.get(f"/api/sessions/{session['id']}/events").json()["events"]
    assert [(e["seq"], e["from_status"], e["to_status"]) for e in events] == [
        (1, None, "pending"),
        (2, "pending", "stopping"),
        (3, "stopping", "stopped"),
    ]
    assert set(events[0]) == {"seq", "at", "from_status", "to_status", "actor", "reason", "detail"}
    assert events[1]["reason"] == "user_stop"


# --------------------------------------------------------------------------- stop, delete


def test_stop_without_wait_answers_stopping_and_wakes_the_runtime(run: Run[Any]) -> None:
    api = make_harness(run, finish_stops=False)
    session = api.create()
    response = api.http.post(f"/api/sessions/{session['id']}/stop")
    assert response.status_code == 200
    assert response.json()["status"] == "stopping"
    assert api.runtime.stop_requests == [session["id"]]
    again = api.http.post(f"/api/sessions/{session['id']}/stop")
    assert again.json()["status"] == "stopping"
    assert again.json()["version"] == response.json()["version"]


def test_stop_with_wait_answers_the_terminal_session(api: ApiHarness) -> None:
    session = api.stopped()
    assert session["ended_at"] is not None
    again = api.http.post(f"/api/sessions/{session['id']}/stop?wait=true")
    assert again.status_code == 200 and again.json() == session


def test_stop_that_does_not_finish_in_time_is_504(run: Run[Any]) -> None:
    api = make_harness(run, finish_stops=False)
    session = api.create()
    response = api.http.post(f"/api/sessions/{session['id']}/stop?wait=true&timeout=0.1")
    assert_error(response, 504, "stop_timeout", "still 'stopping'")
    assert api.http.get(f"/api/sessions/{session['id']}").json()["status"] == "stopping"


@pytest.mark.parametrize("query", ["timeout=0", "timeout=301", "wait=perhaps"])
def test_bad_stop_parameters_are_422(api: ApiHarness, query: str) -> None:
    session = api.create()
    assert_error(api.http.post(f"/api/sessions/{session['id']}/stop?{query}"), 422)


def test_delete_only_terminal_sessions_and_hide_them(api: ApiHarness, http: httpx.Client) -> None:
    active = api.create()
    assert_error(
        http.delete(f"/api/sessions/{active['id']}"),
        409,
        "session_conflict",
        "stop it before deleting",
    )
    done = api.stopped()
    deleted = http.delete(f"/api/sessions/{done['id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert http.delete(f"/api/sessions/{done['id']}").status_code == 200  # idempotent
    listed = [s["id"] for s in http.get("/api/sessions").json()["sessions"]]
    assert listed == [active["id"]]
    everything = http.get("/api/sessions?include_deleted=true").json()["sessions"]
    assert {s["id"] for s in everything} == {active["id"], done["id"]}
    assert http.get(f"/api/sessions/{done['id']}").json()["deleted"] is True


# --------------------------------------------------------------------------- data


def test_trades_and_orderbook_ranges(api: ApiHarness, http: httpx.Client) -> None:
    session = api.create(symbols=["BTC_USDT", "ETH_USDT"])
    api.write_ticks(session["id"], "BTC_USDT", n=10)
    api.write_ticks(session["id"], "ETH_USDT", n=4)
    base = f"/api/sessions/{session['id']}"
    trades = http.get(f"{base}/trades").json()
    assert trades["count"] == 14 == len(trades["trades"])
    fields = {"symbol", "ts", "trade_id", "price", "qty", "side", "recv"}
    assert set(trades["trades"][0]) == fields
    assert trades["trades"][0]["side"] == "buy"
    assert trades["trades"][0]["recv"] is None  # written without receive times
    assert http.get(f"{base}/trades?symbol=ETH_USDT").json()["count"] == 4
    assert http.get(f"{base}/trades?limit=3").json()["count"] == 3
    window = {"start": "2023-11-14T22:13:22Z", "end": "2023-11-14T22:13:25+00:00"}
    ranged = http.get(f"{base}/trades", params={**window, "symbol": "BTC_USDT"}).json()
    assert [t["trade_id"] for t in ranged["trades"]] == [3, 4, 5]
    naive = http.get(
        f"{base}/trades",
        params={"start": "2023-11-14T22:13:22", "end": "2023-11-14T22:13:25", "symbol": "BTC_USDT"},
    ).json()
    assert naive == ranged
    books = http.get(f"{base}/orderbook?symbol=BTC_USDT&limit=2").json()
    assert books["count"] == 2
    assert books["orderbook"][0]["bids"] == [[99.0, 1.0], [99.0, 1.0]]
    assert books["orderbook"][0]["asks"] == [[101.0, 1.0], [101.0, 1.0]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("start=yesterday", "start"),
        ("start=2024-01-02T00:00:00Z&end=2024-01-01T00:00:00Z", "end"),
    ],
)
def test_bad_data_parameters_are_422(api: ApiHarness, query: str, field: str) -> None:
    session = api.create()
    for kind in ("trades", "orderbook"):
        error = assert_error(api.http.get(f"/api/sessions/{session['id']}/{kind}?{query}"), 422)
        assert error["field"] == field


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.ValidationError("bad", field="x"), 422),
        (errors.UnsupportedError("later"), 422),
        (errors.SessionNotFound("s"), 404),
        (errors.SessionConflict("busy", session_id="s", status="running"), 409),
        (errors.InvalidTransition("s", "stopped", "running"), 409),
        (errors.TransitionRace("s", 3), 409),
        (errors.LeaseLost("s", "me"), 409),
        (errors.StoreError("disk on fire"), 503),
        (errors.StoreUnavailable("no database"), 503),
        (errors.StoreBusy("locked"), 503),
        (errors.StopTimeout("s", "stopping", 1.0), 504),
        (errors.Unauthorized("who are you"), 401),
    ],
)
def test_every_ticktape_error_has_its_status(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch, exc: errors.TicktapeError, status: int
) -> None:
    async def failing(session_id: str) -> None:
        raise exc

    monkeypatch.setattr(api.service, "get", failing)
    error = assert_error(api.http.get("/api/sessions/s"), status, exc.code, exc.message)
    assert "Traceback" not in error["message"]


def test_unexpected_exception_is_a_generic_logged_500(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(session_id: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.service, "get", broken)
    with caplog.at_level(logging.ERROR, logger="ticktape.api.errors"):
        error = assert_error(api.http.get("/api/sessions/s"), 500, "internal_error")
    assert "secret" not in error["message"]
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_unknown_routes_and_methods(http: httpx.Client) -> None:
    assert_error(http.get("/api/nothing-here"), 404, "not_found", "/api/nothing-here")
    response = http.put("/api/sessions", json={})
    assert_error(response, 405, "method_not_allowed", "PUT")
    assert "POST" in response.headers["allow"]


# --------------------------------------------------------------------------- token


@pytest.fixture
def locked(run: Run[Any]) -> Iterator[ApiHarness]:
    harness = make_harness(run, token="s3cret")
    yield harness
    harness.close()


def test_mutations_need_the_bearer_token(locked: ApiHarness) -> None:
    http = locked.http
    body = {"kind": "collect", "symbols": ["BTC_USDT"]}
    missing = http.post("/api/sessions", json=body)
    assert_error(missing, 401, "unauthorized", "Bearer")
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = http.post("/api/sessions", json=body, headers={"Authorization": "Bearer nope"})
    assert_error(wrong, 401, "unauthorized", "invalid bearer token")
    basic = http.post("/api/sessions", json=body, headers={"Authorization": "Basic s3cret"})
    assert_error(basic, 401, "unauthorized")
    created = locked.create()  # with the right token
    assert http.get(f"/api/sessions/{created['id']}").status_code == 200  # reads stay open
    assert http.get("/api/sessions").status_code == 200
    assert_error(http.post(f"/api/sessions/{created['id']}/stop"), 401)
    assert_error(http.delete(f"/api/sessions/{created['id']}"), 401)
    legacy = http.post("/sessions/stop", json={"session_id": created["id"]})
    assert legacy.status_code == 401 and legacy.json()["error_code"] == "unauthorized"
    assert locked.runtime.stop_requests == []


def test_every_post_and_delete_route_is_guarded(locked: ApiHarness) -> None:
    paths = locked.http.get("/openapi.json").json()["paths"]
    guarded = [
        (method.upper(), path)
        for path, operations in paths.items()
        for method in operations
        if method in {"post", "delete", "put", "patch"}
        and not path.startswith("/api/v1/auth/")  # sign-in itself; it checks its own cookie
    ]
    assert len(guarded) == 6
    for method, path in guarded:
        response = locked.http.request(method, path.replace("{session_id}", "x"), json={})
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "unauthorized"


# --------------------------------------------------------------------------- system


def test_health_metrics_dashboard_and_docs(api: ApiHarness, http: httpx.Client) -> None:
    assert http.get("/health").json() == {
        "status": "ok",
        "instance": "test-instance",
        "store": "memory://",
        "store_ok": True,
        "store_error": None,
    }
    assert http.get("/ready").json() == {"status": "ready"}
    api.create()
    api.stopped()
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'ticktape_sessions{status="pending"} 1.0' in metrics.text
    assert 'ticktape_sessions{status="stopped"} 1.0' in metrics.text
    page = http.get("/")
    assert "text/html" in page.headers["content-type"]
    if dashboard_dir() is not None:  # built by scripts/install (npm run build)
        assert page.status_code == 200 and 'src="/assets/app.js"' in page.text
        assert http.get("/assets/app.js").status_code == 200
    else:  # no Node.js where this was installed: the page says so (tests/unit/test_api_dashboard)
        assert page.status_code == 503 and "dashboard is not built" in page.text
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/api/sessions", "/sessions/start", "/api/data-collection/sessions"} <= set(paths)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "questdb://admin:quest@db:8812?ilp=http://u:p@db:9000",
            "questdb://admin:***@db:8812?ilp=http://u:***@db:9000",
        ),
        ("sqlite:///./ticktape.db", "sqlite:///./ticktape.db"),
        ("questdb://db:8812", "questdb://db:8812"),
    ],
)
def test_store_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


DATA_DEADLINE_S = 10.0


def test_the_real_supervisor_runs_and_stops_a_session(run: Run[Any]) -> None:
    settings = Settings(
        store_url="memory://", instance_name="unit", heartbeat_interval_s=0.1, lease_s=2.0
    )
    app = create_app(settings)

    async def scenario() -> tuple[dict[str, Any], int]:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost"
            ) as client,
        ):
            created = await client.post(
                "/api/sessions",
                json={"kind": "collect", "symbols": ["BTC_USDT"], "rate_per_s": 200},
            )
            sid = created.json()["id"]
            deadline = time.monotonic() + DATA_DEADLINE_S
            while (await client.get(f"/api/sessions/{sid}/trades?limit=1")).json()["count"] == 0:
                assert time.monotonic() < deadline, "the real supervisor collected nothing"
                await asyncio.sleep(0.02)  # the runner's first flush: poll with a deadline
            stopped = await client.post(f"/api/sessions/{sid}/stop?wait=true&timeout=10")
            trades = (await client.get(f"/api/sessions/{sid}/trades?limit=10000")).json()
            books = (await client.get(f"/api/sessions/{sid}/orderbook?limit=10000")).json()
            events = (await client.get(f"/api/sessions/{sid}/events")).json()["events"]
            stored = StoredTicks()
            for t in trades["trades"]:
                when = datetime.fromisoformat(t["ts"])
                stored.add_trade(t["symbol"], t["trade_id"], when, t["price"], t["qty"], t["side"])
            for b in books["orderbook"]:
                stored.add_book(b["symbol"], datetime.fromisoformat(b["ts"]))
            session = stopped.json()
            counts = check_recording(Recording.from_json(session), stored)
            assert_stats_match_tally(session["stats"], events)
            return session, counts.trades

    session, stored = run(scenario())
    assert session["status"] == "stopped"
    assert session["stats"]["trades"] == stored > 0  # it saw data, the feed's own
