"""Connections QuestDB closed while idle are replaced before use, not failed on.

QuestDB closes a PG-wire connection left idle for ``pg.net.connection.timeout`` (300 s
by default). A 10-minute hold with no starts or stops left the session log's
connections idle that long, and the first transitions of the shutdown after it failed
with "server closed the connection unexpectedly" (stop 16's 3,000-session ramp; the
retries then passed). Here the server's idle timeout is 1.5 s, and every connection the
store opened is seen closed by the server before the store is used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import fail_session
from ticktape import questdb_server as qs
from ticktape.domain import Reason
from ticktape.store.questdb import QuestDBStore
from ticktape.testing import draft_session

pytestmark = pytest.mark.questdb

SERVER_IDLE_MS = 1500  # the server's pg.net.connection.timeout here
CLOSE_WAIT_S = 60.0  # the server closes them within its timeout; slack for a loaded host


@pytest.fixture
def questdb(own_questdb: Callable[..., qs.ServerHandle]) -> qs.ServerHandle:
    return own_questdb(("pg.net.connection.timeout", str(SERVER_IDLE_MS)))


def _closed_by_server(fd: int) -> bool:
    """The peer closed socket ``fd``: it reads as end of file (nothing is consumed)."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            return sock.recv(1, socket.MSG_PEEK) == b""
        return False
    except OSError:
        return True  # reset by the peer: closed too
    finally:
        sock.close()


def _await_server_close(fds: list[int]) -> None:
    """Block until the server has closed every socket in ``fds`` (each becomes readable
    when it does: select wakes on that, no fixed sleep)."""
    deadline = time.monotonic() + CLOSE_WAIT_S
    open_fds = list(fds)
    while open_fds:
        left = deadline - time.monotonic()
        assert left > 0, f"QuestDB did not close {len(open_fds)} idle connection(s)"
        select.select(open_fds, [], [], left)
        open_fds = [fd for fd in open_fds if not _closed_by_server(fd)]


def test_connections_the_server_closed_while_idle_are_replaced_before_use(
    questdb: qs.ServerHandle,
) -> None:
    async def scenario() -> None:
        store = QuestDBStore(questdb.store_url)
        opened: list[Any] = []
        store.on_connect = opened.append  # the log thread's connections too
        store.idle_reconnect_s = SERVER_IDLE_MS / 1000 / 2
        await store.open()
        try:
            first = await store.sessions.create_session(draft_session(), actor="t")
            assert (await store.sessions.get_session(first.id)).id == first.id
            sockets = [c.pgconn.socket for c in opened if not c.closed]
            assert len(sockets) >= 3  # the log writer, a reader, the group commit's own
            before = len(opened)
            await asyncio.to_thread(_await_server_close, sockets)

            # every kind of use after the server closed them: the group commit (log
            # thread), a read (pooled reader), a transition (the log writer and thread)
            second = await store.sessions.create_session(draft_session(), actor="t")
            assert (await store.sessions.get_session(second.id)).id == second.id
            await fail_session(store, second, Reason.START_FAILED)
            assert store.write_failure is None  # no use failed on a closed connection
            assert len(opened) > before  # fresh connections replaced the closed ones
        finally:
            await store.close()

    asyncio.run(scenario())
