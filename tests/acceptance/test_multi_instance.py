"""Several ``ticktape serve`` processes on one store, driven over HTTP.

Every instance sees every session at once; a stop asked on any instance is
recorded in the store and finished by the owner within one heartbeat; when an
owner is SIGKILLed another instance reaps its sessions (or resumes the resumable
ones) within lease + one heartbeat of the owner's last renewal; on SIGTERM the
owner stops its sessions and hands the resumable ones over.

Timings are short (heartbeat 0.5 s, lease 2 s) and every wait is a deadline.
Measured reap times are printed (``pytest -s``) and written to docs/resilience.md.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.helpers import (
    LIFTED_LIMITS,
    TERMINAL,
    assert_valid_history,
    start_collect,
    wait_for,
    wait_for_event,
)
from tests.oracle import check_served
from ticktape.testing import ServerProcess

HEARTBEAT_S = 0.5
LEASE_S = 2.0
BOUND_S = LEASE_S + HEARTBEAT_S
EVENTUAL_S = 20.0  # deadline for an outcome that must come (its latency: bench/)
CLUSTER_ENV = {
    "TICKTAPE_HEARTBEAT_S": str(HEARTBEAT_S),
    "TICKTAPE_LEASE_S": str(LEASE_S),
    **LIFTED_LIMITS,
}

StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(store_url: str, tmp_path: Path) -> Iterator[StartServer]:
    """``a = start_server()``: a running ``ticktape serve`` on the test's store; stopped after."""
    servers: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        server = ServerProcess(store_url, tmp_path, env={**CLUSTER_ENV, **env})
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            if server.proc is not None and server.proc.poll() is None:
                server.signal(signal.SIGCONT)  # a paused server would ignore SIGTERM
                try:
                    server.terminate()
                except subprocess.TimeoutExpired:
                    server.kill()


def client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30.0)


def get(c: httpx.Client, session_id: str) -> dict[str, Any]:
    response = c.get(f"/api/sessions/{session_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def owner_of(server: ServerProcess) -> str:
    """The instance name part of the owner tokens this server writes."""
    with client(server) as c:
        return str(c.get("/health").json()["instance"])


def events(c: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = c.get(f"/api/sessions/{session_id}/events").json()["events"]
    return found


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def recorded_exactly(c: httpx.Client, session_id: str, *, reaped: bool = False) -> dict[str, Any]:
    """The oracle (tests/oracle.py) over HTTP: served ticks are the feed's, each once, and
    the stats equal them and the runner's tally (a reaped session has none, and its killed
    owner's unflushed tail is lost)."""
    return check_served(c, session_id, tail_lost=reaped, tally=not reaped)


def report(name: str, **figures: Any) -> None:
    print(f"\nMEASURED {name}: {json.dumps(figures, sort_keys=True)}")


# --------------------------------------------------------------------------- one store, all agree


def test_a_session_started_on_one_instance_is_visible_on_the_other_at_once(
    start_server: StartServer,
) -> None:
    a, b = start_server(), start_server()
    ids = []
    with client(a) as ca, client(b) as cb:
        for i in range(40):
            src, other = (ca, cb) if i % 2 == 0 else (cb, ca)
            created = start_collect(src, symbols=["BTC_USDT"], rate_per_s=5)
            ids.append(created["id"])
            assert get(other, created["id"])["id"] == created["id"]
            assert other.get(f"/sessions/{created['id']}").status_code == 200
            listed = other.get("/api/sessions", params={"limit": 5}).json()["sessions"]
            assert created["id"] in [s["id"] for s in listed]
        for sid in ids:
            wait_for(ca, sid, lambda s: s["status"] == "running", what="running")
        keys = ("id", "status", "owner", "version", "created_at", "kind", "symbols")
        for sid in ids:
            assert {k: get(ca, sid)[k] for k in keys} == {k: get(cb, sid)[k] for k in keys}
        listed_a = {
            s["id"]: s["status"] for s in ca.get("/api/sessions?limit=100").json()["sessions"]
        }
        listed_b = {
            s["id"]: s["status"] for s in cb.get("/api/sessions?limit=100").json()["sessions"]
        }
        assert listed_a == listed_b and set(ids) <= set(listed_a)
        legacy = cb.get("/api/data-collection/sessions").json()
        assert set(ids) <= {s["id"] for s in legacy["sessions"]}
        for sid in ids:
            assert cb.post(f"/api/sessions/{sid}/stop").status_code == 200


def test_a_stop_on_another_instance_is_finished_by_the_owner_within_one_heartbeat(
    start_server: StartServer,
) -> None:
    a, b = start_server(), start_server()
    with client(a) as ca, client(b) as cb:
        waited = start_collect(ca, rate_per_s=2000)
        told = start_collect(ca, rate_per_s=2000)
        for sid in (waited["id"], told["id"]):
            wait_for(cb, sid, lambda s: s["stats"]["records_collected"] > 0, what="data")
        asked = time.monotonic()
        response = cb.post(f"/api/sessions/{waited['id']}/stop", params={"wait": "true"})
        waited_s = time.monotonic() - asked
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "stopped"
        asked = time.monotonic()
        assert cb.post(f"/api/sessions/{told['id']}/stop").json()["status"] == "stopping"
        wait_for(ca, told["id"], lambda s: s["status"] == "stopped", what="stopped")
        told_s = time.monotonic() - asked
        # how soon is bench/lifecycle.py's figure; here: b records, a finishes, it happens
        report("stop on the other instance", wait_true_s=waited_s, no_wait_s=told_s)
        a_name, b_name = owner_of(a), owner_of(b)
        for sid in (waited["id"], told["id"]):
            history = assert_valid_history(cb, sid)
            moves = {
                e["to_status"]: e["actor"] for e in history if e["from_status"] != e["to_status"]
            }
            assert moves["stopping"].startswith(f"{b_name}/")
            assert moves["stopped"].startswith(f"{a_name}/")
            recorded_exactly(cb, sid)


# --------------------------------------------------------------------------- owner killed


def test_sigkill_of_the_owner_and_the_other_instance_reaps_within_the_bound(
    start_server: StartServer,
) -> None:
    a, b = start_server(), start_server()
    with client(a) as ca:
        ids = [start_collect(ca, rate_per_s=500)["id"] for _ in range(3)]
    with client(b) as cb:
        for sid in ids:
            wait_for(cb, sid, lambda s: s["stats"]["records_collected"] > 0, what="data")
        a.kill()
        killed = time.monotonic()
        leases = {sid: at(get(cb, sid)["lease_expires_at"]) for sid in ids}  # the last renewal's
        for sid in ids:
            wait_for(
                cb,
                sid,
                lambda s: s["status"] in TERMINAL,
                timeout_s=BOUND_S + EVENTUAL_S,
                what="reap",
            )
        seen_s = time.monotonic() - killed
        delays = []
        b_name = owner_of(b)
        for sid in ids:
            session = recorded_exactly(cb, sid, reaped=True)
            assert (session["status"], session["reason"]) == ("failed", "owner_lost")
            reap = next(e for e in events(cb, sid) if e["reason"] == "owner_lost")
            assert reap["actor"].startswith(f"{b_name}/")
            last_renewal = leases[sid] - timedelta(seconds=LEASE_S)
            delays.append((at(reap["at"]) - last_renewal).total_seconds())
            assert_valid_history(cb, sid)
        report("SIGKILL reap", after_last_renewal_s=delays, seen_after_kill_s=seen_s)
        assert min(delays) >= LEASE_S  # order: reaped only once the lease had expired


def test_sigkill_of_the_owner_of_a_resumable_session_and_it_continues_elsewhere(
    start_server: StartServer,
) -> None:
    a, b = start_server(), start_server()
    symbols = ["BTC_USDT", "ETH_USDT"]
    with client(a) as ca:
        created = start_collect(ca, symbols=symbols, rate_per_s=500, on_owner_loss="resume")
    sid = created["id"]
    with client(b) as cb:
        wait_for(cb, sid, lambda s: s["stats"]["records_collected"] > 100, what="data")
        a.kill()
        lease = at(get(cb, sid)["lease_expires_at"])
        b_name = owner_of(b)
        claimed = wait_for(
            cb,
            sid,
            lambda s: s["owner"].startswith(f"{b_name}/"),
            timeout_s=BOUND_S + EVENTUAL_S,
            what="a claim by b",
        )
        assert claimed["status"] == "running"
        before = claimed["stats"]["records_collected"]
        wait_for(cb, sid, lambda s: s["stats"]["records_collected"] > before + 100, what="more")
        stopped = cb.post(f"/api/sessions/{sid}/stop", params={"wait": "true"}).json()
        assert (stopped["id"], stopped["status"]) == (sid, "stopped")
        recorded_exactly(cb, sid)
        history = assert_valid_history(cb, sid)
        claim = next(e for e in history if e["reason"] == "owner_changed")
        gap = json.loads(next(e for e in history if e["reason"] == "resumed")["detail"])
        assert at(gap["to"]) > at(gap["from"])
        delay = (at(claim["at"]) - (lease - timedelta(seconds=LEASE_S))).total_seconds()
        report("SIGKILL resume", claimed_after_last_renewal_s=delay, gap_s=gap["lost_s"])
        assert delay >= LEASE_S  # order: claimed only once the lease had expired


# --------------------------------------------------------------------------- graceful shutdown


def test_sigterm_stops_sessions_and_hands_resumable_ones_over(start_server: StartServer) -> None:
    a, b = start_server(), start_server()
    with client(a) as ca:
        resumable = start_collect(ca, rate_per_s=500, on_owner_loss="resume")["id"]
        plain = start_collect(ca, rate_per_s=500)["id"]
    with client(b) as cb:
        for sid in (resumable, plain):
            wait_for(cb, sid, lambda s: s["stats"]["records_collected"] > 0, what="data")
        assert a.terminate() == 0
        exited = time.monotonic()
        session = recorded_exactly(cb, plain)
        assert (session["status"], session["reason"]) == ("stopped", "server_shutdown")
        b_name = owner_of(b)
        wait_for(
            cb,
            resumable,
            lambda s: s["owner"].startswith(f"{b_name}/") and s["status"] == "running",
            timeout_s=EVENTUAL_S,
            what="b to claim the released session",
        )
        claimed_s = time.monotonic() - exited
        wait_for_event(cb, resumable, "resumed")  # the new runner records the gap it starts at
        reasons = [e["reason"] for e in assert_valid_history(cb, resumable)]
        assert (
            reasons.index("handed_over") < reasons.index("owner_changed") < reasons.index("resumed")
        )
        report("SIGTERM hand-over", claimed_after_exit_s=claimed_s)
        cb.post(f"/api/sessions/{resumable}/stop", params={"wait": "true"})
        recorded_exactly(cb, resumable)
