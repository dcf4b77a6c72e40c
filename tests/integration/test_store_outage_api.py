"""The HTTP face of a failing SQLite store: bounded 503s, health, readiness, metrics, recovery.

The store is a real SQLite file whose driver fails every COMMIT while the fault
is on (``database or disk is full``, as on a full disk); the app is the real one
with the real supervisor, driven over ASGI. While the fault lasts, a create
answers 503 ``store_unavailable`` within a bound, ``/health`` stays 200 but says
the store is failing, ``/ready`` is 503 and ``/metrics`` counts it. When the fault
clears, the same server serves again: no restart.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from ticktape.api import create_app
from ticktape.config import RetryPolicy, Settings
from ticktape.metrics import Metrics
from ticktape.runners import default_runners
from ticktape.runtime.supervisor import Supervisor
from ticktape.service import SessionService
from ticktape.store.sqlite import SqliteStore

Run = Callable[[Coroutine[Any, Any, Any]], Any]
BOUND_S = 15.0  # a create retries a few times with backoff, then answers; never a hang


class DiskFull:
    on = False


class FullDiskConnection(sqlite3.Connection):
    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        if DiskFull.on and sql.lstrip().upper().startswith("COMMIT"):
            raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, *args)


def test_a_failing_store_answers_503_fails_readiness_counts_and_recovers(
    run: Run, tmp_path: Path
) -> None:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/outage.db",
        instance_name="outage",
        heartbeat_interval_s=0.2,
        lease_s=5.0,
        allowed_hosts=("localhost",),
    )

    async def scenario() -> None:
        store = SqliteStore(
            settings.store_url, connection_factory=FullDiskConnection, failure_hold_s=0
        )
        await store.open()
        metrics = Metrics()
        supervisor = Supervisor(store, settings, metrics, default_runners())
        await supervisor.start()
        service = SessionService(store, supervisor, settings, metrics)
        app = create_app(settings, service=service, metrics=metrics)
        body = {"kind": "collect", "symbols": ["BTC_USDT"], "rate_per_s": 50}
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=30
            ) as http:
                assert (await http.get("/ready")).status_code == 200
                DiskFull.on = True
                started = time.monotonic()
                refused = await asyncio.wait_for(http.post("/api/sessions", json=body), BOUND_S)
                assert time.monotonic() - started < BOUND_S
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "store_unavailable"
                assert "disk is full" in refused.json()["error"]["message"]

                health = (await http.get("/health")).json()
                assert health["status"] == "degraded" and health["store_ok"] is False
                assert "disk is full" in health["store_error"]
                ready = await http.get("/ready")
                assert ready.status_code == 503
                assert ready.json()["error"]["code"] == "store_unavailable"
                text = (await http.get("/metrics")).text
                assert "ticktape_store_up 0.0" in text
                assert 'ticktape_store_errors_total{code="store_unavailable"} 1.0' in text

                DiskFull.on = False  # space is back
                assert (await http.get("/ready")).status_code == 200  # its probe write works
                assert (await http.get("/health")).json()["store_ok"] is True
                created = await http.post("/api/sessions", json=body)
                assert created.status_code == 201, created.text
                sid = created.json()["id"]
                stopped = await http.post(f"/api/sessions/{sid}/stop?wait=true&timeout=10")
                assert stopped.json()["status"] == "stopped"
                stored = (await http.get(f"/api/sessions/{sid}/trades?limit=10000")).json()
                assert stopped.json()["stats"]["trades"] == stored["count"]
                assert "ticktape_store_up 1.0" in (await http.get("/metrics")).text
        finally:
            DiskFull.on = False
            await supervisor.shutdown(timeout_s=5)
            await store.close()

    run(scenario())


class Stall:
    """While ``on``, every write's COMMIT blocks until ``release`` is set: a stalled disk
    (the writer thread's; a reader's COMMIT of its snapshot writes nothing)."""

    on = False
    release = threading.Event()


class StallingConnection(sqlite3.Connection):
    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        writer = threading.current_thread().name.startswith("ticktape-sqlite-writer")
        if Stall.on and writer and sql.lstrip().upper().startswith("COMMIT"):
            Stall.release.wait(timeout=60)
        return super().execute(sql, *args)


def test_a_write_that_hangs_is_bounded_by_the_write_timeout_and_is_a_store_fault(
    run: Run, tmp_path: Path
) -> None:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/stall.db",
        instance_name="stall",
        heartbeat_interval_s=0.2,
        lease_s=5.0,
        allowed_hosts=("localhost",),
        store_timeout_s=0.5,
        retry=RetryPolicy(store_attempts=2),
    )

    async def scenario() -> None:
        store = SqliteStore(
            settings.store_url, connection_factory=StallingConnection, failure_hold_s=0
        )
        store.timeout_s = settings.store_timeout_s
        await store.open()
        metrics = Metrics()
        supervisor = Supervisor(store, settings, metrics, default_runners())
        await supervisor.start()
        service = SessionService(store, supervisor, settings, metrics)
        app = create_app(settings, service=service, metrics=metrics)
        body = {"kind": "collect", "symbols": ["BTC_USDT"], "rate_per_s": 50}
        Stall.release.clear()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=30
            ) as http:
                Stall.on = True
                started = time.monotonic()
                refused = await asyncio.wait_for(http.post("/api/sessions", json=body), BOUND_S)
                assert time.monotonic() - started < BOUND_S
                assert refused.status_code == 503, refused.text
                error = refused.json()["error"]
                assert error["code"] == "store_unavailable"
                assert "TICKTAPE_STORE_TIMEOUT_S" in error["message"]
                health = (await http.get("/health")).json()
                assert health["store_ok"] is False
                assert "TICKTAPE_STORE_TIMEOUT_S" in health["store_error"]
                assert (await http.get("/ready")).status_code == 503
                assert "ticktape_store_write_failures 0.0" not in (await http.get("/metrics")).text

                Stall.on = False
                Stall.release.set()  # the disk answers again: the stalled commit completes
                deadline = time.monotonic() + BOUND_S
                while (await http.get("/ready")).status_code != 200:
                    assert time.monotonic() < deadline, "no recovery"
                    await asyncio.sleep(0.05)  # polling the probe: no event to await
                created = await http.post("/api/sessions", json=body)
                assert created.status_code == 201, created.text
                sid = created.json()["id"]
                stopped = await http.post(f"/api/sessions/{sid}/stop?wait=true&timeout=10")
                assert stopped.json()["status"] == "stopped"
                # The attempt stalled inside its COMMIT completed once the disk answered (an
                # ambiguous outcome, as with any lost answer: it is a pending session the
                # reconciler ends at its lease); the retry queued behind it never ran.
                listed = (await http.get("/api/sessions")).json()["sessions"]
                assert sid in [s["id"] for s in listed] and len(listed) == 2, listed
        finally:
            Stall.on = False
            Stall.release.set()
            await supervisor.shutdown(timeout_s=5)
            await store.close()

    run(scenario())
