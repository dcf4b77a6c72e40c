"""Every session-id SYMBOL column of the QuestDB store, and the idempotency keys':
capacity 1,048,576, NOCACHE.

QuestDB 9.3.4's lookup of a symbol value misses now and then while new values are
added, less often the larger the column's capacity (docs/questdb-notes.md §7). A new
store's tables are made so; a store made before (capacity 65,536, the log's and the
tick tables' ids cached) gets them when an instance opens it — while another instance
keeps creating sessions (with idempotency keys) and writing ticks, none of which is lost
or refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import Run
from tests.integration.conftest import assert_kept
from tests.integration.questdb_fencing import counts, start
from ticktape.feeds.sim import SimExchange
from ticktape.store import RetryingStore, open_store
from ticktape.store.questdb import QuestDBAddress
from ticktape.ticks import TickCounts

pytestmark = pytest.mark.questdb

CAPACITY = 1_048_576
OLD_CAPACITY = 65_536
#: (table without prefix, column): every table whose session id is a SYMBOL, and the keys
COLUMNS = (
    ("session_log", "id"),
    ("trades", "session_id"),
    ("orderbook", "session_id"),
    ("gaps", "session_id"),
    ("result_summary", "session_id"),
    ("result_orders", "session_id"),
    ("result_fills", "session_id"),
    ("result_equity", "session_id"),
    ("session_keys", "idempotency_key"),
)
OLD_CACHED = {"session_log", "trades", "orderbook"}  # as the tables were made before
OWNER = "owner-1"


async def _sql(address: QuestDBAddress, *statements: str) -> list[tuple[Any, ...]]:
    """The last statement's rows, on a connection of its own (the suite's server closes
    one idle for 1.5 s)."""
    async with await psycopg.AsyncConnection.connect(address.conninfo, autocommit=True) as conn:
        for sql in statements:
            cur = await conn.execute(sql)
        return await cur.fetchall() if cur.description else []


async def _states(address: QuestDBAddress) -> dict[str, tuple[int, bool]]:
    """table → (capacity, cached) of its session-id column."""
    states = {}
    for table, column in COLUMNS:
        rows = await _sql(
            address,
            "SELECT symbolCapacity, symbolCached FROM "
            f"table_columns('{address.prefix}{table}') WHERE \"column\" = '{column}'",
        )
        states[table] = (int(rows[0][0]), bool(rows[0][1]))
    return states


async def _shown(address: QuestDBAddress, want: dict[str, Any]) -> None:
    """Until the tables show ``want`` (a WAL table applies an ALTER later)."""
    for _ in range(600):
        if await _states(address) == want:
            return
        await asyncio.sleep(0.05)
    assert await _states(address) == want


def test_a_new_stores_session_id_columns_are_large_and_not_cached(
    qdb_url: str, run: Run[Any]
) -> None:
    async def scenario() -> None:
        async with open_store(qdb_url):
            assert await _states(QuestDBAddress.from_url(qdb_url)) == {
                table: (CAPACITY, False) for table, _ in COLUMNS
            }

    run(scenario())


def test_an_older_stores_columns_change_at_open_while_another_instance_writes(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """Instance A's store, its columns set back to what a store made before had; while A
    creates sessions and writes ticks, B opens the store: the columns change, and every
    create and tick write A made (none refused) is there, found by its id."""
    address = QuestDBAddress.from_url(qdb_url)

    async def scenario() -> None:
        a: RetryingStore = open_store(qdb_url)
        b: RetryingStore = open_store(qdb_url)
        await a.open()
        try:
            old = {}
            for table, column in COLUMNS:
                name = f"{address.prefix}{table}"
                await _sql(
                    address,
                    f"ALTER TABLE {name} ALTER COLUMN {column} SYMBOL CAPACITY {OLD_CAPACITY}",
                    *([f"ALTER TABLE {name} ALTER COLUMN {column} CACHE"] * (table in OLD_CACHED)),
                )
                old[table] = (OLD_CAPACITY, table in OLD_CACHED)
            await _shown(address, old)

            running = await start(a, make_session, OWNER)
            feed = SimExchange(running.id, ("BTC_USDT", "ETH_USDT"), rate_per_s=0)
            created: list[Any] = []
            written = TickCounts(0, 0)
            opened = asyncio.Event()
            under_way = asyncio.Event()  # both have written something

            def progress() -> None:
                if len(created) >= 5 and written.trades:
                    under_way.set()

            async def creates() -> None:
                while not opened.is_set() or len(created) < 20:
                    key = f"key-{len(created)}"
                    session = make_session(idempotency_key=key)
                    created.append(await a.sessions.create_session(session, actor="a"))
                    progress()

            async def writes() -> None:
                nonlocal written
                while not opened.is_set() or written.trades < 1000:
                    block = feed.next_block()
                    await a.ticks.write(block, owner=OWNER)
                    written = TickCounts(
                        written.trades + counts(block).trades,
                        written.orderbook + counts(block).orderbook,
                    )
                    progress()

            async def open_b() -> None:
                await under_way.wait()
                await b.open()
                opened.set()

            await asyncio.gather(creates(), writes(), open_b())
            await _shown(address, {table: (CAPACITY, False) for table, _ in COLUMNS})
            for store in (a, b):
                await store.ticks.wait_visible(30)
                assert await store.ticks.count(running.id) == written
                await assert_kept(store, created, make_session)
        finally:
            await b.close()
            await a.close()

    run(scenario())
