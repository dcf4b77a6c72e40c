"""A really stopped, then restarted, QuestDB: the server degrades loudly and recovers.

A QuestDB of this test's own (never the suite's shared one) is stopped under a
running ticktape (the real app, supervisor and store, driven over ASGI) and
started again on the same data directory and ports:

- while it is down, a create answers 503 ``store_unavailable`` within a bound,
  ``/health`` says ``store_ok: false``, ``/ready`` is 503 and ``/metrics`` counts
  the write failures;
- the session that was running, its store gone for longer than its lease, ends
  ``failed`` with reason ``store_unavailable`` naming the fault once QuestDB is back;
- the same ticktape serves again without a restart.

A frozen QuestDB (SIGSTOP: the socket stays open and nothing answers) makes writes
hang rather than fail: they fail after ``TICKTAPE_STORE_TIMEOUT_S`` instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import psycopg
import pytest

from ticktape import questdb_server as qs
from ticktape.api import create_app
from ticktape.config import RetryPolicy, Settings
from ticktape.errors import StoreUnavailable
from ticktape.metrics import Metrics
from ticktape.runners import default_runners
from ticktape.runtime.supervisor import Supervisor
from ticktape.service import SessionService
from ticktape.store.base import TickQuery
from ticktape.store.questdb import QuestDBStore
from ticktape.testing import eventually, sigstop

pytestmark = pytest.mark.questdb

Run = Callable[[Coroutine[Any, Any, Any]], Any]
BOUND_S = 20.0  # a request answers within this, whatever the store does
EVENTUAL_S = 60.0  # an outcome that must come (QuestDB restarts take a few seconds)
BODY = {"kind": "collect", "symbols": ["BTC_USDT"], "rate_per_s": 50}


@pytest.fixture
def questdb(own_questdb: Callable[..., qs.ServerHandle]) -> qs.ServerHandle:
    return own_questdb()


def _settings(url: str, **overrides: Any) -> Settings:
    return Settings(
        store_url=url,
        instance_name="outage",
        heartbeat_interval_s=0.5,
        lease_s=3.0,
        allowed_hosts=("localhost",),
        retry=RetryPolicy(store_attempts=3),
        **overrides,
    )


async def _serving(settings: Settings) -> tuple[QuestDBStore, Supervisor, httpx.AsyncClient]:
    store = QuestDBStore(settings.store_url)
    store.timeout_s = settings.store_timeout_s
    await store.open()
    metrics = Metrics()
    supervisor = Supervisor(store, settings, metrics, default_runners())
    await supervisor.start()
    service = SessionService(store, supervisor, settings, metrics)
    app = create_app(settings, service=service, metrics=metrics)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=60
    )
    return store, supervisor, http


async def _until(check: Callable[[], Coroutine[Any, Any, bool]], what: str) -> None:
    deadline = time.monotonic() + EVENTUAL_S
    while not await check():
        assert time.monotonic() < deadline, f"not within {EVENTUAL_S}s: {what}"
        await asyncio.sleep(0.1)  # polling the server's answers: no event to await


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


async def _refused_within_bound(http: httpx.AsyncClient) -> dict[str, Any]:
    started = time.monotonic()
    refused = await asyncio.wait_for(http.post("/api/sessions", json=BODY), BOUND_S)
    assert time.monotonic() - started < BOUND_S
    assert refused.status_code == 503, refused.text
    error: dict[str, Any] = refused.json()["error"]
    assert error["code"] == "store_unavailable"
    return error


# A chain of waits, each with its own deadline (the store refused, the runner stopped,
# a JVM restarted on the same data, readiness, the session ended): on a slow CI host
# the whole took over pytest's default 120 s once, while every step still came.
@pytest.mark.timeout(360)
def test_a_stopped_questdb_is_a_store_fault_and_a_restarted_one_serves_again(
    run: Run, questdb: qs.ServerHandle
) -> None:
    settings = _settings(questdb.store_url)

    restarted: list[qs.ServerHandle] = []

    async def scenario() -> None:
        store, supervisor, http = await _serving(settings)
        try:
            assert (await http.get("/ready")).status_code == 200
            created = await http.post("/api/sessions", json=BODY)
            assert created.status_code == 201, created.text
            sid = created.json()["id"]

            async def has_ticks() -> bool:
                session = (await http.get(f"/api/sessions/{sid}")).json()
                return bool(session["stats"]["trades"])

            await _until(has_ticks, "ticks stored")

            await asyncio.to_thread(questdb.stop)  # the server is really gone
            await _refused_within_bound(http)
            health = (await http.get("/health")).json()
            assert health["status"] == "degraded" and health["store_ok"] is False
            ready = await http.get("/ready")
            assert ready.status_code == 503, ready.text
            assert ready.json()["error"]["code"] == "store_unavailable"
            metrics = (await http.get("/metrics")).text
            assert _metric(metrics, "ticktape_store_up") == 0.0
            assert _metric(metrics, "ticktape_store_write_failures") >= 1.0

            async def runner_stopped() -> bool:
                return sid not in supervisor.running_ids

            await _until(runner_stopped, "the runner to stop itself (lease not renewed)")
            # the same data directory and ports
            restarted.append(await asyncio.to_thread(qs.start, questdb.config, 60.0))

            async def ready() -> bool:
                return (await http.get("/ready")).status_code == 200

            await _until(ready, "readiness after the restart")
            session: dict[str, Any] = {}

            async def ended() -> bool:
                session.update((await http.get(f"/api/sessions/{sid}")).json())
                return session["status"] == "failed"

            await _until(ended, "the session to be ended")
            assert session["reason"] == "store_unavailable", session
            events = (await http.get(f"/api/sessions/{sid}/events")).json()["events"]
            assert "QuestDB" in events[-1]["detail"], events[-1]
            assert "owner_lost" not in [e["reason"] for e in events]
            trades = (await http.get(f"/api/sessions/{sid}/trades?limit=10000")).json()
            assert session["stats"]["trades"] == trades["count"]  # stats = rows

            again = await http.post("/api/sessions", json=BODY)  # no restart of ticktape
            assert again.status_code == 201, again.text
            stopped = await http.post(f"/api/sessions/{again.json()['id']}/stop?wait=true")
            assert stopped.json()["status"] == "stopped", stopped.text
            assert (await http.get("/health")).json()["store_ok"] is True
        finally:
            await http.aclose()
            await supervisor.shutdown(timeout_s=10)
            await store.close()

    try:
        run(scenario())
    finally:
        for handle in restarted:
            handle.stop()  # stops and reaps the JVM this test started again


def test_a_frozen_questdb_makes_writes_time_out_as_a_store_fault(
    run: Run, questdb: qs.ServerHandle
) -> None:
    settings = _settings(questdb.store_url, store_timeout_s=1.0)

    async def scenario() -> None:
        store, supervisor, http = await _serving(settings)
        try:
            assert (await http.get("/ready")).status_code == 200
            sigstop(questdb.pid)  # connections stay open; nothing answers
            try:
                error = await _refused_within_bound(http)
                assert "TICKTAPE_STORE_TIMEOUT_S" in error["message"], error
                health = (await http.get("/health")).json()
                assert health["store_ok"] is False
            finally:
                os.kill(questdb.pid, signal.SIGCONT)

            async def ready() -> bool:
                return (await http.get("/ready")).status_code == 200

            await _until(ready, "readiness after the thaw")
            created = await http.post("/api/sessions", json=BODY)
            assert created.status_code == 201, created.text
            stopped = await http.post(f"/api/sessions/{created.json()['id']}/stop?wait=true")
            assert stopped.json()["status"] == "stopped", stopped.text
        finally:
            await http.aclose()
            await supervisor.shutdown(timeout_s=10)
            await store.close()

    run(scenario())


def test_a_frozen_questdb_makes_tick_reads_time_out_and_a_close_leaves_no_connection(
    run: Run, questdb: qs.ServerHandle
) -> None:
    """Tick reads are bounded like writes (503 ``store_unavailable`` after
    ``TICKTAPE_STORE_TIMEOUT_S``), and a read that outlived its timeout never
    opens or keeps a connection once the store is closed: after the thaw, every
    connection the store ever made is closed (before, a read still connecting when
    the store closed got its connection afterwards and nobody closed it — the
    ResourceWarning seen in test_stateful[questdb])."""
    store = QuestDBStore(questdb.store_url)
    store.timeout_s = 1.0
    made: list[Any] = []
    store.on_connect = made.append  # every connection the store opens

    async def scenario() -> None:
        await store.open()
        try:
            assert await store.ticks.read_trades(TickQuery("no-such-session")) == []
            sigstop(questdb.pid)  # connections stay open; nothing answers
            try:
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match="TICKTAPE_STORE_TIMEOUT_S"):
                    await asyncio.wait_for(
                        store.ticks.read_trades(TickQuery("no-such-session")), BOUND_S
                    )
                with pytest.raises(StoreUnavailable, match="TICKTAPE_STORE_TIMEOUT_S"):
                    await asyncio.wait_for(store.ticks.count("no-such-session"), BOUND_S)
                with pytest.raises(StoreUnavailable, match="TICKTAPE_STORE_TIMEOUT_S"):
                    await asyncio.wait_for(store.results.summary("no-such-session"), BOUND_S)
                with pytest.raises(StoreUnavailable, match="TICKTAPE_STORE_TIMEOUT_S"):
                    await asyncio.wait_for(store.results.rows("no-such-session", "fills"), BOUND_S)
                assert time.monotonic() - started < 4 * BOUND_S
                assert store.write_failure is not None  # counted as a store fault
                await asyncio.wait_for(store.close(), BOUND_S)  # with both reads still out
            finally:
                os.kill(questdb.pid, signal.SIGCONT)

            async def settled() -> bool:  # the late reads ended, however they ended
                return asyncio.all_tasks() == {asyncio.current_task()}

            await eventually(settled, timeout_s=EVENTUAL_S, what="the late reads to end")
            assert len(made) >= 2  # the writer and at least one reader were really opened
            assert [conn for conn in made if not conn.closed] == []
        finally:
            await store.close()

    run(scenario())


def test_a_group_commit_blocked_on_a_frozen_questdb_fails_in_time_and_close_ends_its_thread(
    run: Run, questdb: qs.ServerHandle, make_session: Callable[..., Any]
) -> None:
    """The session log's group commit runs on a thread of its own: with QuestDB frozen
    mid-use, a create still fails within ``TICKTAPE_STORE_TIMEOUT_S`` and counts as a
    write failure; closing the store then wakes the thread blocked on the frozen
    server, which closes its connections and ends — nothing is left after the thaw."""
    store = QuestDBStore(questdb.store_url)
    store.timeout_s = 1.0
    made: list[Any] = []
    store.on_connect = made.append  # every connection the store opens

    def log_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("ticktape-questdb-log")]

    async def scenario() -> None:
        await store.open()
        try:
            await store.sessions.create_session(make_session(), actor="t")  # thread up
            assert log_threads() != []
            sigstop(questdb.pid)
            try:
                with pytest.raises(StoreUnavailable, match="TICKTAPE_STORE_TIMEOUT_S"):
                    await asyncio.wait_for(
                        store.sessions.create_session(make_session(), actor="t"), BOUND_S
                    )
                assert store.write_failure is not None
                await asyncio.wait_for(store.close(), BOUND_S)  # the group still blocked
                assert log_threads() == []
            finally:
                os.kill(questdb.pid, signal.SIGCONT)
            thread_conns = [conn for conn in made if not isinstance(conn, psycopg.AsyncConnection)]
            assert thread_conns != []  # the group commit's own connections were opened
            assert [conn for conn in made if not conn.closed] == []
        finally:
            await store.close()

    run(scenario())
