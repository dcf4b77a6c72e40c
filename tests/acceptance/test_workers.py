"""``ticktape serve --workers 2``: two full instances behind one port, on one store.

A session started on one worker is answered at once by the other (the store is the
truth), a stop asked on the other worker is finished by the owner, and SIGTERM to
the server stops every worker's sessions and exits 0. Each worker is pinned by a
keep-alive connection whose ``/health`` names it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import ACCEPTANCE_ENV
from tests.acceptance.helpers import TERMINAL
from ticktape.store import open_store
from ticktape.testing import ServerProcess, eventually

WORKERS = 2
PIN_DEADLINE_S = 60.0  # to find a connection on each worker (a worker may still be starting)
EVENTUAL_S = 20.0
START = {"kind": "collect", "symbols": ["BTC_USDT"]}


class Pinned:
    """One keep-alive connection: every request on it reaches the same worker."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"content-type": "application/json"} if payload else {}
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        assert response.will_close is False, "the server closed a keep-alive connection"
        return response.status, json.loads(data) if data else None

    def instance(self) -> str:
        status, health = self.call("GET", "/health")
        assert status == 200
        return str(health["instance"])

    def close(self) -> None:
        self.conn.close()


def pin_each_worker(url: str) -> dict[str, Pinned]:
    """A connection on every worker, found by opening connections until each answered
    (the kernel picks the worker; one still starting up accepts none yet)."""
    pinned: dict[str, Pinned] = {}
    deadline = time.monotonic() + PIN_DEADLINE_S
    try:
        while len(pinned) < WORKERS:
            assert time.monotonic() < deadline, f"only {sorted(pinned)} answered"
            conn = Pinned(url)
            try:
                name = conn.instance()
            except BaseException:
                conn.close()
                raise
            if name in pinned:
                conn.close()
                time.sleep(0.02)  # polling with a deadline: no event says a worker is up
            else:
                pinned[name] = conn
        return pinned
    except BaseException:
        for conn in pinned.values():
            conn.close()
        raise


@pytest.fixture
def workers_server(store_url: str, tmp_path: Path) -> Any:
    server = ServerProcess(store_url, tmp_path, env={**ACCEPTANCE_ENV, "TICKTAPE_WORKERS": "2"})
    try:
        server.start()  # inside: whatever it started is stopped, healthy in time or not
        yield server
    finally:
        server.stop()


def test_workers_answer_for_each_other_and_stop_cleanly(
    workers_server: ServerProcess, store_url: str
) -> None:
    pinned = pin_each_worker(workers_server.url)
    names = sorted(pinned)
    assert len(names) == WORKERS and all("-w" in n for n in names), names
    first, second = (pinned[n] for n in names)
    try:
        started: list[dict[str, Any]] = []
        for on, other in ((first, second), (second, first), (first, second), (second, first)):
            status, session = on.call(
                "POST", "/api/sessions", {"kind": "collect", "symbols": ["BTC_USDT"]}
            )
            assert status == 201, session
            started.append(session)
            # right after the start, on the other worker: the store answers (invariant 2)
            status, seen = other.call("GET", f"/api/sessions/{session['id']}")
            assert status == 200, seen
            assert seen["id"] == session["id"]
        owners = {s["owner"].split("/")[0] for s in started}
        assert owners == set(names), owners

        # a stop asked on the worker that does not own the session: the owner ends it
        victim = started[0]
        status, answer = second.call("POST", f"/api/sessions/{victim['id']}/stop")
        assert status in (200, 202), answer

        async def stopped() -> dict[str, Any] | None:
            status, seen = first.call("GET", f"/api/sessions/{victim['id']}")
            return seen if status == 200 and seen["status"] == "stopped" else None

        asyncio.run(eventually(stopped, timeout_s=EVENTUAL_S, what="the stop on the owner"))
    finally:
        for conn in pinned.values():
            conn.close()

    # SIGTERM to the server: every worker stops its sessions, and the server exits 0
    assert workers_server.terminate() == 0, workers_server.logs()

    async def final() -> list[str]:
        store = open_store(store_url)
        await store.open()
        try:
            return [(await store.sessions.get_session(s["id"])).status.value for s in started]
        finally:
            await store.close()

    statuses = asyncio.run(final())
    assert set(statuses) <= TERMINAL, statuses


def test_workers_need_a_shared_store(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ticktape.cli.main", "serve", "--workers", "2"],
        env={**os.environ, "TICKTAPE_STORE": "memory://", "TICKTAPE_WORKERS": "2"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "--workers needs a store the workers share" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
