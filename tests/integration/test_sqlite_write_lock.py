"""Another process's SQLite write lock is waited for by polling.

Several ``ticktape serve`` (``--workers N``) share one file; the writer thread of
each takes SQLite's write lock with ``BEGIN IMMEDIATE``. While another connection
holds it, the writer tries again every 0.5 ms (not inside SQLite's busy handler,
whose sleeps grow to 25 ms and more) and commits as soon as the lock is free.
Here the "other process" is a second connection of the test holding
``BEGIN IMMEDIATE`` open. (After ``BUSY_TIMEOUT_MS``, 10 s, the write fails as
``StoreBusy``: too long a wait for a test.)
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ticktape.store.sqlite import SqliteStore
from ticktape.testing import eventually

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def counting_connection(begins: list[str]) -> type[sqlite3.Connection]:
    class Counting(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            if sql.startswith("BEGIN IMMEDIATE"):
                begins.append(sql)
            return super().execute(sql, *args)

    return Counting


def test_a_write_waits_for_the_other_writer_by_polling_then_commits(
    run: Run, tmp_path: Path, make_session: Any
) -> None:
    begins: list[str] = []
    store = SqliteStore(
        f"sqlite:///{tmp_path}/s.db", connection_factory=counting_connection(begins)
    )

    async def scenario() -> None:
        await store.open()
        other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
            before = len(begins)
            draft = make_session()
            write = asyncio.ensure_future(store.sessions.create_session(draft, actor="t"))

            async def polled_again() -> bool:
                # SQLite's busy handler would try once and sleep inside that one call
                return len(begins) >= before + 3 and not write.done()

            await eventually(polled_again, timeout_s=5.0, what="the writer polls the lock")
            other.execute("COMMIT")
            created = await asyncio.wait_for(write, 5.0)
            assert created.id == draft.id
            assert (await store.sessions.get_session(draft.id)).id == draft.id
        finally:
            other.close()
            await store.close()

    run(scenario())
