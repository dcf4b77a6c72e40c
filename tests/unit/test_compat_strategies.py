"""The original clients' backtest and paper requests on ``POST /sessions/start`` and ``/ws``.

The bodies are written from the original's frontend (the trading-session page, the
session dialog, ``apiService.startBacktest`` / ``startLiveTrading``); these tests pin
each mapping rule of docs/compat.md ("Backtest and paper requests") on the in-memory store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ticktape.testing import record_source, sim_blocks

from .conftest_api import ApiHarness, Run, make_harness


@pytest.fixture
def api(run: Run[Any]) -> Iterator[ApiHarness]:
    harness = make_harness(run)
    yield harness
    harness.close()


@pytest.fixture
def source(api: ApiHarness) -> str:
    return api.run(record_source(api.store, sim_blocks(300))).id


def _start(api: ApiHarness, body: dict[str, Any]) -> dict[str, Any]:
    response = api.http.post("/sessions/start", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    assert data["status"] == "session_started"
    session: dict[str, Any] = api.http.get(f"/api/sessions/{data['session_id']}").json()
    assert session["kind"] == data["session_type"]
    return session


def _refused(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error_code"] == code == body["error"]["code"]
    return str(body["error_message"])


def trading_page_body(source: str) -> dict[str, Any]:
    """What the trading-session page sends in backtest mode."""
    return {
        "session_type": "backtest",
        "name": "backtest_1764489600000",
        "symbols": ["BTC_USDT"],
        "strategy_config": {"pump_detector": ["BTC_USDT"]},
        "selected_strategies": ["pump_detector"],
        "config": {
            "global_budget": 5000,
            "max_position_size": 1000,
            "stop_loss_percent": 4,
            "take_profit_percent": 9,
            "session_id": source,
            "replay_speed": 20,
        },
    }


def test_trading_page_backtest_maps_every_field(api: ApiHarness, source: str) -> None:
    session = _start(api, trading_page_body(source))
    run = session["config"]["strategy_run"]
    assert session["kind"] == "backtest" and session["symbols"] == ["BTC_USDT"]
    assert run["source_session"] == source
    assert run["strategy"] == "pump_detector"
    assert run["speed"] == 20.0
    assert run["initial_cash"] == 5000.0
    assert run["params"] == {"stop_loss_pct": 4, "take_profit_pct": 9}
    assert session["config"]["ignored"] == {
        "config.max_position_size": 1000,
        "name": "backtest_1764489600000",
    }
    # one symbol of two: the total is that symbol's ticks, not the whole source's
    narrowed = api.run(api.store.ticks.count_window(source, 0, 2**62, ("BTC_USDT",)))
    whole = api.run(api.store.sessions.get_session(source)).stats.records_collected
    assert session["stats"]["ticks_total"] == narrowed.trades + narrowed.orderbook
    assert 0 < session["stats"]["ticks_total"] < whole
    assert api.runtime.launched[-1] == session["id"]


def test_every_recorded_symbol_is_the_whole_recording(api: ApiHarness, source: str) -> None:
    body = trading_page_body(source)  # the page selects all of the recording's symbols
    body["symbols"] = ["ETH_USDT", "BTC_USDT"]
    session = _start(api, body)
    assert session["symbols"] == ["BTC_USDT", "ETH_USDT"]
    assert session["stats"]["ticks_total"] > 0 and session["stats"]["progress"] == 0.0
    progress = api.http.get("/sessions/execution-status").json()["data"]["progress"]
    assert progress["percentage"] == 0.0


def test_session_dialog_backtest_maps_budget_speed_and_its_strategy_list(
    api: ApiHarness, source: str
) -> None:
    body = {  # the dashboard's SessionConfigDialog
        "session_type": "backtest",
        "symbols": ["BTC_USDT", "ETH_USDT"],
        "strategy_config": {"strategies": ["sma_cross"]},
        "config": {
            "budget": {"global_cap": 2500, "allocations": {}},
            "stop_loss_percent": 5,
            "take_profit_percent": 10,
            "max_position_size": 100,
            "session_id": source,
            "acceleration_factor": 10,
            "slippage_model": "realistic",
            "fees_model": "standard",
        },
        "idempotent": True,
    }
    session = _start(api, body)
    run = session["config"]["strategy_run"]
    assert run["strategy"] == "sma_cross" and run["params"] == {}
    assert run["initial_cash"] == 2500.0 and run["speed"] == 10.0
    assert session["symbols"] == ["BTC_USDT", "ETH_USDT"]
    # sma_cross has no stop-loss / take-profit parameter: kept as ignored, not dropped
    assert session["config"]["ignored"] == {
        "config.budget.allocations": {},
        "config.fees_model": "standard",
        "config.max_position_size": 100,
        "config.slippage_model": "realistic",
        "config.stop_loss_percent": 5,
        "config.take_profit_percent": 10,
    }
    again = api.http.post("/sessions/start", json=body).json()["data"]
    assert again["session_id"] == session["id"]  # idempotent: the same active backtest


def test_api_service_start_backtest_body_replays_the_whole_source(
    api: ApiHarness, source: str
) -> None:
    body = {  # apiService.startBacktest(symbols, sessionId, {strategy_config, ...})
        "session_type": "backtest",
        "strategy_config": {"sma_cross": {"fast": 3, "slow": 9}},
        "config": {"session_id": source, "acceleration_factor": 0, "initial_balance": 750},
    }
    session = _start(api, body)
    run = session["config"]["strategy_run"]
    assert run["params"] == {"fast": 3, "slow": 9} and run["speed"] == 0.0
    assert run["initial_cash"] == 750.0
    assert session["symbols"] == ["BTC_USDT", "ETH_USDT"]  # the source's
    assert session["stats"]["ticks_total"] > 0  # the whole source: progress is known
    status = api.http.get(f"/sessions/{session['id']}").json()["data"]
    assert status["session_type"] == "backtest" and status["mode"] == "backtest"
    assert status["strategy"] == "sma_cross" and status["source_session_id"] == source
    assert status["acceleration_factor"] == 0.0
    assert status["results_url"] == f"/api/sessions/{session['id']}/results"
    current = api.http.get("/sessions/execution-status").json()["data"]
    assert current["session_id"] == session["id"]
    assert current["session_type"] == "backtest"
    assert current["progress"]["percentage"] == 0.0


def test_paper_session_maps_strategy_budget_and_keeps_the_feed_options(api: ApiHarness) -> None:
    body = {
        "session_type": "paper",
        "symbols": ["btc_usdt"],
        "strategy_config": {"market_maker": {"symbols": ["BTC_USDT"], "qty": 0.5}},
        "config": {
            "global_budget": 1000,
            "duration": "10m",
            "rate_per_s": 50,
            "replay_speed": 3,
        },
    }
    session = _start(api, body)
    run = session["config"]["strategy_run"]
    assert session["kind"] == "paper" and session["symbols"] == ["BTC_USDT"]
    assert run["strategy"] == "market_maker" and run["params"] == {"qty": 0.5}
    assert run["initial_cash"] == 1000.0
    assert session["config"]["duration_s"] == 600.0 and session["config"]["rate_per_s"] == 50
    assert session["config"]["ignored"] == {"config.replay_speed": 3}  # a live feed has no speed


@pytest.mark.parametrize(
    ("change", "status", "code", "mentions"),
    [
        (
            {"selected_strategies": ["MovingAverageCross"], "strategy_config": {}},
            422,
            "unknown_strategy",
            "'MovingAverageCross': choose from market_maker, pump_detector, sma_cross",
        ),
        (
            {"selected_strategies": [], "strategy_config": {}},
            400,
            "validation_error",
            "choose from market_maker, pump_detector, sma_cross",
        ),
        (
            {"selected_strategies": ["sma_cross", "pump_detector"]},
            422,
            "one_strategy_per_session",
            "sma_cross, pump_detector",
        ),
        (
            {"strategy_config": {"sma_cross": {"fast": 0}}, "selected_strategies": None},
            422,
            "invalid_params",
            "fast",
        ),
        ({"config": {"session_id": "nope"}}, 400, "validation_error", "config.session_id"),
        (
            {"config": {"session_id": "SRC", "replay_speed": "fast"}},
            400,
            "validation_error",
            "config.replay_speed",
        ),
        (
            {"config": {"session_id": "SRC", "acceleration_factor": 1e7}},
            400,
            "validation_error",
            "config.acceleration_factor: Input should be less than or equal to 1000000",
        ),
        (
            {"config": {"session_id": "SRC", "global_budget": -5}},
            400,
            "validation_error",
            "config.global_budget",
        ),
        ({"symbols": ["XRP_USDT"]}, 400, "validation_error", "XRP_USDT were not recorded"),
    ],
)
def test_bad_backtest_requests_are_refused_naming_the_field(
    api: ApiHarness, source: str, change: dict[str, Any], status: int, code: str, mentions: str
) -> None:
    body = {**trading_page_body(source), **change}
    if "config" in change:
        body["config"] = {k: (source if v == "SRC" else v) for k, v in change["config"].items()}
    if body.get("selected_strategies") is None:
        body.pop("selected_strategies", None)
    message = _refused(api.http.post("/sessions/start", json=body), status, code)
    assert mentions in message
    sessions = api.http.get("/api/sessions?kind=backtest").json()["sessions"]
    assert sessions == []  # nothing was created
