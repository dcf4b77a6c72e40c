"""A SQLite store written before migration 11 opens with its running sessions' progress.

Until migration 11 an owner's published stats lived in one JSON map per instance row
(``instances.progress``); since, they are one ``instance_progress`` row per session. The
store is made by this code, taken back to the layout of migration 10 by hand (the map
column holding what the rows held, the rows' table dropped, the schema version 10), and
opened again: the migration must carry every session's stats over, so a running
session reads the same stats and lease before and after.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ticktape.domain import Session, Stats
from ticktape.store.sqlite import SqliteStore

OWNER = "migration-test/1"


def _back_to_migration_10(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ALTER TABLE instances ADD COLUMN progress TEXT NOT NULL DEFAULT '{}'")
        conn.execute(
            "UPDATE instances SET progress = (SELECT json_group_object(sid, "
            "json_array(n_trades, n_orderbook, n_errors)) FROM instance_progress AS p "
            "WHERE p.token = instances.token)"
        )
        conn.execute("DROP TABLE instance_progress")
        conn.execute("PRAGMA user_version = 10")
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.fixture
def store(run: Callable[..., Any], tmp_path: Path) -> Iterator[SqliteStore]:
    """The store the running_session fixture writes to: a file this test reopens."""
    opened = SqliteStore(f"sqlite:///{tmp_path / 'old.db'}")
    run(opened.open())
    yield opened
    run(opened.close())


def test_a_store_of_migration_10_keeps_its_running_sessions_progress(
    run: Callable[..., Any],
    tmp_path: Path,
    store: SqliteStore,
    running_session: Callable[..., Session],
) -> None:
    published = [Stats(5, 6, 0), Stats(7, 0, 2)]
    running = [running_session(owner=OWNER) for _ in published]
    run(
        store.sessions.renew_instance(
            OWNER,
            lease_expires_at=datetime.now(UTC) + timedelta(minutes=20),
            progress={s.id: stats for s, stats in zip(running, published, strict=True)},
        )
    )
    seen = [run(store.sessions.get_session(s.id)) for s in running]
    run(store.close())
    assert [s.stats for s in seen] == published  # the progress rows are what reads show
    path = tmp_path / "old.db"
    _back_to_migration_10(path)
    conn = sqlite3.connect(path)
    try:
        (stored,) = conn.execute("SELECT progress FROM instances").fetchone()
    finally:
        conn.close()
    assert len(stored) > 2  # the old layout holds the map

    async def reopened() -> list[Session]:
        again = SqliteStore(f"sqlite:///{path}")
        await again.open()
        try:
            return [await again.sessions.get_session(s.id) for s in seen]
        finally:
            await again.close()

    assert run(reopened()) == seen
    conn = sqlite3.connect(path)
    try:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(instances)")]
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    finally:
        conn.close()
    assert "progress" not in columns
    assert version >= 11
