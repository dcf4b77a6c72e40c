"""The original clients' backtest and paper requests against a real ``ticktape serve``.

A collect session recorded through the original's ``POST /sessions/start`` is replayed by
the backtest request the original's trading-session page sends; the backtest completes
and its results are read through ticktape's own ``/api/sessions/{id}/results``. The
``/ws`` ``start_backtest`` / ``start_live_trading`` commands map the same way
(docs/compat.md, "Backtest and paper requests").
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from websockets.sync.client import connect

from tests.acceptance.helpers import TERMINAL, wait_for
from tests.acceptance.test_compat import post, start
from ticktape.testing import ServerProcess


def _record(client: httpx.Client) -> str:
    sid = start(
        client,
        {
            "session_type": "collect",
            "symbols": ["BTC_USDT"],
            "config": {"duration": "2s", "rate_per_s": 500, "seed": 4},
        },
    )
    done = wait_for(client, sid, lambda s: s["status"] in TERMINAL, what="the recording")
    assert done["status"] == "completed" and done["stats"]["records_collected"] > 0
    return sid


def test_trading_page_backtest_completes_with_results(client: httpx.Client) -> None:
    source = _record(client)
    body = {  # the trading-session page in backtest mode
        "session_type": "backtest",
        "name": "backtest_1764489600000",
        "symbols": ["BTC_USDT"],
        "strategy_config": {"sma_cross": ["BTC_USDT"]},
        "selected_strategies": ["sma_cross"],
        "config": {
            "global_budget": 10_000,
            "max_position_size": 1000,
            "stop_loss_percent": 5,
            "take_profit_percent": 10,
            "session_id": source,
            "replay_speed": 0,
        },
    }
    sid = start(client, body)
    done = wait_for(client, sid, lambda s: s["status"] in TERMINAL, what="the backtest")
    assert done["status"] == "completed", done
    # the page sent every recorded symbol: the whole recording, replayed in full
    assert done["stats"]["progress"] == 1.0
    assert done["config"]["strategy_run"]["initial_cash"] == 10_000.0
    assert "config.max_position_size" in done["config"]["ignored"]

    status = client.get(f"/sessions/{sid}").json()["data"]  # getSessionStatus(id)
    assert status["status"] == "completed" and status["session_type"] == "backtest"
    assert status["strategy"] == "sma_cross" and status["source_session_id"] == source
    assert status["records_collected"] == done["stats"]["records_collected"] > 0

    results = client.get(status["results_url"])
    assert results.status_code == 200, results.text
    summary = results.json()
    assert summary == client.get(f"/api/sessions/{sid}/results").json()
    assert summary["session_id"] == sid and summary["status"] == "completed"
    assert summary["equity"] > 0 and isinstance(summary["summary"], dict)

    # a backtest is not a recording: the data-collection list does not show it
    listed = client.get("/api/data-collection/sessions").json()["sessions"]
    assert [s["session_id"] for s in listed] == [source]


def test_ws_commands_start_backtest_and_paper(server: ServerProcess, client: httpx.Client) -> None:
    source = _record(client)
    url = server.url.replace("http://", "ws://") + "/ws"
    with connect(url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["status"] == "connected"

        def command(action: str, params: dict[str, Any]) -> dict[str, Any]:
            ws.send(json.dumps({"type": "command", "action": action, "params": params}))
            answer: dict[str, Any] = json.loads(ws.recv(timeout=10))
            return answer

        backtest = command(
            "start_backtest",
            {
                "symbols": ["BTC_USDT"],
                "session_id": source,
                "acceleration_factor": 0,
                "selected_strategies": ["sma_cross"],
            },
        )
        assert backtest["type"] == "response", backtest
        assert backtest["data"]["session_type"] == "backtest"
        paper = command(
            "start_live_trading",
            {"symbols": ["BTC_USDT"], "mode": "paper", "strategy_config": {"sma_cross": {}}},
        )
        assert paper["type"] == "response", paper
        assert paper["data"]["session_type"] == "paper"
        unknown = command(
            "start_backtest",
            {"symbols": ["BTC_USDT"], "session_id": source, "selected_strategies": ["rsi"]},
        )
        assert unknown["type"] == "error" and unknown["error_code"] == "unknown_strategy"
        assert "'rsi'" in unknown["error_message"] and "sma_cross" in unknown["error_message"]
    done = wait_for(
        client, backtest["data"]["session_id"], lambda s: s["status"] in TERMINAL, what="replay"
    )
    assert done["status"] == "completed" and done["config"]["strategy_run"]["speed"] == 0.0
    paper_id = paper["data"]["session_id"]
    paper_now = client.get(f"/api/sessions/{paper_id}").json()
    assert paper_now["kind"] == "paper"
    assert paper_now["config"]["strategy_run"]["strategy"] == "sma_cross"
    # (A paper session on the simulated exchange currently fails in its runner with
    # "replay chunks overlap" — a runner defect outside this mapping, reported to the lead.)
    if paper_now["status"] not in TERMINAL:
        stopped = post(client, "/sessions/stop", {"session_id": paper_id})
        assert stopped.status_code in (200, 409), stopped.text
