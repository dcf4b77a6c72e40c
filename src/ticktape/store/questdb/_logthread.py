"""Synchronous connections driven by one thread of their own, for the session log's group
commit (``_commit.py``).

A group holds the session log (QuestDB's single table writer: every other instance's
writer is answered "table busy") from the reply to its first round trip until its
COMMIT. Read on the event loop, each reply waits for the loop's turn, which on a busy
instance is tens of milliseconds or more, and the log stays held all that time. Here a
reply is read as soon as it arrives: this thread blocks in the socket read (psycopg
releases the GIL there) and goes on with the next round trip at once, whatever the loop
is doing. The loop side awaits a future.

Only this thread ever uses its connections (a libpq connection is not thread-safe): it
opens them (``connection(role)``, one per role), drops a broken one and closes them all
at :meth:`LogThread.close`. The one thing the loop side does to them is ``shutdown(2)``
of their sockets when the store closes, under a lock that keeps a socket from being
closed meanwhile: a job blocked on a frozen server then fails at once and the thread
closes its connections itself. A transaction open past its bound
(:meth:`LogThread.abandoned_after`) has its sockets shut down the same way, by the
LogThread's one watchdog thread (started with the first transaction, ended by
:meth:`LogThread.close`), which knows the open transaction's deadline.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from ticktape.errors import StoreUnavailable
from ticktape.store.questdb._handshake import connect_attempts

log = logging.getLogger(__name__)
T = TypeVar("T")
Connect = Callable[[str], psycopg.Connection[Any]]


CLOSE_WAIT_S = 2.0  # close() waits this long at most for the thread to close its connections


@dataclass(frozen=True, eq=False)
class _Open:
    """The transaction open in the thread, as the watchdog knows it."""

    began: float  # time.monotonic()
    limit_s: float
    what: str

    @property
    def deadline(self) -> float:
        return self.began + self.limit_s


class LogThread:
    """One worker thread and its connections (one per role: the log, the keys)."""

    def __init__(
        self,
        conninfo: str,
        name: str,
        on_connect: Callable[[], Callable[[Any], None] | None],
        idle_s: Callable[[], float],
    ) -> None:
        """``on_connect()`` is the testing hook to call (in this thread) with every
        connection opened, if any; a connection unused for ``idle_s()`` seconds is
        replaced before its next use (the server may have closed it)."""
        self._conninfo = conninfo
        self._name = name
        self._on_connect = on_connect
        self._executor: ThreadPoolExecutor | None = None
        self._conns: dict[str, psycopg.Connection[Any]] = {}  # this thread's only
        self._used: dict[str, float] = {}  # role → time.monotonic() of its last use
        self._idle_s = idle_s
        # the sockets of the open connections: close() shuts them down under this lock,
        # the thread unregisters one under it before closing its connection
        self._sockets: dict[int, int] = {}  # id(connection) → socket descriptor
        self._lock = threading.Lock()
        self._closed = False
        # the watchdog: the open transaction (None: none) and its thread, under _watch
        # (taken before _lock, never after it)
        self._watch = threading.Condition(threading.Lock())
        self._open: _Open | None = None
        self._watchdog: threading.Thread | None = None
        self._watch_ends = False

    def reopen(self) -> None:
        """Accept jobs again after :meth:`close` (a store opened again)."""
        self._closed = False

    async def run(self, job: Callable[[Connect], T]) -> T:
        """``job(connection)`` run in the thread; ``connection(role)`` gives that role's
        connection (opened on first use, or again after it broke). A psycopg error
        escapes as it is (the caller translates it); after a connection error every
        connection is dropped, after another error a connection it broke."""
        if self._closed:
            raise StoreUnavailable("write session log: the QuestDB store is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        return await asyncio.wrap_future(self._executor.submit(self._job, job))

    async def close(self) -> None:
        """Fail a job under way at once (its sockets shut down), close every connection
        in the thread and end the thread."""
        self._closed = True
        self._end_watchdog()
        executor, self._executor = self._executor, None
        if executor is None:
            return
        with self._lock:
            for fd in self._sockets.values():
                _shutdown(fd)
        done = asyncio.wrap_future(executor.submit(self._close_all))
        # A connect to a frozen server: it closes what it gets. Waited for without
        # cancelling it, so done() still says whether the thread finished (a cancelled
        # future is done, and shutdown(wait=True) would then block the loop).
        await asyncio.wait({done}, timeout=CLOSE_WAIT_S)
        executor.shutdown(wait=done.done())

    # ------------------------------------------------------------------ in the thread

    @contextmanager
    def abandoned_after(self, limit_s: float, what: str) -> Iterator[None]:
        """In the thread, around one transaction: if it is still open ``limit_s`` after it
        began, every connection's socket is shut down, as :meth:`close` does. A round trip
        blocked on a frozen server then fails at once, so the transaction ends (the server
        rolls it back when it sees the connection go) and the thread's connections are
        dropped; without it, only the server answering or the store closing would end it,
        and the session log stays held meanwhile (and the collector paused:
        :func:`collector_paused`). A slow server's transaction that overruns is cut the
        same way: its appends fail, and the store boundary retries them."""
        opened = _Open(time.monotonic(), limit_s, what)
        with self._watch:
            if self._watchdog is None and not self._closed:  # close() sets _closed first
                self._watch_ends = False
                self._watchdog = threading.Thread(
                    target=self._watch_transactions, name=f"{self._name}-watchdog", daemon=True
                )
                self._watchdog.start()
            self._open = opened
            self._watch.notify()
        try:
            yield
        finally:
            with self._watch:  # the watchdog shuts sockets down only under it
                if self._open is opened:
                    self._open = None

    def _watch_transactions(self) -> None:
        """The watchdog's loop: waits for the open transaction's deadline; past it, shuts
        its connections' sockets down (once), under ``_watch`` so that the transaction
        cannot end, nor the next begin, meanwhile."""
        with self._watch:
            while not self._watch_ends:
                opened = self._open
                if opened is None:
                    self._watch.wait()
                    continue
                left = opened.deadline - time.monotonic()
                if left > 0:
                    self._watch.wait(left)
                    continue
                self._open = None
                log.warning(
                    "%s: transaction open %.3fs, past its bound of %gs "
                    "(TICKTAPE_QUESTDB_LOG_TRANSACTION_MAX_S): its connections are shut "
                    "down, its appends fail (their callers retry)",
                    opened.what,
                    time.monotonic() - opened.began,
                    opened.limit_s,
                )
                with self._lock:
                    for fd in self._sockets.values():
                        _shutdown(fd)

    def _end_watchdog(self) -> None:
        with self._watch:
            watchdog, self._watchdog = self._watchdog, None
            self._watch_ends = True
            self._watch.notify()
        if watchdog is not None:
            watchdog.join()

    def _job(self, job: Callable[[Connect], T]) -> T:
        try:
            return job(self._connection)
        except psycopg.OperationalError:
            self._close_all()
            raise
        except psycopg.Error:
            for conn in list(self._conns.values()):
                if conn.closed:
                    self._drop(conn)
            raise

    def _connection(self, role: str) -> psycopg.Connection[Any]:
        conn = self._conns.get(role)
        now = time.monotonic()
        fresh = now - self._used.get(role, now) < self._idle_s()
        self._used[role] = now
        if conn is not None and not conn.closed and fresh:
            return conn
        if conn is not None:
            self._drop(conn)
        if self._closed:
            raise StoreUnavailable("connect: the QuestDB store is closed")
        for attempt in connect_attempts(lambda: self._closed):
            with attempt:
                # prepare_threshold=None: as every connection of the store (_db.Connections)
                opened = psycopg.Connection.connect(
                    self._conninfo, autocommit=True, prepare_threshold=None
                )
        with self._lock:
            if self._closed:  # closed while connecting: its sockets were shut down already
                opened.close()
                raise StoreUnavailable("connect: the QuestDB store is closed")
            self._sockets[id(opened)] = opened.pgconn.socket
        self._conns[role] = opened
        hook = self._on_connect()
        if hook is not None:
            hook(opened)
        return opened

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            self._sockets.pop(id(conn), None)
        for role, kept in list(self._conns.items()):
            if kept is conn:
                del self._conns[role]
        with suppress(psycopg.Error, OSError):
            conn.close()

    def _close_all(self) -> None:
        for conn in list(self._conns.values()):
            self._drop(conn)


_pause_lock = threading.Lock()
_pauses = 0  # blocks inside collector_paused now (every store's log thread)
_enabled_before = False  # whether the collector ran before the first of them


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection starts, in any thread of the process, inside the block.

    For a transaction that holds the session log (a group commit, BEGIN to COMMIT): a
    collection holds the GIL for as long as it walks the heap, so this thread could not
    go on with its next round trip meanwhile, however soon the server answered; and the
    managed server closes a connection silent for ``QUESTDB_PG_IDLE_TIMEOUT_S`` (1.5 s),
    which a collection over a long-running instance's heap, on a loaded machine, comes
    near. The collections that would have run start after the block (the thresholds
    count on); a transaction lasts milliseconds to a fraction of a second. Blocks of
    several stores' threads overlap: the collector runs again once the last one ends,
    if it ran before the first."""
    global _pauses, _enabled_before
    with _pause_lock:
        if _pauses == 0:
            _enabled_before = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _enabled_before:
                gc.enable()


def _shutdown(fd: int) -> None:
    """Wake whatever waits on socket ``fd`` (a duplicate is shut down: the shutdown acts on
    the socket; the descriptor stays its connection's)."""
    with suppress(OSError):
        sock = socket.socket(fileno=socket.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
