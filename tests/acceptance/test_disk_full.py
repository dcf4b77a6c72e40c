"""A real full disk: the SQLite store on a small tmpfs that a fast session fills.

PostgreSQL's behaviour is the bar: refuse writes, stay up, recover when space
returns. While the disk is full every request answers within a bound (503
``store_unavailable`` for writes), ``/health`` says the store is failing,
``/ready`` is 503, the failure is logged once and counted in ``/metrics``. When
the file system grows again the same server serves again, every terminal
session's stats equal its stored rows, and SIGTERM stops it.

Needs to mount a tmpfs (root, or a container with CAP_SYS_ADMIN); skips saying
so elsewhere.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.helpers import TERMINAL, stored_counts
from ticktape.testing import ServerProcess

SMALL = "3m"
BOUND_S = 15.0  # longest any request may take while the disk is full


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not permitted'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _grow(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=256m", str(mount)], check=True)


def _timed(call: object) -> httpx.Response:
    started = time.monotonic()
    response = call()  # type: ignore[operator]
    assert time.monotonic() - started < BOUND_S
    assert isinstance(response, httpx.Response)
    return response


def test_a_full_disk_is_refused_loudly_and_recovered_without_a_restart(
    small_fs: Path, tmp_path: Path
) -> None:
    server = ServerProcess(
        f"sqlite:///{small_fs}/ticktape.db",
        tmp_path,
        env={"TICKTAPE_HEARTBEAT_S": "0.5", "TICKTAPE_LEASE_S": "3"},
    )
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=BOUND_S + 5) as c:
            body = {"kind": "collect", "symbols": ["BTC_USDT", "ETH_USDT"], "rate_per_s": 0}
            filler = c.post("/api/sessions", json=body)
            assert filler.status_code == 201, filler.text
            deadline = time.monotonic() + 60
            while _timed(lambda: c.get("/ready")).status_code == 200:
                assert time.monotonic() < deadline, "the disk never filled"
                time.sleep(0.1)  # the feed fills the disk; nothing to await but its effect

            refused = _timed(lambda: c.post("/api/sessions", json=body))
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "store_unavailable"
            health = _timed(lambda: c.get("/health"))
            assert health.status_code == 200 and health.json()["store_ok"] is False
            assert "full" in health.json()["store_error"]
            metrics = _timed(lambda: c.get("/metrics")).text
            assert "ticktape_store_up 0.0" in metrics
            assert 'ticktape_store_errors_total{code="store_unavailable"}' in metrics
            stop = _timed(lambda: c.post(f"/api/sessions/{filler.json()['id']}/stop"))
            assert stop.status_code in (200, 503), stop.text
            assert server.logs().count("SQLite writes are failing") == 1, server.logs()[-3000:]

            _grow(small_fs)  # space is back
            deadline = time.monotonic() + 30
            while c.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "no recovery: " + server.logs()[-2000:]
                time.sleep(0.1)
            again = c.post("/api/sessions", json={**body, "rate_per_s": 100})
            assert again.status_code == 201, again.text
            for sid in (filler.json()["id"], again.json()["id"]):
                c.post(f"/api/sessions/{sid}/stop?wait=true&timeout=20")
                session = c.get(f"/api/sessions/{sid}").json()
                assert session["status"] in TERMINAL, session
                rows = stored_counts(c, sid)
                assert session["stats"]["trades"] == rows["trades"], (session, rows)
                assert session["stats"]["orderbook"] == rows["orderbook"], (session, rows)
        assert server.terminate() == 0
    finally:
        server.stop()


def test_sigterm_stops_the_server_while_the_disk_is_full(small_fs: Path, tmp_path: Path) -> None:
    server = ServerProcess(
        f"sqlite:///{small_fs}/ticktape.db",
        tmp_path,
        env={"TICKTAPE_HEARTBEAT_S": "0.5", "TICKTAPE_LEASE_S": "3"},
    )
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=BOUND_S + 5) as c:
            body = {"kind": "collect", "symbols": ["BTC_USDT", "ETH_USDT"], "rate_per_s": 0}
            assert c.post("/api/sessions", json=body).status_code == 201
            deadline = time.monotonic() + 60
            while _timed(lambda: c.get("/ready")).status_code == 200:
                assert time.monotonic() < deadline, "the disk never filled"
                time.sleep(0.1)  # the feed fills the disk; nothing to await but its effect
        started = time.monotonic()
        server.terminate()  # raises if the server is still up after its stop timeout
        assert time.monotonic() - started < 30
    finally:
        server.stop()
