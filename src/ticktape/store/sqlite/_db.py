"""Threads, connections and error translation for the SQLite backend.

sqlite3 blocks, so every call runs on a thread: one writer thread (SQLite has one
writer at a time anyway; serialising in-process writes here avoids its busy-wait
sleeps) and a few reader threads, each with its own connection. WAL mode lets
readers run beside the writer (a reader's rare wait, a WAL recovery, and the
checkpoint on close use SQLite's ``busy_timeout``).

Another process's write lock (``ticktape serve --workers N``, several servers on one
file) is waited for by polling ``BEGIN IMMEDIATE`` every :data:`BUSY_POLL_S`, up to
:data:`BUSY_TIMEOUT_MS`; the writer's connection has no busy handler of its own.

Group commit: writes that queue up while the writer is busy run together in one
transaction, each inside its own SAVEPOINT (a failing write rolls back alone),
and share one COMMIT — one fsync for the group. Each caller is answered only
after that COMMIT, so "acknowledged" still means durable and visible.

Faults (disk full, I/O error, corrupt page, file removed or read-only): whatever
statement fails — BEGIN, a write, COMMIT or ROLLBACK — every write of the group
is answered with the translated error, the connection is rolled back or, if
even that fails, closed and reopened for the next group: the writer never
wedges. A failure is logged once with its cause (again only if the cause changes
or it lasts past :data:`FAILURE_LOG_EVERY_S`) and reported by
:attr:`Database.write_failure` (health, readiness, metrics) until commits work again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Generic, TypeGuard, TypeVar

from ticktape.config import STORE_TIMEOUT_S
from ticktape.errors import StoreBusy, StoreError, StoreUnavailable, WriteTimedOut
from ticktape.store.driver_errors import ErrorMap, Rule
from ticktape.throttle import LogThrottle

T = TypeVar("T")
log = logging.getLogger(__name__)

READER_THREADS = 4
MAX_GROUP_WRITES = 128  # writes sharing one commit, at most
# A group stops taking tick batches after this long, so session writes queued behind
# them (lease renewals, transitions) wait one slice at most, not the whole backlog.
BULK_GROUP_BUDGET_S = 0.05
FAILURE_HOLD_S = 5.0  # a write failure keeps the store "failing" at least this long
FAILURE_LOG_EVERY_S = 60.0  # the same write failure is logged again after this long, at most
BUSY_TIMEOUT_MS = 10_000  # another process holding the write lock: wait this long, then StoreBusy
# The writer polls for the write lock another process holds at this interval (see
# Database._begin_immediate) rather than in SQLite's busy handler, which sleeps 1, 2,
# 5, 10, 15, 20, 25 … ms between tries: two `serve --workers` on one file hold the lock
# a millisecond or two at a time, and the handler's sleeps made each wait far longer.
BUSY_POLL_S = 0.0005
# A session write (lease renewal, transition, create) that takes longer than this from
# queueing to its answer on the event loop is logged with where it waited (WriteTrace).
SLOW_SESSION_WRITE_S = 1.0
SLOW_LOG_EVERY_S = 10.0  # one slow-write line at most this often (an overload slows every write)
TRACES_KEPT = 256  # the last session writes' traces, for tests and the slow-write log
_MIGRATION_MARK = "-- migration:"


#: Every sqlite3 (and file system) error this backend can meet, as a ticktape store
#: error (first match wins). "Unavailable" means the database file cannot be used
#: right now — disk full, I/O error, corruption, removed or read-only — as opposed to a
#: bug in a statement: 503 store_unavailable, retried, and the server stays up.
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
            sqlite3.Error,
            StoreUnavailable,
            "{what}: cannot use the SQLite database ({text})",
            contains=(
                "unable to open",
                "disk I/O",
                "readonly",
                "disk is full",
                "malformed",
                "not a database",
                "out of memory",
            ),
        ),
        Rule(OSError, StoreUnavailable, "{what}: cannot use the SQLite database ({text})"),
        Rule(sqlite3.Error, StoreError, "{what}: SQLite error ({text})"),
    ],
)


def translate(exc: sqlite3.Error, what: str) -> StoreError:
    return ERRORS.translate(exc, what)


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
class WriteTrace:
    """Where one session write spent its time (monotonic seconds), for the slow-write log.

    ``queued`` (put on the writer's queue, on the event loop), ``started`` (its SQL
    began on the writer thread), ``committed`` (its group's COMMIT returned),
    ``delivered`` (its answer ran on the event loop); ``session_ahead`` / ``bulk_ahead``:
    the writes queued before it when it was queued; ``bulk_before``: tick writes the
    writer began between its queueing and its start (the priority path keeps this at
    0: a session write waits for the tick write already running, at most).
    """

    queued: float
    session_ahead: int
    bulk_ahead: int
    started: float = 0.0
    committed: float = 0.0
    delivered: float = 0.0
    bulk_before: int = 0

    def describe(self) -> str:
        return (
            f"queue {self.started - self.queued:.3f}s (behind {self.session_ahead} session "
            f"+ {self.bulk_ahead} tick writes, {self.bulk_before} tick writes ran first), "
            f"SQL+commit {self.committed - self.started:.3f}s, "
            f"back on the event loop {self.delivered - self.committed:.3f}s"
        )


@dataclass
class _Write(Generic[T]):
    """A queued write and where to deliver its outcome (on its event loop)."""

    fn: Callable[[sqlite3.Connection], T]
    what: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    trace: WriteTrace | None = None  # session writes only: tick writes are not traced

    def settle(self, result: object, error: BaseException | None) -> None:
        if self.trace is not None:
            self.trace.committed = time.monotonic()
        try:
            if self.trace is not None:
                self.loop.call_soon_threadsafe(_deliver_traced, self, result, error)
            else:
                self.loop.call_soon_threadsafe(_deliver, self.future, result, error)
        except RuntimeError:  # its event loop closed: nobody waits, and the rest of the
            # group (other loops' writes) must still be answered
            log.debug("an SQLite answer found its event loop closed", exc_info=True)


def _deliver_traced(op: _Write[Any], result: object, error: BaseException | None) -> None:
    assert op.trace is not None
    op.trace.delivered = time.monotonic()
    _deliver(op.future, result, error)


def _deliver(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Lane:
    """Threads that run callables from one queue: the writer (one) or the readers.

    Lighter than ``ThreadPoolExecutor`` + ``run_in_executor``, which made a
    ``concurrent.futures.Future`` (a Condition and its lock) and chained it to an
    asyncio future for every call: at 32 concurrent starts on SQLite those
    hand-offs were about a fifth of the event loop's time (issue 13). Here a call
    is one queue put, and its outcome comes back with one ``call_soon_threadsafe``.

    Once :meth:`shutdown` began, a job is refused (:class:`StoreUnavailable`) instead
    of queued behind the threads' stop marks, where no thread would ever run it and
    its caller would wait for ever (a shut-down executor raised at once too). A job
    that raises is logged and the thread goes on: a lane never loses a thread.
    """

    def __init__(self, threads: int, name: str) -> None:
        self.name = name
        self.closed = False
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job()
            except RuntimeError:  # its event loop closed before the answer: nobody waits
                log.debug("an SQLite answer found its event loop closed", exc_info=True)
            except Exception:  # a bug in a job: the thread must live on for the next ones
                log.exception("an SQLite %s job failed", self.name)

    def _put(self, job: Callable[[], None]) -> None:
        if self.closed:
            raise StoreUnavailable("the SQLite store is closed")
        self._queue.put(job)

    def post(self, job: Callable[[], None]) -> None:
        """Run ``job`` on a lane thread; nobody waits for it (it reports by itself)."""
        self._put(job)

    async def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a lane thread, its result or error here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            if future.cancelled():  # its caller gave up before it began
                return
            try:
                result: object = fn()
            except BaseException as exc:  # delivered to the caller, raised there
                loop.call_soon_threadsafe(_deliver, future, None, exc)
            else:
                loop.call_soon_threadsafe(_deliver, future, result, None)

        self._put(job)
        return await future

    def shutdown(self, *, wait: bool = True) -> None:
        """Refuse new jobs, finish the ones queued, then stop the threads — blocking until
        they have if ``wait`` (not when a thread is known stuck: they are daemons)."""
        self.closed = True
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


class Database:
    def __init__(
        self,
        path: Path,
        *,
        connection_factory: type[sqlite3.Connection] | None = None,
        failure_hold_s: float = FAILURE_HOLD_S,
    ) -> None:
        self.path = path
        self.failure_hold_s = failure_hold_s
        self.timeout_s = STORE_TIMEOUT_S  # SqliteStore.timeout_s sets it
        # Tests pass a sqlite3.Connection subclass that fails chosen statements: faults
        # injected at the driver boundary, under every line of this module.
        self._factory = connection_factory or sqlite3.Connection
        self.write_failures = 0  # groups that failed, ever (a counter for /metrics)
        self._failure: tuple[str, float] | None = None  # last failure: message, monotonic time
        self._failed_since_success = False
        self._failure_lines = LogThrottle(FAILURE_LOG_EVERY_S)  # once per cause and interval
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writer: _Lane | None = None
        self._readers: _Lane | None = None
        self._queued: list[_Write[Any]] = []  # session writes: leases, transitions, creates
        self._bulk: list[_Write[Any]] = []  # tick batches
        self._queued_lock = threading.Lock()
        self.bulk_writes_run = 0  # tick writes the writer has run, ever (on its thread)
        self.traces: deque[tuple[str, WriteTrace]] = deque(maxlen=TRACES_KEPT)
        self._slow_lines = LogThrottle(SLOW_LOG_EVERY_S)  # slow writes, on their delivery times

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
                factory=self._factory,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._local.polls = False  # a new connection has SQLite's busy handler again
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
        self._writer = _Lane(1, "ticktape-sqlite-writer")
        self._readers = _Lane(READER_THREADS, "ticktape-sqlite-reader")
        try:
            await self._run(self._writer, self._migrate, "open the store")
        except BaseException:  # nothing to checkpoint: stop the threads, close what opened
            lanes, self._writer, self._readers = (self._writer, self._readers), None, None
            for lane in lanes:
                if lane is not None:
                    lane.shutdown()
            with self._lock:
                for conn in self._connections:
                    conn.close()
                self._connections.clear()
            raise

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

    def _drop_connection(self) -> None:
        """Forget this thread's connection (after a failure it could not roll back)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is None:
            return
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def _checkpoint(self) -> None:
        """Fold the WAL back into the database file, so a closed store is one file."""
        try:
            conn = self._connection()
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # the handler waits here
            self._local.polls = False
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            # Nothing is lost: the WAL stays and the next open replays it.
            log.warning("SQLite checkpoint on close failed (%s); the WAL is kept", exc)

    async def close(self) -> None:
        """Refuse new calls at once (:class:`StoreUnavailable`), answer those queued,
        checkpoint, stop the threads. The checkpoint is awaited for ``timeout_s``
        at most: a writer stuck in a stalled disk must not hang the close (its thread,
        a daemon, is then left behind and the WAL kept for the next open)."""
        writer, readers = self._writer, self._readers
        self._writer = self._readers = None  # closed from here on: calls fail, not queue
        stuck = False
        if writer is not None:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await writer.call(self._checkpoint)
            except TimeoutError:
                stuck = True
                log.error(
                    "SQLite close: the writer did not finish within %gs "
                    "(limit TICKTAPE_STORE_TIMEOUT_S); closing without its checkpoint",
                    self.timeout_s,
                )
        for lane in (writer, readers):
            if lane is not None:
                lane.shutdown(wait=not (stuck and lane is writer))
        if stuck:
            return  # the stuck thread still uses its connection: the process exit ends it
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    async def _run(self, lane: _Lane | None, fn: Callable[[], T], what: str) -> T:
        if lane is None:
            raise StoreUnavailable(f"{what}: the SQLite store is not open")
        with ERRORS.wrap(what):
            return await lane.call(fn)

    async def write(
        self, fn: Callable[[sqlite3.Connection], T], what: str, *, bulk: bool = False
    ) -> T:
        """Run ``fn`` inside a write transaction on the writer thread; return once committed.

        ``fn`` may share its transaction with other queued writes (group commit) but
        runs in its own savepoint: if it raises, only its changes are rolled back.

        ``bulk`` writes (tick batches) wait behind every other queued write and a
        group takes only :data:`BULK_GROUP_BUDGET_S` of them, so a lease renewal or a
        transition waits for at most one such slice, however many ticks are queued.
        """
        if self._writer is None:
            raise StoreUnavailable(f"{what}: the SQLite store is not open")
        loop = asyncio.get_running_loop()
        op: _Write[T] = _Write(fn, what, loop, loop.create_future())
        with self._queued_lock:
            if bulk:
                self._bulk.append(op)
            else:
                # bulk_before holds the writer's tick-write count until the write starts
                op.trace = WriteTrace(
                    time.monotonic(),
                    len(self._queued),
                    len(self._bulk),
                    0.0,
                    0.0,
                    0.0,
                    self.bulk_writes_run,
                )
                self._queued.append(op)
        self._writer.post(self._commit_group)
        try:
            # Bounded: a write that hangs (a stalled disk) fails as unavailable, counted as
            # a write failure; cancelling the future keeps it from running if not begun.
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns an answer that
            # reaches the loop in the turn its caller is cancelled and drops the cancel, and
            # a cancelled heartbeat or flusher then runs on (a crash or shutdown hangs).
            async with asyncio.timeout(self.timeout_s):
                result = await op.future
        except TimeoutError:
            timed_out = WriteTimedOut(
                f"{what}: SQLite did not finish the write within {self.timeout_s:g}s "
                "(limit TICKTAPE_STORE_TIMEOUT_S)"
            )
            self._record_failure(timed_out)
            raise timed_out from None
        finally:
            if op.trace is not None and op.trace.delivered:
                self._traced(what, op.trace)
        return result

    @property
    def queued_writes(self) -> tuple[int, int]:
        """Writes waiting for the writer: (session writes, tick writes)."""
        with self._queued_lock:
            return len(self._queued), len(self._bulk)

    def _traced(self, what: str, trace: WriteTrace) -> None:
        self.traces.append((what, trace))
        if trace.delivered - trace.queued <= SLOW_SESSION_WRITE_S:
            return
        slow = self._slow_lines.event(now=trace.delivered)
        if slow is None:
            return
        log.warning(
            "slow SQLite write (%s): %s; %d more slow write(s) since the last such line",
            what,
            trace.describe(),
            slow - 1,
        )

    def _take(self) -> list[_Write[Any]]:
        """A new group: every queued session write (up to the cap), else one bulk write."""
        with self._queued_lock:
            if self._queued:
                group = self._queued[:MAX_GROUP_WRITES]
                del self._queued[:MAX_GROUP_WRITES]
                return group
            if self._bulk:
                return [self._bulk.pop(0)]
        return []

    def _commit_group(self) -> None:
        group = self._take()
        if not group:
            return  # an earlier group already took these writes
        try:
            outcomes = self._run_group(group)
        except BaseException as exc:  # BEGIN, SAVEPOINT, COMMIT or ROLLBACK failed
            self._abandon_transaction()
            self._record_failure(exc)
            outcomes = [(None, _store_error(exc, op.what)) for op in group]
        else:
            # A write that failed because the file cannot be used (disk full inside an
            # INSERT) is a store failure even if the rest of its group committed.
            unusable = [e for _, e in outcomes if isinstance(e, StoreUnavailable)]
            if unusable:
                self._record_failure(unusable[0])
            else:
                self._record_success()
        # Every queued write is answered, whatever happened above.
        for op, (value, failure) in zip(group, outcomes, strict=True):
            op.settle(value, failure)

    def _run_group(self, group: list[_Write[Any]]) -> list[tuple[object, BaseException | None]]:
        """One transaction for the group: each write in its savepoint, one COMMIT.

        ``group`` holds the first write; more are taken while the group runs — every
        queued session write, and bulk writes until the group has run for
        :data:`BULK_GROUP_BUDGET_S` — and appended to ``group``.
        """
        conn = self._connection()
        outcomes: list[tuple[object, BaseException | None]] = []
        started = time.monotonic()
        self._begin_immediate(conn)
        index = 0
        while index < len(group):
            op = group[index]
            index += 1
            if op.future.done():  # its caller gave up (timed out) before it ran: skip it
                outcomes.append((None, None))
                continue
            if op.trace is None:
                self.bulk_writes_run += 1
            else:
                op.trace.started = time.monotonic()
                op.trace.bulk_before = self.bulk_writes_run - op.trace.bulk_before
            conn.execute("SAVEPOINT ticktape_write")
            try:
                result = op.fn(conn)
            except Exception as exc:  # this write alone fails; the group goes on
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back itself (disk full, I/O
                    # error): the writes before this one are gone too — the group fails.
                    raise
                conn.execute("ROLLBACK TO ticktape_write")
                conn.execute("RELEASE ticktape_write")
                outcomes.append((None, translate(exc, op.what) if _driver(exc) else exc))
            else:
                conn.execute("RELEASE ticktape_write")
                outcomes.append((result, None))
            if len(group) < MAX_GROUP_WRITES:
                more = self._take_more(time.monotonic() - started)
                if more is not None:
                    group.append(more)
        conn.execute("COMMIT")
        return outcomes

    def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, polling every :data:`BUSY_POLL_S` while another process
        holds the write lock, for :data:`BUSY_TIMEOUT_MS` at most (then its error)."""
        if not getattr(self._local, "polls", False):
            conn.execute("PRAGMA busy_timeout = 0")  # this connection: we poll instead
            self._local.polls = True
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
            time.sleep(BUSY_POLL_S)

    def _take_more(self, elapsed_s: float) -> _Write[Any] | None:
        with self._queued_lock:
            if self._queued:
                return self._queued.pop(0)
            if self._bulk and elapsed_s < BULK_GROUP_BUDGET_S:
                return self._bulk.pop(0)
        return None

    def _abandon_transaction(self) -> None:
        """Leave no transaction open: roll back, or drop the connection if that fails too.

        After a failed COMMIT SQLite may already have rolled back (disk full), so a
        ROLLBACK is only sent when a transaction is still open.
        """
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("SQLite ROLLBACK failed (%s); reopening the writer connection", exc)
            self._drop_connection()

    def _record_failure(self, exc: BaseException) -> None:
        self.write_failures += 1
        message = str(exc) or type(exc).__name__
        now = time.monotonic()
        if self._failure_lines.event(key=message, now=now) is not None:
            # Once per outage (and per distinct cause), with its cause — not once per write.
            log.error("SQLite writes are failing: %s", message, exc_info=exc)
        self._failure = (message, now)
        self._failed_since_success = True

    def _record_success(self) -> None:
        if self._failure is not None and self._failed_since_success:
            log.info("SQLite writes work again (after: %s)", self._failure[0])
        self._failed_since_success = False

    @property
    def write_failure(self) -> str | None:
        """The last write failure, while it is recent: after it, no commit has worked, or
        it is less than ``failure_hold_s`` old (writes that fail between ones that
        work — a nearly full disk — keep the store failing, not flapping)."""
        if self._failure is None:
            return None
        message, at = self._failure
        if self._failed_since_success or time.monotonic() - at < self.failure_hold_s:
            return message
        return None

    async def probe_write(self) -> None:
        """A real write that changes nothing: rewrites the schema version in page 1."""

        def rewrite_version(conn: sqlite3.Connection) -> None:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            conn.execute(f"PRAGMA user_version = {int(version)}")

        await self.write(rewrite_version, "probe the store")

    async def read(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``fn`` in one read transaction on a reader thread (a consistent snapshot).

        Answered within ``timeout_s`` (the store's one bound, as QuestDB's reads),
        else :class:`WriteTimedOut`: a read stuck in a stalled disk must not hang its
        caller. The reader thread finishes it when the disk answers; nobody waits then.
        """

        def run() -> T:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error:
                    # A reader left inside its transaction would fail every later read
                    # ("cannot start a transaction within a transaction") and pin an
                    # old snapshot: end it, or drop the connection.
                    self._abandon_transaction()
                    raise

        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._run(self._readers, run, what)
        except TimeoutError:
            raise WriteTimedOut(
                f"{what}: SQLite did not answer within {self.timeout_s:g}s "
                "(limit TICKTAPE_STORE_TIMEOUT_S)"
            ) from None


def _driver(exc: BaseException) -> TypeGuard[sqlite3.Error]:
    return isinstance(exc, sqlite3.Error)


def _store_error(exc: BaseException, what: str) -> BaseException:
    """A driver error as a store error; anything else passes unchanged."""
    return translate(exc, what) if _driver(exc) else exc
