"""A query whose task is cancelled while QuestDB does not answer ends at once.

psycopg's own connection answers a cancelled task mid-query with a cancel request to the
server (up to 5 s) and a wait for the query to end (up to 5 s more): with QuestDB busy
or frozen at a shutdown, each heartbeat or runner cancelled mid-query held the exit up
to 10 s. The store's connections close instead (``_abandon.py``), and every connection
the store made is closed once it is closed itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from psycopg.pq import TransactionStatus

from tests.conftest import Run
from ticktape import questdb_server as qs
from ticktape.domain import utcnow
from ticktape.store.questdb import QuestDBStore
from ticktape.testing import eventually, sigstop
from ticktape.ticks import DataType, Gap, GapCause, TickCounts

pytestmark = pytest.mark.questdb

ENDED_S = 3.0  # a cancelled query ends within this (psycopg's cancel alone waits 5 s)
EVENTUAL_S = 30.0


def _in_flight(made: list[Any]) -> Callable[[], Any]:
    async def check() -> bool:
        return any(
            not conn.closed and conn.pgconn.transaction_status == TransactionStatus.ACTIVE
            for conn in made
        )

    return check


async def _ended_soon(task: asyncio.Task[Any]) -> float:
    """Cancel ``task`` and return how long it took to end (never cancelled again)."""
    started = time.monotonic()
    task.cancel()
    await asyncio.wait({task}, timeout=4 * ENDED_S)
    assert task.cancelled(), "the cancelled task did not end"
    return time.monotonic() - started


@pytest.mark.parametrize("what", ["heartbeat", "bounded read"])
def test_a_query_cancelled_on_a_frozen_questdb_ends_at_once_and_close_leaves_nothing(
    run: Run, own_questdb: Callable[..., qs.ServerHandle], what: str
) -> None:
    """The heartbeat's lease query (its own connection, not a bounded read) and a
    bounded read whose caller is cancelled (kept as a late read until the close) both
    end well within psycopg's 5 s cancel wait; the close with the late read out, too."""
    questdb = own_questdb()
    store = QuestDBStore(questdb.store_url)
    made: list[Any] = []
    store.on_connect = made.append  # every connection the store opens

    async def renew() -> None:
        expires = utcnow() + timedelta(seconds=10)
        await store.sessions.renew_instance("abandon-1", lease_expires_at=expires, progress={})

    async def scenario() -> None:
        await store.open()
        try:
            await renew()  # the lease connection is open
            await store.ticks.count("no-such-session")  # and a reader
            sigstop(questdb.pid)  # connections stay open; nothing answers
            try:
                work = renew() if what == "heartbeat" else store.ticks.count("no-such-session")
                task = asyncio.ensure_future(work)
                await eventually(_in_flight(made), timeout_s=EVENTUAL_S, what="a query sent")
                assert await _ended_soon(task) < ENDED_S
                started = time.monotonic()
                await asyncio.wait_for(store.close(), 4 * ENDED_S)
                assert time.monotonic() - started < ENDED_S
            finally:
                os.kill(questdb.pid, signal.SIGCONT)

            async def settled() -> bool:  # a late read ended, however it ended
                return asyncio.all_tasks() == {asyncio.current_task()}

            await eventually(settled, timeout_s=EVENTUAL_S, what="the late reads to end")
            assert [conn for conn in made if not conn.closed] == []
        finally:
            await store.close()

    run(scenario())


def test_a_reader_whose_query_was_abandoned_is_replaced(
    run: Run, own_questdb: Callable[..., qs.ServerHandle]
) -> None:
    """A pooled reader closed by a cancelled query (a tick writer's check of the
    session's owner, read on a reader, not a bounded read) is not handed out again: it
    ends at once, and the reads after it work on new connections."""
    questdb = own_questdb()
    store = QuestDBStore(questdb.store_url)
    made: list[Any] = []
    store.on_connect = made.append
    gap = Gap("BTC_USDT", DataType.TRADES, 1_000, 2_000, GapCause.DISCONNECT, 3, "x")

    async def scenario() -> None:
        await store.open()
        try:
            sigstop(questdb.pid)
            try:
                task = asyncio.ensure_future(store.ticks.write_gaps("s-1", [gap], owner="o"))
                await eventually(_in_flight(made), timeout_s=EVENTUAL_S, what="a read sent")
                assert await _ended_soon(task) < ENDED_S
            finally:
                os.kill(questdb.pid, signal.SIGCONT)
            abandoned = [conn for conn in made if conn.closed]
            assert len(abandoned) == 1
            counts = await asyncio.gather(*(store.ticks.count("none") for _ in range(8)))
            assert set(counts) == {TickCounts()}, counts
            assert [conn for conn in made if conn.closed] == abandoned  # none reused
        finally:
            await store.close()

    run(scenario())
