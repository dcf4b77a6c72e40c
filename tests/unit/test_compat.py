"""The original platform's routes on the in-memory store (docs/compat.md).

The acceptance suite replays the original clients' requests against a real
server; these tests pin the mapping rules one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ticktape.api import create_app
from ticktape.config import Settings

from .conftest_api import BASE_URL, ApiHarness, Run, SyncAsgiTransport, make_harness

COLLECT_BODY: dict[str, Any] = {  # what the original data-collection page sends
    "session_type": "collect",
    "strategy_config": {"symbols": ["BTC_USDT", "ETH_USDT"]},
    "config": {
        "max_file_size_mb": 100,
        "compression_enabled": True,
        "data_path": "data",
        "duration": "1h",
    },
    "idempotent": True,
}


@pytest.fixture
def api(run: Run[Any]) -> Iterator[ApiHarness]:
    harness = make_harness(run)
    yield harness
    harness.close()


@pytest.fixture
def http(api: ApiHarness) -> httpx.Client:
    return api.http


def original_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error_code"] == code == body["error"]["code"]
    assert isinstance(body["error_message"], str) and body["error_message"]
    assert body["detail"] == body["error_message"] == body["error"]["message"]
    return str(body["error_message"])


def start(http: httpx.Client, body: dict[str, Any]) -> str:
    response = http.post("/sessions/start", json=body)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "session_started"
    return str(data["session_id"])


def test_start_maps_the_original_body_and_records_ignored_fields(http: httpx.Client) -> None:
    sid = start(http, {**COLLECT_BODY, "idempotent": False})
    session = http.get(f"/api/sessions/{sid}").json()
    assert session["symbols"] == ["BTC_USDT", "ETH_USDT"]
    assert session["config"]["duration_s"] == 3600.0
    assert session["config"]["ignored"] == {
        "config.compression_enabled": True,
        "config.data_path": "data",
        "config.max_file_size_mb": 100,
    }


@pytest.mark.parametrize(
    ("config", "duration_s"),
    [
        ({"duration": "continuous"}, None),
        ({"data_collection": {"duration": "30s"}, "duration": "2h"}, 30.0),
        ({}, None),
    ],
)
def test_duration_sources(http: httpx.Client, config: dict[str, Any], duration_s: Any) -> None:
    sid = start(http, {"session_type": "collect", "symbols": ["btc_usdt"], "config": config})
    session = http.get(f"/api/sessions/{sid}").json()
    assert session["symbols"] == ["BTC_USDT"]
    assert session["config"]["duration_s"] == duration_s


def test_idempotent_answers_the_active_session_with_the_same_request(
    api: ApiHarness, http: httpx.Client
) -> None:
    first = start(http, COLLECT_BODY)
    assert start(http, COLLECT_BODY) == first
    other = start(http, {**COLLECT_BODY, "strategy_config": {"symbols": ["SOL_USDT"]}})
    assert other != first
    assert start(http, {**COLLECT_BODY, "idempotent": False}) not in {first, other}
    http.post("/sessions/stop", json={"session_id": first})
    assert start(http, COLLECT_BODY) != first  # a stopped session is not reused


@pytest.mark.parametrize(
    ("body", "status", "code", "mentions"),
    [
        (
            {"session_type": "live", "symbols": ["BTC_USDT"]},
            422,
            "live_trading_not_supported",
            "paper",
        ),
        (
            {"session_type": "paper", "symbols": ["BTC_USDT"]},
            400,
            "validation_error",
            "a strategy is required",
        ),
        (
            {"session_type": "backtest", "symbols": ["BTC_USDT"], "config": {"session_id": "x"}},
            400,
            "validation_error",
            "a strategy is required",
        ),
        (
            {"session_type": "backtest", "symbols": ["BTC_USDT"]},
            400,
            "validation_error",
            "config.session_id",
        ),
        ({"session_type": "collect"}, 400, "validation_error", "symbols are required"),
        (
            {"session_type": "collect", "symbols": ["x y"]},
            400,
            "validation_error",
            "invalid symbol",
        ),
        (
            {"session_type": "collect", "symbols": ["BTC_USDT"], "config": {"duration": "1y"}},
            400,
            "validation_error",
            "invalid duration",
        ),
        (
            {"session_type": "collect", "symbols": ["BTC_USDT"], "config": {"duration": 5}},
            400,
            "validation_error",
            "config.duration",
        ),
        (
            {"session_type": "collect", "symbols": ["BTC_USDT"], "idempotent": "yes"},
            400,
            "validation_error",
            "idempotent",
        ),
        (
            {"session_type": "collect", "symbols": ["BTC_USDT"], "config": {"book_depth": "5"}},
            400,
            "validation_error",
            "book_depth",
        ),
        ({"symbols": ["BTC_USDT"]}, 400, "validation_error", "session_type is required"),
        ({"session_type": "swap", "symbols": ["BTC_USDT"]}, 400, "validation_error", "swap"),
    ],
)
def test_start_refuses_clearly(
    http: httpx.Client, body: dict[str, Any], status: int, code: str, mentions: str
) -> None:
    assert mentions in original_error(http.post("/sessions/start", json=body), status, code)


def test_start_refuses_bodies_that_are_not_objects(http: httpx.Client) -> None:
    long_key = {"Idempotency-Key": "k" * 201}
    original_error(
        http.post("/sessions/start", json=COLLECT_BODY, headers=long_key), 400, "validation_error"
    )
    original_error(http.post("/sessions/start", content=b"[1]"), 400, "validation_error")
    original_error(http.post("/sessions/start", content=b"{nope"), 400, "validation_error")


def test_own_api_stays_strict(http: httpx.Client) -> None:
    body = {"kind": "collect", "symbols": ["BTC_USDT"], "data_path": "data"}
    response = http.post("/api/sessions", json=body)
    assert response.status_code == 422
    assert set(response.json()) == {"error"}


def test_execution_status_idle_then_current(http: httpx.Client) -> None:
    idle = http.get("/sessions/execution-status").json()
    assert idle["type"] == "response" and idle["data"]["status"] == "idle"
    assert idle["data"]["records_collected"] == 0
    older = start(http, {"session_type": "collect", "symbols": ["BTC_USDT"]})
    newer = start(
        http, {"session_type": "collect", "symbols": ["ETH_USDT"], "config": {"duration": "10m"}}
    )
    data = http.get("/sessions/execution-status").json()["data"]
    assert data["session_id"] == newer and data["active_sessions"] == 2
    assert data["status"] == "starting" and data["mode"] == "collect"
    assert data["progress"]["percentage"] == 0.0 and data["progress"]["eta_seconds"] == 600.0
    assert data["duration"] == "10m" and data["data_types"] == ["price", "orderbook"]
    assert older != newer


def test_empty_stop_body_stops_the_only_running_session(http: httpx.Client) -> None:
    assert "no session is running" in original_error(
        http.post("/sessions/stop", json={}), 404, "session_not_found"
    )
    sid = start(http, {"session_type": "collect", "symbols": ["BTC_USDT"]})
    stopped = http.post("/sessions/stop", content=b"")
    assert stopped.status_code == 200, stopped.text
    data = stopped.json()["data"]
    assert data["status"] == "session_stopped" and data["session_id"] == sid
    assert data["data"] == {"session_id": sid, "stopped_via": "controller", "was_orphaned": False}
    assert data["session_status"] == "stopped"
    start(http, {"session_type": "collect", "symbols": ["BTC_USDT"]})
    start(http, {"session_type": "collect", "symbols": ["ETH_USDT"]})
    assert "2 sessions are running" in original_error(
        http.post("/sessions/stop", json={}), 409, "ambiguous_session"
    )


def test_stop_twice_and_unknown_ids(http: httpx.Client) -> None:
    sid = start(http, {"session_type": "collect", "symbols": ["BTC_USDT"]})
    assert http.post("/sessions/stop", json={"session_id": sid}).status_code == 200
    assert "already stopped" in original_error(
        http.post("/sessions/stop", json={"session_id": sid}), 409, "session_already_stopped"
    )
    for method, path, kwargs in [
        ("POST", "/sessions/stop", {"json": {"session_id": "nope"}}),
        ("GET", "/sessions/nope", {}),
        ("DELETE", "/api/data-collection/sessions/nope", {}),
        ("GET", "/api/data-collection/nope/chart-data?symbol=BTC_USDT", {}),
    ]:
        original_error(http.request(method, path, **kwargs), 404, "session_not_found")


def test_list_has_the_fields_the_page_reads(api: ApiHarness, http: httpx.Client) -> None:
    stopped = api.stopped(symbols=["BTC_USDT"], data_types=["trades"], duration="90s")
    running = start(http, {"session_type": "collect", "symbols": ["ETH_USDT"]})
    listing = http.get(
        "/api/data-collection/sessions", params={"limit": 50, "include_stats": False}
    ).json()
    assert listing["total_count"] == 2 and listing["limit"] == 50
    by_id = {s["session_id"]: s for s in listing["sessions"]}
    done = by_id[stopped["id"]]
    assert done["status"] == "stopped" and done["data_types"] == ["price"]
    assert done["duration"] == "90s" and done["end_time"] is not None
    assert isinstance(done["duration_seconds"], float) and done["error_message"] is None
    for field in ("records_collected", "prices_count", "orderbook_count"):
        assert isinstance(done[field], int)
    assert by_id[running]["status"] == "starting" and by_id[running]["duration"] == "continuous"
    starting = http.get("/api/data-collection/sessions?status=starting").json()
    assert [s["session_id"] for s in starting["sessions"]] == [running]
    with_stats = http.get("/api/data-collection/sessions?include_stats=true").json()
    assert with_stats["sessions"][0]["stats"]["records_collected"] == 0
    original_error(http.get("/api/data-collection/sessions?limit=0"), 400, "validation_error")


def test_lookup_and_delete(api: ApiHarness, http: httpx.Client) -> None:
    sid = start(http, {"session_type": "collect", "symbols": ["BTC_USDT"]})
    got = http.get(f"/sessions/{sid}").json()
    assert got["type"] == "response"
    assert got["data"]["session_id"] == sid and got["data"]["is_active"] is True
    deleted = http.delete(f"/api/data-collection/sessions/{sid}")  # stops it first
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["success"] is True and deleted.json()["session_id"] == sid
    assert http.get("/api/data-collection/sessions").json()["total_count"] == 0
    assert http.get(f"/api/sessions/{sid}").json()["deleted"] is True


def test_chart_data_is_downsampled_to_max_points(api: ApiHarness, http: httpx.Client) -> None:
    created = api.create(symbols=["BTC_USDT"])
    api.write_ticks(created["id"], n=1050)
    url = f"/api/data-collection/{created['id']}/chart-data"
    full = http.get(url, params={"symbol": "BTC_USDT", "max_points": 2000}).json()
    assert full["data_points"] == len(full["data"]) == 1050
    point = full["data"][0]
    assert set(point) == {"timestamp", "price", "volume", "symbol"}
    assert point["price"] == 100.0 and point["volume"] == 0.5
    thin = http.get(url, params={"symbol": "BTC_USDT", "max_points": 100}).json()
    assert 50 <= thin["data_points"] <= 100
    assert thin["data"][0] == full["data"][0]
    stamps = [p["timestamp"] for p in thin["data"]]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    original_error(http.get(url, params={"symbol": "SOL_USDT"}), 404, "no_chart_data")
    original_error(
        http.get(url, params={"symbol": "BTC_USDT", "max_points": 5}), 400, "validation_error"
    )
    original_error(http.get(url), 400, "validation_error")


def test_cors_only_for_configured_origins(run: Run[Any]) -> None:
    def preflight(origins: tuple[str, ...]) -> httpx.Response:
        harness = make_harness(run)
        settings = Settings(
            store_url="memory://", cors_origins=origins, allowed_hosts=("ticktape.test",)
        )
        app = create_app(settings, service=harness.service)
        with httpx.Client(transport=SyncAsgiTransport(app, run), base_url=BASE_URL) as c:
            return c.options(
                "/sessions/start",
                headers={
                    "Origin": "http://localhost:3000",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-csrf-token",
                },
            )

    allowed = preflight(("http://localhost:3000",))
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in preflight(()).headers
    assert "access-control-allow-origin" not in preflight(("https://other.example",)).headers
    assert Settings.from_env({"TICKTAPE_CORS_ORIGINS": "http://a, http://b"}).cors_origins == (
        "http://a",
        "http://b",
    )
