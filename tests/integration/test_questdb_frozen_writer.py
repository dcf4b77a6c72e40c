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
from collections.abc import Callable

import psycopg
import pytest

from tests.integration.conftest import fail_session
from ticktape import questdb_server as qs
from ticktape.config import (
    QUESTDB_IDLE_RECONNECT_S,
    QUESTDB_IDLE_RECONNECT_SHARE,
    QUESTDB_PG_IDLE_TIMEOUT_S,
)
from ticktape.domain import Reason
from ticktape.store import open_store
from ticktape.store.questdb import QuestDBStore
from ticktape.testing import draft_session

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
