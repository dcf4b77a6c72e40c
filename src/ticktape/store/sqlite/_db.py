"""Threads, connections and error translation for the SQLite backend.

sqlite3 blocks, so every call runs on a thread: one writer thread (SQLite has one
writer at a time anyway; serialising in-process writes here avoids its busy-wait
sleeps) and a few reader threads, each with its own connection. WAL mode lets
readers run beside the writer; ``busy_timeout`` covers writers in *other*
processes (several ``ticktape serve`` on one file).

Group commit: writes that queue up while the writer is busy run together in one
transaction, each inside its own SAVEPOINT (a failing write rolls back alone),
and share one COMMIT — one fsync for the group. Each caller is answered only
after that COMMIT, so "acknowledged" still means durable and visible.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Generic, TypeVar

from ticktape.errors import StoreBusy, StoreError, StoreUnavailable
from ticktape.store.driver_errors import ErrorMap, Rule

T = TypeVar("T")

READER_THREADS = 4
MAX_GROUP_WRITES = 128  # writes sharing one commit, at most
BUSY_TIMEOUT_MS = 10_000  # another process holding the write lock: wait this long, then StoreBusy
_MIGRATION_MARK = "-- migration:"


#: Every sqlite3 (and file system) error this backend can meet, as a ticktape store
#: error (first match wins).
ERRORS = ErrorMap(
    "SQLite",
    (sqlite3.Error, OSError),
    [
        Rule(
            sqlite3.OperationalError,
            StoreBusy,
            "{what}: the SQLite database is busy ({text})",
            contains=("locked", "busy"),
        ),
        Rule(
            sqlite3.OperationalError,
            StoreUnavailable,
            "{what}: cannot use the SQLite database ({text})",
            contains=("unable to open", "disk I/O", "readonly"),
        ),
        Rule(OSError, StoreUnavailable, "{what}: cannot use the SQLite database ({text})"),
        Rule(sqlite3.Error, StoreError, "{what}: SQLite error ({text})"),
    ],
)


def migrations() -> list[tuple[int, list[str]]]:
    """(version, statements) blocks of ``_schema.sql``, in order."""
    text = resources.files("ticktape.store.sqlite").joinpath("_schema.sql").read_text()
    blocks: list[tuple[int, list[str]]] = []
    for chunk in text.split(_MIGRATION_MARK)[1:]:
        header, _, body = chunk.partition("\n")
        statements = [s.strip() for s in body.split(";\n") if _strip_comments(s).strip()]
        blocks.append((int(header.strip()), statements))
    return blocks


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))


@dataclass
class _Write(Generic[T]):
    """A queued write and where to deliver its outcome (on its event loop)."""

    fn: Callable[[sqlite3.Connection], T]
    what: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]

    def settle(self, result: object, error: BaseException | None) -> None:
        def deliver() -> None:
            if self.future.done():  # the caller was cancelled meanwhile
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)  # type: ignore[arg-type]

        self.loop.call_soon_threadsafe(deliver)


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._queued: list[_Write[Any]] = []
        self._queued_lock = threading.Lock()

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
        with ERRORS.wrap("open the store"):
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
        with ERRORS.wrap(what):
            return await asyncio.get_running_loop().run_in_executor(pool, fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``fn`` inside a write transaction on the writer thread; return once committed.

        ``fn`` may share its transaction with other queued writes (group commit) but
        runs in its own savepoint: if it raises, only its changes are rolled back.
        """
        if self._writer is None:
            raise StoreUnavailable(f"{what}: the SQLite store is not open")
        loop = asyncio.get_running_loop()
        op: _Write[T] = _Write(fn, what, loop, loop.create_future())
        with self._queued_lock:
            self._queued.append(op)
        self._writer.submit(self._commit_group)
        return await op.future

    def _commit_group(self) -> None:
        with self._queued_lock:
            group, self._queued = self._queued[:MAX_GROUP_WRITES], self._queued[MAX_GROUP_WRITES:]
        if not group:
            return  # an earlier group already took these writes
        conn = self._connection()
        outcomes: list[tuple[object, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for op in group:
                op.settle(None, ERRORS.translate(exc, op.what))
            return
        for op in group:
            conn.execute("SAVEPOINT ticktape_write")
            try:
                result = op.fn(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO ticktape_write")
                conn.execute("RELEASE ticktape_write")
                outcomes.append(
                    (
                        None,
                        ERRORS.translate(exc, op.what) if isinstance(exc, sqlite3.Error) else exc,
                    )
                )
                continue
            conn.execute("RELEASE ticktape_write")
            outcomes.append((result, None))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            outcomes = [(None, ERRORS.translate(exc, op.what)) for op in group]
        for op, (value, failure) in zip(group, outcomes, strict=True):
            op.settle(value, failure)

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
