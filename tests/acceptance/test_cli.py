"""The ``ticktape`` CLI as a user runs it: a subprocess against a real server."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import httpx

from tests.oracle import check_served
from ticktape.testing import TICKTAPE, ServerProcess


def cli(server: ServerProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TICKTAPE_URL": server.url}
    result = subprocess.run(
        [str(TICKTAPE), *args], capture_output=True, text=True, env=env, timeout=60
    )
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def cli_json(server: ServerProcess, *args: str) -> Any:
    return json.loads(cli(server, *args, "--json").stdout)


def test_start_show_stop_events_through_the_cli(server: ServerProcess) -> None:
    started = cli_json(server, "start", "collect", "--symbols", "BTC_USDT,ETH_USDT", "--rate", "20")
    session_id = started["id"]
    shown = cli_json(server, "show", session_id)
    assert shown["id"] == session_id
    assert shown["symbols"] == ["BTC_USDT", "ETH_USDT"]
    listed = cli_json(server, "ls")
    assert session_id in [s["id"] for s in listed["sessions"]]
    stopped = cli_json(server, "stop", session_id)
    assert stopped["status"] == "stopped"
    with httpx.Client(base_url=server.url) as c:
        trades = c.get(f"/api/sessions/{session_id}/trades", params={"limit": 10_000}).json()
        check_served(c, session_id)  # the oracle: the feed's ticks, the runner's tally
    assert stopped["stats"]["trades"] == trades["count"]
    events = cli_json(server, "events", session_id)
    moves = [e["to_status"] for e in events if e["from_status"] != e["to_status"]]  # notes aside
    assert moves == ["pending", "running", "stopping", "stopped"]
    assert "runner_tally" in [e["reason"] for e in events]


def test_watch_follows_a_session_to_its_end(server: ServerProcess) -> None:
    started = cli_json(server, "start", "collect", "--symbols", "BTC_USDT", "--duration", "1s")
    result = cli(server, "watch", started["id"])
    assert "completed" in result.stdout


def test_cli_errors_are_one_line_and_non_zero(server: ServerProcess) -> None:
    bad = cli(server, "start", "collect", "--symbols", "btc-usdt", check=False)
    assert bad.returncode != 0
    assert "symbol" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli(server, "show", "00000000-0000-0000-0000-000000000000", check=False)
    assert missing.returncode != 0
    assert "not found" in missing.stderr
    paper = cli(
        server, "start", "paper", "--symbols", "BTC_USDT", "--strategy", "no_such", check=False
    )
    assert paper.returncode != 0 and "no_such" in paper.stderr
    backtest = cli(
        server, "start", "backtest", "--source", "nope", "--strategy", "sma_cross", check=False
    )
    assert backtest.returncode != 0 and "'nope' not found" in backtest.stderr


def test_cli_says_clearly_when_no_server_answers() -> None:
    env = {**os.environ, "TICKTAPE_URL": "http://127.0.0.1:9"}
    result = subprocess.run(
        [str(TICKTAPE), "ls"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode != 0
    assert "cannot reach ticktape" in result.stderr
