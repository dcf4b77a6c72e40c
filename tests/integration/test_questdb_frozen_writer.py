"""A frozen process holding the session log's writer does not stop every other instance.

A group commit holds the QuestDB session log's single writer from its first round trip
(BEGIN, the first INSERT) to its COMMIT. A process frozen in between (a stall, SIGSTOP)
held it until it ran again: in a 10-minute chaos run every instance's transitions, reaps
included, answered "table busy" for the 13 s an instance was paused, and three orphans
were reaped 15 s after their owner's last renewal, against a 12 s bound. The managed
server closes a PG-wire connection silent for ``QUESTDB_PG_IDLE_TIMEOUT_S``, which rolls
its transaction back; the store replaces its own connections before the server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from tests.conftest import Run
from tests.integration.conftest import fail_session
from ticktape import questdb_server as qs
from ticktape.config import (
    QUESTDB_IDLE_RECONNECT_S,
    QUESTDB_IDLE_RECONNECT_SHARE,
    QUESTDB_PG_IDLE_TIMEOUT_S,
)
from ticktape.domain import Reason
from ticktape.errors import StoreUnavailable
from ticktape.store import open_store
from ticktape.store.questdb import QuestDBStore
from ticktape.testing import draft_session, sigstop

pytestmark = pytest.mark.questdb


@pytest.fixture
def managed(own_questdb: Callable[..., qs.ServerHandle]) -> qs.ServerHandle:
    """A server as ``ticktape questdb start`` runs it: the short idle timeout."""
    return own_questdb(pg_idle_timeout_s=QUESTDB_PG_IDLE_TIMEOUT_S)


def test_the_managed_server_closes_idle_connections_soon() -> None:
    props = qs.QuestDBServerConfig(root=qs.default_cache_dir()).server_properties()
    assert props["pg.net.connection.timeout"] == str(round(QUESTDB_PG_IDLE_TIMEOUT_S * 1000))
    kept = qs.QuestDBServerConfig(root=qs.default_cache_dir(), pg_idle_timeout_s=None)
    assert "pg.net.connection.timeout" not in kept.server_properties()


def test_a_transition_goes_through_while_a_frozen_connection_holds_the_log(
    managed: qs.ServerHandle,
) -> None:
    async def scenario() -> None:
        store = open_store(managed.store_url)  # with the store boundary's retries
        await store.open()
        frozen = psycopg.connect(managed.pg_conninfo, autocommit=True)
        try:
            session = await store.sessions.create_session(draft_session(), actor="t")
            # another process's group commit, frozen after its first round trip: the
            # log's writer is taken, and nothing more comes on that connection
            frozen.execute("BEGIN")
            frozen.execute("INSERT INTO tt_session_log (ts, id) VALUES (now(), 'frozen')")

            await fail_session(store, session, Reason.OWNER_LOST)
            # the frozen transaction was rolled back, not committed
            with psycopg.connect(managed.pg_conninfo, autocommit=True) as reader:
                rows = reader.execute(
                    "SELECT count() FROM tt_session_log WHERE id = 'frozen'"
                ).fetchall()
            assert rows == [(0,)]
        finally:
            with contextlib.suppress(psycopg.Error):
                frozen.close()
            await store.close()

    asyncio.run(scenario())


def test_the_store_replaces_connections_before_the_server_closes_them(
    managed: qs.ServerHandle, own_questdb: Callable[..., qs.ServerHandle]
) -> None:
    async def idle_reconnect_s(url: str) -> float:
        store = QuestDBStore(url)
        await store.open()
        try:
            return store.idle_reconnect_s
        finally:
            await store.close()

    short = asyncio.run(idle_reconnect_s(managed.store_url))
    assert short == pytest.approx(QUESTDB_PG_IDLE_TIMEOUT_S * QUESTDB_IDLE_RECONNECT_SHARE)
    kept = own_questdb(pg_idle_timeout_s=None)  # QuestDB's own 300 s
    expected = min(QUESTDB_IDLE_RECONNECT_S, 300.0 * QUESTDB_IDLE_RECONNECT_SHARE)
    assert asyncio.run(idle_reconnect_s(kept.store_url)) == pytest.approx(expected)


def test_no_collection_starts_while_a_group_commit_holds_the_log(
    qdb_url: str, run: Run[Any]
) -> None:
    """A collection holds the GIL while it walks the heap: started while a group commit
    holds the log, it kept the log thread silent between round trips, and the managed
    server closes a connection silent for 1.5 s (stop 19: 256 appends of one group cut
    at a shutdown). With the collector set to run at every allocation, none may start
    while the log thread's connection is in a transaction, in any thread; outside one
    they do."""
    store = QuestDBStore(qdb_url)
    run(store.open())
    log_thread = store._db._log_thread
    holding = (TransactionStatus.ACTIVE, TransactionStatus.INTRANS, TransactionStatus.INERROR)
    inside: list[str] = []
    outside: list[str] = []

    def on_collection(phase: str, _info: dict[str, Any]) -> None:
        if phase != "start":
            return
        conn = log_thread._conns.get("log")
        in_transaction = conn is not None and conn.info.transaction_status in holding
        (inside if in_transaction else outside).append(threading.current_thread().name)

    thresholds = gc.get_threshold()
    gc.callbacks.append(on_collection)
    gc.set_threshold(1, 1, 1)
    try:
        session = run(store.sessions.create_session(draft_session(), actor="t"))
        for n in range(3):
            run(store.sessions.add_event(session.id, actor="t", reason=f"note {n}"))
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.remove(on_collection)
        run(store.close())
    assert outside  # the collector did run, at every allocation, around the groups
    assert inside == []


def test_log_transactions_start_no_thread_each_and_close_ends_their_watchdog(
    qdb_url: str, run: Run[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound on a log transaction (``log_transaction_max_s``) is kept by one watchdog
    thread per store, started with its first transaction and ended by ``close``: the
    transactions after it start no thread (a timer each did, 10 to 16 a second under
    load)."""
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def counted_start(thread: threading.Thread) -> None:
        started.append(thread)
        start(thread)

    store = QuestDBStore(qdb_url)
    run(store.open())
    try:
        monkeypatch.setattr(threading.Thread, "start", counted_start)
        session = run(store.sessions.create_session(draft_session(), actor="t"))
        first = list(started)  # the log thread's worker and, now, the watchdog
        for n in range(20):
            run(store.sessions.add_event(session.id, actor="t", reason=f"note {n}"))
        assert started == first, [t.name for t in started[len(first) :]]
        assert [t.name for t in first if t.name.endswith("watchdog")] == [
            "ticktape-questdb-log-watchdog"
        ]
        assert len(run(store.sessions.list_events(session.id))) == 21
    finally:
        run(store.close())
        monkeypatch.undo()
    assert not any(t.is_alive() for t in first if t.name.endswith("watchdog"))


def test_a_group_cut_mid_transaction_says_how_long_the_thread_was_silent(
    managed: qs.ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """The log thread silent after its first round trip for longer than the managed idle
    timeout: the server closes the connection, the group's transaction is rolled back,
    the append is retried by its caller (once, not twice), and the warning gives the
    silence (the figures a long run's log needs to tell such a stall from a slow server)."""
    stalled: list[float] = []

    def on_connect(conn: Any) -> None:
        if not isinstance(conn, psycopg.Connection):
            return  # the event loop's connections: only the log thread's are stalled
        execute = conn.execute

        def slow_commit(query: Any, *args: Any, **kwargs: Any) -> Any:
            if query == "COMMIT" and not stalled:
                stalled.append(QUESTDB_PG_IDLE_TIMEOUT_S + 1.0)
                time.sleep(stalled[0])  # mid-transaction: the log is held
            return execute(query, *args, **kwargs)

        conn.execute = slow_commit  # type: ignore[method-assign]

    async def scenario() -> int:
        store = open_store(managed.store_url)  # with the store boundary's retries
        store.inner.on_connect = on_connect
        await store.open()
        try:
            session = await store.sessions.create_session(draft_session(), actor="t")
            await store.sessions.add_event(session.id, actor="t", reason="after a stall")
            events = await store.sessions.list_events(session.id)
            return sum(1 for e in events if e.reason == "after a stall")
        finally:
            await store.close()

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(scenario()) == 1
    assert stalled
    lost = [r for r in caplog.records if "connection lost mid-transaction" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in caplog.records]
    silent_s = float(lost[0].getMessage().split("s after the first round trip")[0].split()[-1])
    assert silent_s >= QUESTDB_PG_IDLE_TIMEOUT_S


def test_a_log_transaction_frozen_past_its_bound_is_abandoned(
    own_questdb: Callable[..., qs.ServerHandle], caplog: pytest.LogCaptureFixture
) -> None:
    """A group commit whose server freezes mid-transaction (SIGSTOP) would hold the
    session log, and keep the collector paused, until the server answered: the server's
    idle timeout cuts a silent client, never a silent server. The store abandons it at
    ``log_transaction_max_s`` instead — long before the store timeout — and the
    collector runs again; once the server is back, the transaction was not committed
    and the next append goes through."""
    server = own_questdb(pg_idle_timeout_s=None)  # the server never cuts the connection
    store = QuestDBStore(server.store_url)
    store.timeout_s = 30.0
    store.log_transaction_max_s = 0.5
    frozen: list[bool] = []

    def on_connect(conn: Any) -> None:
        if not isinstance(conn, psycopg.Connection):
            return  # the event loop's connections
        execute = conn.execute

        def freeze_at_begin(query: Any, *args: Any, **kwargs: Any) -> Any:
            # frozen as the transaction begins: what it sent reaches the server only after
            # the shutdown, so the server sees the connection end before any COMMIT
            if query == "BEGIN" and arm and not frozen:
                frozen.append(True)
                sigstop(server.pid)
            return execute(query, *args, **kwargs)

        conn.execute = freeze_at_begin  # type: ignore[method-assign]

    arm = False
    store.on_connect = on_connect

    async def scenario() -> float:
        nonlocal arm
        await store.open()
        try:
            session = await store.sessions.create_session(draft_session(), actor="t")
            arm = True
            started = time.monotonic()
            try:
                with pytest.raises(StoreUnavailable):
                    await store.sessions.add_event(session.id, actor="t", reason="frozen")
                failed_after = time.monotonic() - started
                assert gc.isenabled()  # the collector's pause ended with the transaction
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert frozen
            await store.sessions.add_event(session.id, actor="t", reason="after")
            reasons = [e.reason for e in await store.sessions.list_events(session.id)]
            assert "frozen" not in reasons and reasons[-1] == "after", reasons
            return failed_after
        finally:
            await store.close()

    with caplog.at_level(logging.WARNING):
        failed_after = asyncio.run(scenario())
    assert failed_after < 10.0  # the bound, not the store's 30 s timeout, ended it
    abandoned = [r for r in caplog.records if "past its bound" in r.getMessage()]
    assert len(abandoned) == 1, [r.getMessage() for r in caplog.records]
