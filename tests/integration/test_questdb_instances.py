"""An instance's first lease row goes in whatever the other instances' rows say.

``tt_instances`` is a non-partitioned QuestDB table, which refuses a row whose
designated timestamp is older than its newest ("cannot insert rows out of order"). Three
instance processes started together on one server each inserted their first row stamped
by their own clock a moment before sending it; one of them landed behind another's and
its lease renewal failed (stop 22's shutdown benchmark).

In the same run each later renewal's first attempt met a connection the server had
closed, and its retry on a fresh one worked at once; yet each such attempt kept the
store "failing writes" for FAILURE_HOLD_S, so every create was refused. A failure that
the call's own retry fixed at once is forgotten by the store boundary.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.conftest import Run
from tests.integration.conftest import opened_stores
from ticktape.domain import utcnow
from ticktape.store import RetryingStore
from ticktape.store.questdb import QuestDBAddress, QuestDBStore

pytestmark = pytest.mark.questdb

ROUNDS = 10  # rounds of three instances renewing their first rows at once
INSTANCES = 3


def _table(url: str) -> tuple[str, str]:
    address = QuestDBAddress.from_url(url)
    return address.conninfo, f"{address.prefix}instances"


def _rows(url: str) -> dict[str, datetime]:
    conninfo, table = _table(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return dict(conn.execute(f"SELECT token, expires FROM {table}").fetchall())


@pytest.fixture
def questdb_stores(qdb_url: str, run: Run[object]) -> Iterator[list[RetryingStore]]:
    """Three instances' stores on one QuestDB, on the same tables, with the retry layer
    (two renewals of ``tt_instances`` at once may meet "table busy": retried there)."""
    with opened_stores(qdb_url, INSTANCES, run) as opened:
        yield opened


def test_an_instance_row_goes_in_behind_a_newer_row_and_renews_after(
    qdb_url: str, questdb_stores: list[RetryingStore], run: Run[object]
) -> None:
    store = questdb_stores[0]
    conninfo, table = _table(qdb_url)
    ahead = utcnow() + timedelta(hours=1)  # another instance's row, stamped by a clock ahead
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {table} (token, expires, progress, ts) VALUES (%s, %s, %s, %s)",
            ("ahead/1", utcnow(), "{}", ahead),
        )
    first = utcnow() + timedelta(seconds=10)
    run(store.sessions.renew_instance("me/1", lease_expires_at=first, progress={}))
    assert _rows(qdb_url)["me/1"] == first.replace(tzinfo=None)
    later = first + timedelta(seconds=2)  # the next heartbeat updates the row in place
    run(store.sessions.renew_instance("me/1", lease_expires_at=later, progress={}))
    rows = _rows(qdb_url)
    assert rows["me/1"] == later.replace(tzinfo=None)
    assert sorted(rows) == ["ahead/1", "me/1"]
    assert store.write_failure is None


def test_instances_starting_together_all_get_their_rows(
    qdb_url: str, questdb_stores: list[RetryingStore], run: Run[object]
) -> None:
    async def first_rows(round_: int) -> None:
        expires = utcnow() + timedelta(seconds=10)
        await asyncio.gather(
            *(
                store.sessions.renew_instance(
                    f"i{n}/{round_}", lease_expires_at=expires, progress={}
                )
                for n, store in enumerate(questdb_stores)
            )
        )

    for round_ in range(ROUNDS):
        run(first_rows(round_))
    assert len(_rows(qdb_url)) == ROUNDS * INSTANCES


def _cut(conn: Any) -> None:
    """Shut ``conn``'s socket down under it, as a server closing it does: its next use
    fails with "server closed the connection unexpectedly"."""
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()


def test_a_renewal_its_retry_fixed_at_once_leaves_the_store_healthy(
    questdb_stores: list[RetryingStore], run: Run[object]
) -> None:
    store = questdb_stores[0]
    backend = store.inner
    assert isinstance(backend, QuestDBStore)
    opened: list[Any] = []
    backend.on_connect = opened.append
    backend.idle_reconnect_s = 3600.0  # kept between uses: the cut one is used again
    expires = utcnow() + timedelta(seconds=10)
    run(store.sessions.renew_instance("me/1", lease_expires_at=expires, progress={}))
    [lease] = opened  # the renewal's own connection, opened on its first use
    _cut(lease)
    failures = store.write_failures
    run(store.sessions.renew_instance("me/1", lease_expires_at=expires, progress={}))
    assert store.write_failures == failures + 1  # the first attempt failed, was counted
    assert lease.closed and len(opened) == 2  # dropped at once, the retry's is fresh
    assert store.write_failure is None  # and the store is not held "failing"
