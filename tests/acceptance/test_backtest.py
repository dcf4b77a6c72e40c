"""Backtests against a real server: record, replay, results over HTTP and the CLI, and a
SIGKILL mid-replay whose claimed restart gives the uninterrupted run's results."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.acceptance.helpers import TERMINAL, assert_valid_history, start_collect, wait_for
from tests.acceptance.test_cli import cli, cli_json
from ticktape.strategies import results_hash
from ticktape.testing import ServerProcess

MM = {"strategy": "market_maker", "params": {"qty": 0.2, "max_inventory": 1.0}}


def record(c: httpx.Client) -> dict[str, Any]:
    created = start_collect(c, rate_per_s=3000, duration="3s", seed=11)
    done = wait_for(c, created["id"], lambda s: s["status"] in TERMINAL, what="the recording")
    assert done["status"] == "completed" and done["stats"]["records_collected"] > 10_000
    return done


def backtest(c: httpx.Client, source: str, **body: Any) -> dict[str, Any]:
    response = c.post(
        "/api/sessions", json={"kind": "backtest", "source_session": source, **MM, **body}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def all_rows(c: httpx.Client, session_id: str, table: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500}
    while True:
        page = c.get(f"/api/sessions/{session_id}/{table}", params=params).json()
        rows.extend(page["rows"])
        if page["next_cursor"] is None:
            return rows
        params["cursor"] = page["next_cursor"]


# Each records a session, then replays it twice through a real server (and restarts
# it): more than the default per-test budget on a busy machine.
@pytest.mark.timeout(360)
def test_a_backtest_over_http_and_the_cli(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        source = record(c)
        created = backtest(c, source["id"])
        done = wait_for(c, created["id"], lambda s: s["status"] in TERMINAL, what="the replay")
        assert done["status"] == "completed" and done["reason"] == "source_exhausted"
        assert done["stats"]["records_collected"] == source["stats"]["records_collected"]
        assert done["stats"]["progress"] == 1.0
        summary = c.get(f"/api/sessions/{created['id']}/results").json()
        orders, fills = all_rows(c, created["id"], "orders"), all_rows(c, created["id"], "fills")
        assert (summary["orders"], summary["fills"]) == (len(orders), len(fills))
        assert fills, "the market maker should have traded on this recording"
        assert results_hash(orders, fills) == summary["hash"]  # what is served is what was hashed
        assert len(all_rows(c, created["id"], "equity")) == summary["equity"]
        assert_valid_history(c, created["id"])
    shown = cli_json(server, "results", created["id"])
    assert shown["hash"] == summary["hash"]
    lines = cli(server, "results", created["id"], "--rows", "fills").stdout.splitlines()
    assert len(lines) == len(fills)
    again = cli_json(
        server,
        "start",
        "backtest",
        "--source",
        source["id"],
        "--strategy",
        "market_maker",
        "--param",
        "qty=0.2",
        "-p",
        "max_inventory=1.0",
    )
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        wait_for(c, again["id"], lambda s: s["status"] == "completed", what="the CLI's backtest")
        assert c.get(f"/api/sessions/{again['id']}/results").json()["hash"] == summary["hash"]


@pytest.mark.timeout(360)
def test_sigkill_mid_replay_then_the_claimed_restart_gives_the_same_results(
    server: ServerProcess,
) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        source = record(c)
        reference = backtest(c, source["id"])
        wait_for(c, reference["id"], lambda s: s["status"] == "completed", what="the reference")
        expected = c.get(f"/api/sessions/{reference['id']}/results").json()["hash"]
        # paced at 0.5 x exchange time: the 3 s recording takes about 6 s to replay
        victim = backtest(c, source["id"], speed=0.5, on_owner_loss="resume")
        wait_for(
            c,
            victim["id"],
            lambda s: s["stats"]["records_collected"] > 0,
            what="replay progress published by a heartbeat",
        )
    server.kill()
    server.start()  # same instance name: it claims its dead incarnation's resumable session
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        done = wait_for(
            c, victim["id"], lambda s: s["status"] in TERMINAL, timeout_s=60, what="the restart"
        )
        assert done["status"] == "completed", done
        reasons = [
            e["reason"] for e in c.get(f"/api/sessions/{victim['id']}/events").json()["events"]
        ]
        assert "owner_changed" in reasons and "restarted" in reasons
        assert c.get(f"/api/sessions/{victim['id']}/results").json()["hash"] == expected
        assert done["stats"]["records_collected"] == source["stats"]["records_collected"]
        assert_valid_history(c, victim["id"])
