"""Acknowledged appends while the session log's metadata changes.

QuestDB 9.3.4 answers a group's pipelined INSERTs ``INSERT 0 1`` and its COMMIT as done,
yet keeps none of the rows sent after the group's first round trip when the log's
metadata changed since the connection last used it (another connection's ``ALTER TABLE
… ADD COLUMN`` — a rolling upgrade's migration — or the ``id`` symbol outgrowing its
capacity); the same with the idempotency keys' table (``tt_session_keys``). The group
commit reads its rows back after COMMIT and judges the missing ones anew, and writes a
missing key row again, so every acknowledged create is in the log and its key finds it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import Run
from tests.integration.conftest import assert_kept
from ticktape.domain import DataType, SessionStatus
from ticktape.feeds.contract import Gap, GapCause
from ticktape.store.questdb import QuestDBStore

pytestmark = pytest.mark.questdb

ROUNDS = 3  # metadata changes, each followed by a round of concurrent creates
CONCURRENT = 16  # creates of a round, at once: they share groups of several appends
OWNER = "owner-1"
TINY_CAPACITY = 32  # session ids of a log made small on purpose


@pytest.mark.parametrize("table", ["session_log", "session_keys"])
def test_creates_acknowledged_across_a_change_of_a_tables_columns_are_all_kept(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any], table: str
) -> None:
    """Rounds of concurrent creates with idempotency keys, each after another connection
    added a column to ``table``: every create that returned is in the log, read back
    whole, and its key gives it again (never a second session)."""
    store = QuestDBStore(qdb_url)

    async def scenario() -> None:
        await store.open()
        other = await psycopg.AsyncConnection.connect(store.address.conninfo, autocommit=True)
        created = []
        try:
            for round_ in range(ROUNDS + 1):
                if round_:
                    await other.execute(
                        f"ALTER TABLE {store.address.prefix}{table} ADD COLUMN extra{round_} INT"
                    )
                drafts = [
                    make_session(idempotency_key=f"key-{round_}-{i}") for i in range(CONCURRENT)
                ]
                created += await asyncio.gather(
                    *(store.sessions.create_session(s, actor="t") for s in drafts)
                )
            cur = await other.execute(f"SELECT DISTINCT id FROM {store.address.prefix}session_log")
            in_log = {str(r[0]) for r in await cur.fetchall()}
            assert sorted(s.id for s in created if s.id not in in_log) == []
            await assert_kept(store, created, make_session)
        finally:
            await other.close()
            await store.close()

    run(scenario())


def test_gaps_written_across_a_change_of_the_gap_tables_columns_are_all_kept(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """Gap writes of several gaps, each after another connection added a column to
    ``tt_gaps``: every gap written is read back."""
    store = QuestDBStore(qdb_url)
    running = make_session(owner=OWNER)

    async def scenario() -> None:
        await store.open()
        other = await psycopg.AsyncConnection.connect(store.address.conninfo, autocommit=True)
        written: list[Gap] = []
        try:
            await store.sessions.create_session(running, actor="t")
            for round_ in range(ROUNDS + 1):
                if round_:
                    await other.execute(
                        f"ALTER TABLE {store.address.prefix}gaps ADD COLUMN extra{round_} INT"
                    )
                gaps = [
                    Gap("BTC_USDT", DataType.TRADES, at, at + 500, GapCause.DISCONNECT, 1, "x")
                    for at in range(round_ * 10_000, round_ * 10_000 + 4_000, 1_000)
                ]
                await store.ticks.write_gaps(running.id, gaps, owner=OWNER)
                written += gaps
            assert await store.ticks.read_gaps(running.id) == written
        finally:
            await other.close()
            await store.close()

    run(scenario())


def test_creates_acknowledged_while_the_logs_id_symbol_outgrows_its_capacity_are_all_kept(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """The log made again with a capacity of ``TINY_CAPACITY`` ids (the store keeps a
    log it finds), then rounds of concurrent creates of many more sessions than that:
    QuestDB grows the symbol table as it fills (a change of the log's metadata), and
    every create that returned is in the log."""
    store = QuestDBStore(qdb_url)

    async def scenario() -> None:
        await store.open()
        await store.close()
        log_table = f"{store.address.prefix}session_log"
        other = await psycopg.AsyncConnection.connect(store.address.conninfo, autocommit=True)
        created = []
        try:
            cur = await other.execute(f"SHOW CREATE TABLE {log_table}")
            ddl = str((await cur.fetchone() or [""])[0])
            tiny = re.sub(
                r"^(\s*)id SYMBOL[^,\n]*",
                rf"\1id SYMBOL CAPACITY {TINY_CAPACITY}",
                ddl,
                count=1,
                flags=re.M,
            )
            assert tiny != ddl
            await other.execute(f"DROP TABLE {log_table}")
            await other.execute(tiny)
            await store.open()  # gives the log's id its capacity (ensure_session_symbols)
            await other.execute(
                f"ALTER TABLE {log_table} ALTER COLUMN id SYMBOL CAPACITY {TINY_CAPACITY}"
            )
            for _ in range(TINY_CAPACITY * 4 // CONCURRENT):
                drafts = [make_session() for _ in range(CONCURRENT)]
                created += await asyncio.gather(
                    *(store.sessions.create_session(s, actor="t") for s in drafts)
                )
            # a connection of its own: the suite's server closes one idle for 1.5 s
            async with await psycopg.AsyncConnection.connect(
                store.address.conninfo, autocommit=True
            ) as reader:
                cur = await reader.execute(f"SELECT DISTINCT id FROM {log_table}")
                in_log = {str(r[0]) for r in await cur.fetchall()}
            assert sorted(s.id for s in created if s.id not in in_log) == []
        finally:
            await other.close()
            await store.close()

    run(scenario())


def test_history_appended_across_a_change_of_the_logs_columns_is_all_kept(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """``append_history`` (the benchmarks' bulk history) of several sessions, each round
    after another connection added a column to the log: every session is in the log
    with both its rows (created, then failed)."""
    store = QuestDBStore(qdb_url)

    async def scenario() -> None:
        await store.open()
        other = await psycopg.AsyncConnection.connect(store.address.conninfo, autocommit=True)
        appended: list[str] = []
        try:
            for round_ in range(ROUNDS + 1):
                if round_:
                    await other.execute(
                        f"ALTER TABLE {store.address.prefix}session_log "
                        f"ADD COLUMN extra{round_} INT"
                    )
                    await _column_shown(other, f"{store.address.prefix}session_log", round_)
                drafts = [make_session() for _ in range(CONCURRENT)]
                await store.sessions.append_history(
                    drafts, to_status=SessionStatus.FAILED, reason="start_failed", actor="t"
                )
                appended += [s.id for s in drafts]
            cur = await other.execute(f"SELECT id, count() FROM {store.address.prefix}session_log")
            rows = {str(r[0]): int(r[1]) for r in await cur.fetchall()}
            assert {sid: rows.get(sid, 0) for sid in appended} == dict.fromkeys(appended, 2)
        finally:
            await other.close()
            await store.close()

    run(scenario())


async def _column_shown(conn: psycopg.AsyncConnection[Any], table: str, round_: int) -> None:
    """Until the WAL table shows the column ``extra{round_}`` (it applies ``ADD COLUMN``
    later)."""
    while True:
        cur = await conn.execute(f"SELECT \"column\" FROM table_columns('{table}')")
        if f"extra{round_}" in {str(r[0]) for r in await cur.fetchall()}:
            return
        await asyncio.sleep(0.01)
