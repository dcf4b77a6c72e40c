"""Threads, connections and error translation for the SQLite backend.

sqlite3 blocks, so every call runs on a thread: one writer thread (SQLite has one
writer at a time anyway; serialising in-process writes here avoids its busy-wait
sleeps) and a few reader threads, each with its own connection. WAL mode lets
readers run beside the writer; ``busy_timeout`` covers writers in *other*
processes (several ``ticktape serve`` on one file).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TypeVar

from ticktape.errors import StoreBusy, StoreError, StoreUnavailable, TicktapeError

T = TypeVar("T")

READER_THREADS = 4
BUSY_TIMEOUT_MS = 10_000  # another process holding the write lock: wait this long, then StoreBusy
_MIGRATION_MARK = "-- migration:"


def translate(exc: sqlite3.Error, what: str) -> StoreError:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return StoreBusy(f"{what}: the SQLite database is busy ({text})")
    if isinstance(exc, sqlite3.OperationalError) and (
        "unable to open" in text or "disk I/O" in text or "readonly" in text
    ):
        return StoreUnavailable(f"{what}: cannot use the SQLite database ({text})")
    return StoreError(f"{what}: SQLite error ({text})")


def migrations() -> list[tuple[int, list[str]]]:
    """(version, statements) blocks of ``sqlite_schema.sql``, in order."""
    text = resources.files("ticktape.store").joinpath("sqlite_schema.sql").read_text()
    blocks: list[tuple[int, list[str]]] = []
    for chunk in text.split(_MIGRATION_MARK)[1:]:
        header, _, body = chunk.partition("\n")
        statements = [s.strip() for s in body.split(";\n") if _strip_comments(s).strip()]
        blocks.append((int(header.strip()), statements))
    return blocks


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # FULL: a commit is on disk when acknowledged (invariant 2), power loss included.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="ticktape-sqlite-writer")
        self._readers = ThreadPoolExecutor(
            READER_THREADS, thread_name_prefix="ticktape-sqlite-reader"
        )
        await self._run(self._writer, self._migrate, "open the store")

    def _migrate(self) -> None:
        conn = self._connection()
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            for version, statements in migrations():
                if version <= current:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        for pool in (self._writer, self._readers):
            if pool is not None:
                pool.shutdown(wait=True)
        self._writer = self._readers = None
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    async def _run(self, pool: ThreadPoolExecutor | None, fn: Callable[[], T], what: str) -> T:
        if pool is None:
            raise StoreUnavailable(f"{what}: the SQLite store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn)
        except TicktapeError:
            raise
        except sqlite3.Error as exc:
            raise translate(exc, what) from exc

    async def write(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``fn`` in one write transaction (BEGIN IMMEDIATE … COMMIT) on the writer thread."""

        def run() -> T:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(self._writer, run, what)

    async def read(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``fn`` in one read transaction on a reader thread (a consistent snapshot)."""

        def run() -> T:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return await self._run(self._readers, run, what)
