"""The session log's group commit while another writer holds the log ("table busy").

Another connection (another instance, here) holds the session log in a transaction, so
every attempt of this store's group commit fails "table busy" and is retried. Between
those attempts the group gives up the session-log writer's lock when another log write
of this process waits for it, an append whose caller gave up before an attempt began
is not written by it, and every attempt judges the compare-and-set anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from tests.conftest import Run
from ticktape.config import RetryPolicy
from ticktape.domain import DataType, Reason, SessionStatus
from ticktape.errors import InvalidTransition, TransitionRace
from ticktape.feeds.contract import Gap, GapCause
from ticktape.store.questdb import QuestDBStore

pytestmark = pytest.mark.questdb

OWNER = "owner-1"
WAIT_S = 30.0  # what must come does within this, even on a loaded host
# the group keeps retrying "table busy" for as long as the test holds the log (the
# default policy gives up after about 0.5 s, too short a bound for a loaded host)
PATIENT = RetryPolicy(busy_attempts=1_000_000, busy_base_s=0.001, busy_max_s=0.02)


def _watch_rollbacks(rolled_back: threading.Event) -> Callable[[Any], None]:
    """An ``on_connect`` hook: sets ``rolled_back`` at every ROLLBACK the group commit
    sends (it runs on the log thread's synchronous connections): an attempt that met
    the busy log."""

    def hook(conn: Any) -> None:
        if not isinstance(conn, psycopg.Connection):
            return
        execute = conn.execute

        def watched(query: Any, *args: Any, **kwargs: Any) -> Any:
            if str(query) == "ROLLBACK":
                rolled_back.set()
            return execute(query, *args, **kwargs)

        conn.execute = watched

    return hook


@asynccontextmanager
async def _log_held(store: QuestDBStore) -> AsyncIterator[Callable[[], Any]]:
    """The session log held by another connection's open transaction; the context gives
    the release (a ROLLBACK), which runs at the end too."""
    other = await psycopg.AsyncConnection.connect(store.address.conninfo, autocommit=True)
    held = [True]

    async def release() -> None:
        if held[0]:
            held[0] = False
            await other.execute("ROLLBACK")

    try:
        await other.execute("BEGIN")
        await other.execute(
            f"INSERT INTO {store.address.prefix}session_log (id, row_seq, ts) "
            "VALUES ('held', 1, now())"
        )
        yield release
    finally:
        with contextlib.suppress(psycopg.Error):
            await release()
        await other.close()


def test_a_group_retrying_a_busy_log_lets_another_log_write_of_its_process_go_first(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """A gap write (the session-log writer's lock, another table) asked while a group
    commit retries "table busy" is done while the log is still held and the group still
    waiting; the group then commits once the log is free. (Holding the lock through the
    retries, the gap write waited for the whole group.)"""
    store = QuestDBStore(qdb_url, retry=PATIENT)
    rolled_back = threading.Event()
    store.on_connect = _watch_rollbacks(rolled_back)
    running = make_session(owner=OWNER)
    waiting = make_session()
    gap = Gap("BTC_USDT", DataType.TRADES, 1_000, 2_000, GapCause.DISCONNECT, 3, "x")

    async def scenario() -> None:
        await store.open()
        try:
            await store.sessions.create_session(running, actor="t")
            async with _log_held(store) as release:
                rolled_back.clear()
                create = asyncio.ensure_future(store.sessions.create_session(waiting, actor="t"))
                assert await asyncio.to_thread(rolled_back.wait, WAIT_S)  # it met the busy log
                await asyncio.wait_for(
                    store.ticks.write_gaps(running.id, [gap], owner=OWNER), WAIT_S
                )
                assert not create.done()  # the log is still held: the group still retries
                await release()
                assert await asyncio.wait_for(create, WAIT_S) == waiting
            assert await store.ticks.read_gaps(running.id) == [gap]
            assert await store.sessions.get_session(waiting.id) == waiting
        finally:
            await store.close()

    run(scenario())


def test_an_append_whose_caller_gave_up_while_the_log_was_busy_is_never_written(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """A transition cancelled while its group retries "table busy" is not written when
    the log comes free: the attempts after the cancel leave it out (before, the group
    went on in the thread and committed it). An append queued after it runs in the next
    group, so its answer says the cancelled group is over."""
    store = QuestDBStore(qdb_url, retry=PATIENT)
    rolled_back = threading.Event()
    store.on_connect = _watch_rollbacks(rolled_back)
    session = make_session()
    later = make_session()

    async def scenario() -> None:
        await store.open()
        try:
            created = await store.sessions.create_session(session, actor="t")
            async with _log_held(store) as release:
                rolled_back.clear()
                stop = asyncio.ensure_future(
                    store.sessions.transition(
                        created.id,
                        expected_version=created.version,
                        to_status=SessionStatus.STOPPING,
                        actor="t",
                        reason=Reason.USER_STOP,
                    )
                )
                assert await asyncio.to_thread(rolled_back.wait, WAIT_S)  # it met the busy log
                stop.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await stop
                await release()
                # queued behind the cancelled group: answered once that group is over
                await asyncio.wait_for(store.sessions.create_session(later, actor="t"), WAIT_S)
            assert await store.sessions.get_session(created.id) == created  # never stopped
            events = await store.sessions.list_events(created.id)
            assert [e.to_status for e in events] == [SessionStatus.PENDING]
        finally:
            await store.close()

    run(scenario())


def test_two_instances_retrying_a_busy_log_for_one_session_have_exactly_one_winner(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """Two instances each ask a transition of the same session version while the log
    is held, so both groups retry "table busy"; once it is free exactly one commits and
    the other's retry, reading the committed state anew, finds the session changed."""
    stores = [QuestDBStore(qdb_url, retry=PATIENT) for _ in range(2)]
    rolled_back = [threading.Event() for _ in stores]
    for store, event in zip(stores, rolled_back, strict=True):
        store.on_connect = _watch_rollbacks(event)
    session = make_session()

    async def scenario() -> None:
        for store in stores:
            await store.open()
        try:
            created = await stores[0].sessions.create_session(session, actor="t")
            async with _log_held(stores[0]) as release:
                for event in rolled_back:
                    event.clear()
                asks = [
                    asyncio.ensure_future(
                        store.sessions.transition(
                            created.id,
                            expected_version=created.version,
                            to_status=to_status,
                            actor=f"i{k}",
                            reason=Reason.USER_STOP,
                        )
                    )
                    for k, (store, to_status) in enumerate(
                        zip(stores, (SessionStatus.STOPPING, SessionStatus.FAILED), strict=True)
                    )
                ]
                for event in rolled_back:  # both groups met the busy log
                    assert await asyncio.to_thread(event.wait, WAIT_S)
                await release()
                results = await asyncio.wait_for(
                    asyncio.gather(*asks, return_exceptions=True), WAIT_S
                )
            winners = [r for r in results if not isinstance(r, BaseException)]
            assert len(winners) == 1, results
            for r in results:
                assert not isinstance(r, BaseException) or isinstance(
                    r, TransitionRace | InvalidTransition
                ), r
            events = await stores[1].sessions.list_events(created.id)
            assert [e.to_status for e in events] == [SessionStatus.PENDING, winners[0].status]
        finally:
            for store in stores:
                await store.close()

    run(scenario())
