"""Backtests against a real server: record, replay, results over HTTP and the CLI, and a
SIGKILL mid-replay whose claimed restart gives the uninterrupted run's results."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import ACCEPTANCE_ENV
from tests.acceptance.helpers import TERMINAL, assert_valid_history, start_collect, wait_for
from tests.acceptance.test_cli import cli, cli_json
from ticktape.strategies import results_hash
from ticktape.testing import ServerProcess, running_server

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


@pytest.mark.timeout(360)
def test_results_are_streamed_and_a_crash_keeps_every_whole_part(
    store_url: str, tmp_path: Path
) -> None:
    env = {**ACCEPTANCE_ENV, "TICKTAPE_RESULT_BATCH_ROWS": "100"}
    with running_server(store_url, tmp_path, env=env) as server:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            source = record(c)
            reference = backtest(c, source["id"])
            wait_for(c, reference["id"], lambda s: s["status"] == "completed", what="reference")
            orders, fills = (
                all_rows(c, reference["id"], "orders"),
                all_rows(c, reference["id"], "fills"),
            )
            # paced at 0.5 x exchange time: the 3 s recording takes about 6 s to replay
            victim = backtest(c, source["id"], speed=0.5)
            deadline = time.monotonic() + 60
            while True:  # results appear while it runs: the parts appended so far
                partial = c.get(f"/api/sessions/{victim['id']}/results")
                if partial.status_code == 200 and partial.json()["fills"] > 0:
                    break
                assert time.monotonic() < deadline, "no results part appended while running"
                time.sleep(0.05)
            assert partial.json()["status"] == "partial" and partial.json()["hash"] == ""
        server.kill()
        server.start()  # the same instance reaps its dead incarnation's session
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            done = wait_for(
                c, victim["id"], lambda s: s["status"] in TERMINAL, timeout_s=60, what="reaping"
            )
            assert done["status"] == "failed", done
            kept = c.get(f"/api/sessions/{victim['id']}/results").json()
            assert kept["status"] == "partial"
            kept_orders = all_rows(c, victim["id"], "orders")
            kept_fills = all_rows(c, victim["id"], "fills")
            # exactly the whole parts appended before the kill: a prefix of the full run's
            assert (len(kept_orders), len(kept_fills)) == (kept["orders"], kept["fills"])
            assert 0 < len(kept_fills) < len(fills)
            assert kept_orders == orders[: len(kept_orders)]
            assert kept_fills == fills[: len(kept_fills)]
