"""A new PG-wire connection the server closes during its handshake is opened again.

On a loaded machine a handshake can outlast the managed server's 1.5 s
``pg.net.connection.timeout``, and the server closes it ("server closed the connection
unexpectedly"). Such a connect is made again at once, ``QUESTDB_CONNECT_ATTEMPTS`` in
all, before the call fails: otherwise the failed connect marks the store failing writes
and every start is refused (503) for ``FAILURE_HOLD_S`` — and the readiness check, which
the store boundary does not retry, fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.conftest import Run
from tests.integration.pg_proxy import HandshakeCloser
from ticktape.config import QUESTDB_CONNECT_ATTEMPTS
from ticktape.errors import StoreUnavailable
from ticktape.store import RetryingStore, open_store
from ticktape.store.questdb import QuestDBAddress

pytestmark = pytest.mark.questdb


@contextlib.asynccontextmanager
async def _through_proxy(qdb_url: str) -> AsyncIterator[tuple[HandshakeCloser, RetryingStore]]:
    """A store whose PG wire goes through a :class:`HandshakeCloser`, opened; every use of
    a connection opens a new one."""
    async with HandshakeCloser(QuestDBAddress.from_url(qdb_url)).serving() as proxy:
        store: RetryingStore = open_store(proxy.url())
        async with store:
            store.inner.idle_reconnect_s = 0  # type: ignore[attr-defined]
            yield proxy, store


def test_connections_closed_during_their_handshake_are_opened_again(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """Every new connection's first tries closed, up to the last: a read (the readiness
    check, not retried by the store boundary) and a create (on the log thread's
    connections) below the boundary work, and the store is not failing writes."""

    async def scenario() -> None:
        async with _through_proxy(qdb_url) as (proxy, store):
            proxy.doomed = QUESTDB_CONNECT_ATTEMPTS - 1
            await store.check_ready()
            assert proxy.doomed == 0
            proxy.doomed = QUESTDB_CONNECT_ATTEMPTS - 1
            created = await store.inner.sessions.create_session(make_session(), actor="t")
            assert proxy.doomed == 0
            assert await store.inner.sessions.get_session(created.id) == created
            assert proxy.closed == 2 * (QUESTDB_CONNECT_ATTEMPTS - 1)
            assert store.write_failure is None
            assert store.write_failures == 0

    run(scenario())


def test_a_connect_closed_in_every_attempt_fails_the_call(qdb_url: str, run: Run[Any]) -> None:
    async def scenario() -> None:
        async with _through_proxy(qdb_url) as (proxy, store):
            proxy.doomed = QUESTDB_CONNECT_ATTEMPTS
            with pytest.raises(StoreUnavailable, match="server closed the connection"):
                await store.check_ready()
            assert proxy.doomed == 0
            assert store.write_failures == 1
            assert store.write_failure is not None

    run(scenario())
