"""A stop's session-log appends go in few transactions, on a real server.

While a shutdown is under way (from :meth:`~ticktape.store.base.TickStore.expect_seals`
to :meth:`~ticktape.store.base.TickStore.seals_done`) an instance's stop requests, then
its terminal transitions, arrive by the hundred at once; taken 256 to a transaction, a
thousand of them held the session log for four transactions per instance, each paying
its BEGIN, reads, COMMIT and read-back and each colliding with the other instances'.
The shutdown's own INFO line (``stop phase session log``) says how many groups its
appends took.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import Run
from ticktape.config import RetryPolicy
from ticktape.domain import Session
from ticktape.store import RetryingStore
from ticktape.store.questdb import QuestDBStore

pytestmark = pytest.mark.questdb

SESSIONS = 600  # more than two groups of 256


def _session_log_line(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    lines = [r.getMessage() for r in caplog.records if "stop phase session log" in r.getMessage()]
    assert len(lines) == 1, lines
    return dict(re.findall(r"(\w+)=(\S+)", lines[0]))


def test_a_stops_appends_of_hundreds_of_sessions_share_a_transaction(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = stores[0]

    async def scenario() -> None:
        made = await asyncio.gather(
            *(store.sessions.create_session(make_session(), actor="t") for _ in range(SESSIONS))
        )
        caplog.set_level(logging.INFO, logger="ticktape.store.questdb")
        store.ticks.expect_seals(SESSIONS, 60.0)
        await asyncio.gather(
            *(store.sessions.add_event(s.id, actor="t", reason="stop_note") for s in made)
        )
        store.ticks.seals_done()

    run(scenario())
    figures = _session_log_line(caplog)
    assert int(figures["appends"]) == SESSIONS
    # 256 to a transaction, 600 appends take three at least
    assert int(figures["groups"]) <= 2, figures


QUICK = RetryPolicy(busy_attempts=3, busy_base_s=0.001, busy_max_s=0.02)
WAIT_S = 30.0  # what must come does within this, even on a loaded host
BUSY_ANSWERS = 8  # "table busy" answers a stop's group outlasts: more than QUICK's 3


def _count_rollbacks(
    armed: threading.Event, enough: threading.Event, after: int
) -> Callable[[Any], None]:
    """An ``on_connect`` hook that, once ``armed``, sets ``enough`` when the group commit
    sent ``after`` ROLLBACKs (each an attempt that met the busy log)."""
    seen = [0]

    def hook(conn: Any) -> None:
        if not isinstance(conn, psycopg.Connection):
            return
        execute = conn.execute

        def watched(query: Any, *args: Any, **kwargs: Any) -> Any:
            if str(query) == "ROLLBACK" and armed.is_set():
                seen[0] += 1
                if seen[0] >= after:
                    enough.set()
            return execute(query, *args, **kwargs)

        conn.execute = watched

    return hook


def test_during_a_stop_a_group_outlasts_a_log_held_past_its_busy_attempts(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Session]
) -> None:
    """Another instance's stop holds the log for a whole group: this instance's group
    keeps trying past its ``busy_attempts`` (here 3) and commits once the log is free,
    instead of failing "table busy" to the store boundary."""
    store = QuestDBStore(qdb_url, retry=QUICK)
    armed, enough = threading.Event(), threading.Event()
    store.on_connect = _count_rollbacks(armed, enough, BUSY_ANSWERS)
    session = make_session()

    async def scenario() -> None:
        await store.open()
        try:
            await store.sessions.create_session(session, actor="t")
            other = await psycopg.AsyncConnection.connect(store.address.conninfo, autocommit=True)
            try:
                await other.execute("BEGIN")
                await other.execute(
                    f"INSERT INTO {store.address.prefix}session_log (id, row_seq, ts) "
                    "VALUES ('held', 1, now())"
                )
                armed.set()
                store.ticks.expect_seals(1, 60.0)
                note = asyncio.ensure_future(
                    store.sessions.add_event(session.id, actor="t", reason="stop_note")
                )
                counted = asyncio.ensure_future(asyncio.to_thread(enough.wait, WAIT_S))
                await asyncio.wait([note, counted], return_when=asyncio.FIRST_COMPLETED)
                assert not note.done(), note  # past its 3 attempts, it still waits
                assert counted.result()
                await other.execute("ROLLBACK")
                event = await asyncio.wait_for(note, WAIT_S)
                assert event.reason == "stop_note"
                store.ticks.seals_done()
            finally:
                await other.close()
        finally:
            await store.close()

    run(scenario())
