"""Acknowledged appends while the session log's metadata changes.

QuestDB 9.3.4 answers a group's pipelined INSERTs ``INSERT 0 1`` and its COMMIT as done,
yet keeps none of the rows sent after the group's first round trip when the log's
metadata changed since the connection last used it (another connection's ``ALTER TABLE
… ADD COLUMN`` — a rolling upgrade's migration — or the ``id`` symbol outgrowing its
capacity). The group commit reads its rows back after COMMIT and judges the missing
ones anew, so every acknowledged create is in the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import Run
from ticktape.store.questdb import QuestDBStore

pytestmark = pytest.mark.questdb

ROUNDS = 3  # metadata changes, each followed by a round of concurrent creates
CONCURRENT = 16  # creates of a round, at once: they share groups of several appends


def test_creates_acknowledged_across_a_change_of_the_logs_columns_are_all_in_the_log(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """Rounds of concurrent creates, each after another connection added a column to
    the log: every create that returned is in the log and read back whole."""
    store = QuestDBStore(qdb_url)

    async def scenario() -> None:
        await store.open()
        other = await psycopg.AsyncConnection.connect(store.address.conninfo, autocommit=True)
        created = []
        try:
            for round_ in range(ROUNDS + 1):
                if round_:
                    await other.execute(
                        f"ALTER TABLE {store.address.prefix}session_log "
                        f"ADD COLUMN extra{round_} INT"
                    )
                drafts = [make_session() for _ in range(CONCURRENT)]
                created += await asyncio.gather(
                    *(store.sessions.create_session(s, actor="t") for s in drafts)
                )
            cur = await other.execute(f"SELECT DISTINCT id FROM {store.address.prefix}session_log")
            in_log = {str(r[0]) for r in await cur.fetchall()}
            assert sorted(s.id for s in created if s.id not in in_log) == []
            for session in created:
                assert await store.sessions.get_session(session.id) == session
        finally:
            await other.close()
            await store.close()

    run(scenario())
