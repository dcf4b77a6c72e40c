"""Another process's SQLite write lock is waited for by polling, then given up on.

Several ``ticktape serve`` (``--workers N``) share one file; the writer thread of
each takes SQLite's write lock with ``BEGIN IMMEDIATE``. While another connection
holds it, the writer tries again every ``BUSY_POLL_S`` (not in SQLite's busy
handler, whose sleeps grow to 25 ms and more), and after ``BUSY_TIMEOUT_MS`` the
write fails as :class:`StoreBusy`. Here the "other process" is a second
connection of the test holding ``BEGIN IMMEDIATE`` open.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from ticktape.errors import StoreBusy
from ticktape.store.sqlite import _db
from ticktape.testing import eventually

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def counting_connection(begins: list[str]) -> type[sqlite3.Connection]:
    class Counting(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            if sql.startswith("BEGIN IMMEDIATE"):
                begins.append(sql)
            return super().execute(sql, *args)

    return Counting


def insert(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    return conn.execute("INSERT INTO t VALUES (1)").rowcount


def test_a_write_waits_for_the_other_writer_by_polling_then_commits(
    run: Run, tmp_path: Path
) -> None:
    begins: list[str] = []
    db = _db.Database(tmp_path / "s.db", connection_factory=counting_connection(begins))

    async def scenario() -> None:
        await db.open()
        try:
            other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
            before = len(begins)
            write = asyncio.ensure_future(db.write(insert, "insert"))

            async def polled_again() -> bool:
                return len(begins) >= before + 3 and not write.done()

            await eventually(polled_again, timeout_s=5.0, what="the writer polls the lock")
            other.execute("COMMIT")
            other.close()
            assert await asyncio.wait_for(write, 5.0) == 1
        finally:
            await db.close()

    run(scenario())


def test_a_lock_held_past_the_busy_timeout_fails_the_write_as_busy(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_db, "BUSY_TIMEOUT_MS", 200)
    db = _db.Database(tmp_path / "s.db")

    async def scenario() -> None:
        await db.open()
        other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreBusy):
                await asyncio.wait_for(db.write(insert, "insert"), 10.0)
            other.execute("ROLLBACK")
            assert await asyncio.wait_for(db.write(insert, "insert"), 10.0) == 1  # works again
        finally:
            other.close()
            await db.close()

    run(scenario())
