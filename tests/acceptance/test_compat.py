"""The original platform's clients against the real ``ticktape serve`` (docs/compat.md).

Each request is written from the original frontend's API client
(``frontend/src/services/api.ts``), its data-collection page and its own
pytest suite for these routes: the same method, path, query string, headers
(the browser's JSON content type and ``X-CSRF-Token``) and body. Each answer is
checked for every field those clients read, in the type they read it as.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from tests.acceptance.helpers import wait_for
from ticktape.testing import ServerProcess

# What the original's axios client sends with every mutating request.
BROWSER_HEADERS = {"Content-Type": "application/json", "X-CSRF-Token": "token-from-csrf-service"}

# The data-collection page's "start" (handleCreateDataCollection), 1 hour.
PAGE_START = {
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

# The original's own pytest scenario (tests_e2e/integration/test_sessions.py).
SUITE_START = {
    "symbols": ["BTC_USDT"],
    "session_type": "collect",
    "config": {"data_collection": {"duration": "30s"}},
}


def post(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    return client.post(path, json=body, headers=BROWSER_HEADERS)


def original_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == "error" and body["error_code"] == code
    assert isinstance(body["error_message"], str) and body["error_message"]
    return body


def is_iso(value: Any) -> bool:
    return isinstance(value, str) and datetime.fromisoformat(value) is not None


def start(client: httpx.Client, body: dict[str, Any]) -> str:
    response = post(client, "/sessions/start", body)
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["type"] == "response" and isinstance(envelope["timestamp"], str)
    data = envelope["data"]
    assert data["status"] == "session_started"
    assert data["session_type"] == body["session_type"]
    assert isinstance(data["symbols"], list)
    assert isinstance(data["session_id"], str)
    return str(data["session_id"])


def test_data_collection_page_start_status_stop_list(client: httpx.Client) -> None:
    sid = start(client, PAGE_START)
    assert start(client, PAGE_START) == sid  # idempotent: the running session is answered
    wait_for(client, sid, lambda s: s["stats"]["records_collected"] > 0, what="records")

    status = client.get("/sessions/execution-status").json()["data"]  # getExecutionStatus()
    assert status["session_id"] == sid and status["mode"] == "collect"
    assert status["status"] == "running"
    assert status["symbols"] == ["BTC_USDT", "ETH_USDT"]
    assert status["data_types"] == ["price", "orderbook"]
    assert status["duration"] == "1h" and is_iso(status["start_time"])
    assert isinstance(status["records_collected"], int) and status["records_collected"] > 0
    progress = status["progress"]
    assert isinstance(progress["percentage"], float) and 0 <= progress["percentage"] < 1
    assert isinstance(progress["eta_seconds"], float) and 3500 < progress["eta_seconds"] <= 3600
    assert is_iso(status["eta"]) and status["error_message"] is None

    got = client.get(f"/sessions/{sid}").json()["data"]  # getSessionStatus()
    assert got["session_id"] == sid and got["is_active"] is True

    stop = post(client, "/sessions/stop", {"session_id": sid})  # stopSession(id)
    assert stop.status_code == 200, stop.text
    data = stop.json()["data"]
    assert data["status"] == "session_stopped" and data["session_status"] == "stopped"
    assert data["was_orphaned"] is False and data["stopped_via"] == "controller"
    assert data["data"]["session_id"] == sid

    # getDataCollectionSessions(50, false)
    listing = client.get(
        "/api/data-collection/sessions", params={"limit": 50, "include_stats": False}
    )
    assert listing.status_code == 200
    body = listing.json()
    assert body["limit"] == 50 and body["total_count"] == 1
    entry = body["sessions"][0]
    assert entry["session_id"] == sid and entry["status"] == "stopped"
    assert entry["symbols"] == ["BTC_USDT", "ETH_USDT"]
    assert entry["data_types"] == ["price", "orderbook"] and entry["duration"] == "1h"
    assert is_iso(entry["start_time"]) and is_iso(entry["end_time"]) and is_iso(entry["created_at"])
    assert isinstance(entry["duration_seconds"], float) and entry["duration_seconds"] > 0
    assert entry["error_message"] is None
    session = client.get(f"/api/sessions/{sid}").json()  # derived from the one stored session
    assert entry["records_collected"] == session["stats"]["records_collected"] > 0
    assert entry["prices_count"] == session["stats"]["trades"]
    assert entry["orderbook_count"] == session["stats"]["orderbook"]
    assert session["config"]["ignored"] == {
        "config.compression_enabled": True,
        "config.data_path": "data",
        "config.max_file_size_mb": 100,
    }

    # getChartData(id, symbol, 10000), then a thinner one
    chart = client.get(
        f"/api/data-collection/{sid}/chart-data", params={"symbol": "BTC_USDT", "max_points": 10000}
    ).json()
    assert chart["session_id"] == sid and chart["symbol"] == "BTC_USDT"
    trades = client.get(
        f"/api/sessions/{sid}/trades", params={"symbol": "BTC_USDT", "limit": 10000}
    ).json()["trades"]
    assert 0 < chart["data_points"] == len(chart["data"]) == len(trades) < 10000
    assert [p["price"] for p in chart["data"]] == [t["price"] for t in trades]
    point = chart["data"][0]
    assert is_iso(point["timestamp"]) and isinstance(point["price"], float)
    assert isinstance(point["volume"], float) and point["symbol"] == "BTC_USDT"
    thin = client.get(
        f"/api/data-collection/{sid}/chart-data", params={"symbol": "BTC_USDT", "max_points": 100}
    ).json()
    assert 0 < thin["data_points"] <= 100

    # stop twice: the original's 409
    original_error(
        post(client, "/sessions/stop", {"session_id": sid}), 409, "session_already_stopped"
    )

    # deleteDataCollectionSession(id)
    deleted = client.delete(f"/api/data-collection/sessions/{sid}", headers=BROWSER_HEADERS)
    assert deleted.status_code == 200 and deleted.json()["success"] is True
    assert client.get("/api/data-collection/sessions").json()["total_count"] == 0


def test_original_suite_scenarios(client: httpx.Client) -> None:
    idle = client.get("/sessions/execution-status").json()["data"]
    assert idle["status"] == "idle"
    original_error(post(client, "/sessions/stop", {}), 404, "session_not_found")  # empty body
    original_error(
        post(client, "/sessions/stop", {"session_id": "non-existent-id"}), 404, "session_not_found"
    )
    original_error(client.get("/sessions/non-existent-id"), 404, "session_not_found")

    sid = start(client, SUITE_START)
    running = client.get("/sessions/execution-status").json()["data"]
    assert running["status"] in ("running", "starting") and running["session_id"] == sid
    assert running["duration"] == "30s"
    stop = post(client, "/sessions/stop", {})  # an empty body stops the one running session
    assert stop.status_code == 200 and stop.json()["data"]["session_id"] == sid
    original_error(
        post(client, "/sessions/stop", {"session_id": sid}), 409, "session_already_stopped"
    )
    assert client.get("/sessions/execution-status").json()["data"]["status"] == "idle"
    listed = client.get("/api/data-collection/sessions").json()["sessions"]
    assert [s["session_id"] for s in listed] == [sid] and listed[0]["status"] == "stopped"


def test_other_session_types_are_refused_clearly(client: httpx.Client) -> None:
    # startBacktest(symbols, sessionId, {acceleration_factor, budget}) without a strategy,
    # naming a recording that does not exist (a backtest that runs: test_compat_backtest.py)
    backtest = {
        "session_type": "backtest",
        "symbols": ["BTC_USDT"],
        "strategy_config": {},
        "config": {"session_id": "dc_1", "acceleration_factor": 10, "budget": {"global_cap": 1000}},
    }
    assert (
        "a strategy is required"
        in (
            original_error(post(client, "/sessions/start", backtest), 400, "validation_error")[
                "error_message"
            ]
        )
    )
    backtest["selected_strategies"] = ["sma_cross"]
    assert (
        "config.session_id 'dc_1' not found"
        in (
            original_error(post(client, "/sessions/start", backtest), 400, "validation_error")[
                "error_message"
            ]
        )
    )
    # startLiveTrading(symbols, config)
    live = {"session_type": "live", "strategy_config": {}, "config": {}}
    refused = original_error(
        post(client, "/sessions/start", live), 422, "live_trading_not_supported"
    )
    assert "paper" in refused["error_message"]
    assert client.get("/api/data-collection/sessions").json()["total_count"] == 0


def test_serve_says_at_start_up_that_changes_are_open(server: ServerProcess) -> None:
    assert "changes are OPEN to anyone who can reach this address" in server.logs()


def test_concurrent_identical_idempotent_starts_give_one_session(server: ServerProcess) -> None:
    """``idempotent: true`` and an Idempotency-Key each hold as a lock: identical starts
    sent together (real HTTP, separate connections) answer one session id."""
    import concurrent.futures
    import threading

    def fire(body: dict[str, Any], headers: dict[str, str]) -> list[str]:
        together = threading.Barrier(8)

        def one(_: int) -> str:
            with httpx.Client(base_url=server.url, timeout=30.0) as c:
                assert c.get("/health").status_code == 200  # connected before the race
                together.wait(timeout=30)
                response = c.post("/sessions/start", json=body, headers=headers)
                assert response.status_code == 200, response.text
                return str(response.json()["data"]["session_id"])

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(8)))

    idempotent = {**SUITE_START, "symbols": ["ETH_USDT"], "idempotent": True}
    ids = fire(idempotent, BROWSER_HEADERS)
    assert len(set(ids)) == 1, ids
    keyed = fire(
        {**SUITE_START, "symbols": ["SOL_USDT"]}, {**BROWSER_HEADERS, "Idempotency-Key": "k-1"}
    )
    assert len(set(keyed)) == 1, keyed
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        listed = c.get("/api/sessions", params={"status": "pending,running"}).json()["sessions"]
    assert sorted(s["id"] for s in listed) == sorted({ids[0], keyed[0]})
