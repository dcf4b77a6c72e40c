"""Connections, schema and error translation for the QuestDB backend.

Two ways in: PostgreSQL wire (psycopg 3, autocommit) for session state and
reads, and ILP over HTTP (the official ``questdb`` client) for ticks. Driver
errors become ticktape store errors here; "table busy" (another writer holds a
non-WAL table) becomes :class:`StoreBusy`, which callers retry with backoff.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
from psycopg.types.numeric import Int8
from questdb import QuestDBError

from ticktape.config import (
    QUESTDB_IDLE_RECONNECT_S,
    QUESTDB_IDLE_RECONNECT_SHARE,
    QUESTDB_LOG_TRANSACTION_MAX_S,
    STORE_TIMEOUT_S,
)
from ticktape.errors import (
    StoreBusy,
    StoreError,
    StoreUnavailable,
    ValidationError,
    WriteTimedOut,
    clip,
)
from ticktape.redact import redact
from ticktape.store.base import WriteHealth
from ticktape.store.driver_errors import ErrorMap, Rule
from ticktape.store.questdb._abandon import AbandoningConnection
from ticktape.store.questdb._handshake import connect_attempts
from ticktape.store.questdb._logthread import Connect, LogThread
from ticktape.store.questdb._stoptrace import StopTrace
from ticktape.store.rules import to_us
from ticktape.throttle import LogThrottle

T = TypeVar("T")
log = logging.getLogger(__name__)
READ_CONNECTIONS = 4
CONNECT_TIMEOUT_S = 5.0
#: Every session-id SYMBOL column (:data:`SESSION_ID_COLUMNS`): a large capacity, because
#: QuestDB 9.3.4's lookup of a symbol value misses now and then while new values are
#: added, less often the more hash buckets the capacity gives (docs/questdb-notes.md §7);
#: NOCACHE, because a cached column of this capacity holds ~46 MiB of the server's Java
#: heap per table (docs/questdb.md). A store made with smaller or cached columns gets
#: these at open (:func:`ensure_session_symbols`).
SESSION_SYMBOL_CAPACITY = 1_048_576
SESSION_SYMBOL = f"SYMBOL CAPACITY {SESSION_SYMBOL_CAPACITY} NOCACHE"

#: Session log: every transition, note, lease renewal and soft delete of a session is
#: one appended row carrying the whole session state after it. A non-WAL table: a
#: commit is visible at once, and a transaction holding an INSERT keeps every other
#: writer out ("table busy") — the basis of compare-and-set (see _sessions.py).
#: ``id`` has no INDEX on purpose: on 9.3.4, ``WHERE id = $1 LATEST ON ts PARTITION BY
#: id`` over an indexed symbol returns *other* sessions' rows under concurrent queries
#: (docs/questdb.md).
SESSION_LOG_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", SESSION_SYMBOL),
    ("row_seq", "LONG"),
    ("event_seq", "LONG"),
    ("row_kind", "SYMBOL"),
    ("kind", "SYMBOL"),
    ("status", "SYMBOL"),
    ("from_status", "SYMBOL"),
    ("symbols", "VARCHAR"),
    ("exchange", "SYMBOL"),
    ("data_types", "VARCHAR"),
    ("config", "VARCHAR"),
    ("created_at", "TIMESTAMP"),
    ("started_at", "TIMESTAMP"),
    ("ended_at", "TIMESTAMP"),
    ("reason", "VARCHAR"),
    ("event_reason", "VARCHAR"),
    ("detail", "VARCHAR"),
    ("actor", "VARCHAR"),
    ("trades", "LONG"),
    ("orderbook", "LONG"),
    ("errors", "LONG"),
    ("owner", "VARCHAR"),
    ("lease_expires_at", "TIMESTAMP"),
    ("version", "LONG"),
    ("deleted", "BOOLEAN"),
    ("idempotency_key", "VARCHAR"),
    ("ts", "TIMESTAMP"),
    ("tenure", "LONG"),
    ("fences", "VARCHAR"),
    ("tick_floor", "LONG"),
)
#: QuestDB's NULL of a LONG or TIMESTAMP column: the smallest 64-bit integer.
LONG_NULL = -(2**63)
_INT8_AT = frozenset(
    i for i, (_, kind) in enumerate(SESSION_LOG_COLUMNS) if kind in ("LONG", "TIMESTAMP")
)


def log_params(values: Sequence[Any]) -> list[Any]:
    """A session-log row's values (in the order of ``SESSION_LOG_COLUMNS``) as sent to
    the server: every LONG and TIMESTAMP column an ``int8`` — a timestamp in microseconds,
    None as :data:`LONG_NULL` — so the parameter types psycopg declares are the same for
    every row. QuestDB reuses a cached INSERT only when they are: psycopg declares None
    as "unknown", a datetime as timestamptz and an int as the smallest of int2, int4 and
    int8 that holds it, so rows differing in which columns are empty, or in the size of
    a count, had the INSERT compiled anew (0.67 against 0.20 ms of the JVM's CPU per
    one-row commit, measured)."""
    return [_int8(v) if i in _INT8_AT else v for i, v in enumerate(values)]


def _int8(value: Any) -> Int8:
    if value is None:
        return Int8(LONG_NULL)
    if isinstance(value, datetime):
        return Int8(to_us(value))
    return Int8(value)


#: Built from SESSION_LOG_COLUMNS, the one list of the log's columns and types: the
#: backend's SELECT and INSERT column lists and the order of a row's values
#: (``_sessions._Row.values``) derive from it too.
SESSION_LOG_DDL = (
    "CREATE TABLE IF NOT EXISTS tt_session_log (\n"
    + ",\n".join(f"    {name} {kind}" for name, kind in SESSION_LOG_COLUMNS)
    + "\n) TIMESTAMP(ts) PARTITION BY MONTH BYPASS WAL\n"
)
#: Columns the log gained after it was first made: a log made before gets them at open.
#: ``tick_floor``: every tick row of the session is at or after it (``_fence.py``).
SESSION_LOG_ADDED = ("ALTER TABLE tt_session_log ADD COLUMN IF NOT EXISTS tick_floor LONG",)

#: ``recv_us`` (local receive time) came later: ILP adds it to a table made before.
#: Ticks: WAL tables (ILP needs them, DEDUP needs them), one partition a day. The
#: DEDUP keys make a replayed row replace itself while distinct ticks never merge:
#: a trade is (session, symbol, trade_id), a book level (session, symbol, ts, level).
#: ``tenure`` (the writer's tenure number) is a key too and ``batch_seq`` is not: a stale
#: owner's late row never replaces a new owner's row (_fence.py).
TRADES_DDL = f"""
CREATE TABLE IF NOT EXISTS tt_trades (
    session_id {SESSION_SYMBOL},
    symbol SYMBOL CAPACITY 4096,
    trade_id LONG,
    price DOUBLE,
    qty DOUBLE,
    side SYMBOL CAPACITY 4,
    ts TIMESTAMP,
    tenure LONG,
    batch_seq LONG,
    recv_us LONG,
    send_id LONG,
    send_first LONG,
    send_trades LONG,
    send_books LONG
) TIMESTAMP(ts) PARTITION BY DAY WAL
DEDUP UPSERT KEYS(ts, session_id, symbol, trade_id, tenure)
"""

ORDERBOOK_DDL = f"""
CREATE TABLE IF NOT EXISTS tt_orderbook (
    session_id {SESSION_SYMBOL},
    symbol SYMBOL CAPACITY 4096,
    level INT,
    bid_price DOUBLE,
    bid_qty DOUBLE,
    ask_price DOUBLE,
    ask_qty DOUBLE,
    ts TIMESTAMP,
    tenure LONG,
    batch_seq LONG,
    recv_us LONG,
    send_id LONG,
    send_first LONG,
    send_trades LONG,
    send_books LONG
) TIMESTAMP(ts) PARTITION BY DAY WAL
DEDUP UPSERT KEYS(ts, session_id, symbol, level, tenure)
"""

#: Each tick row also says which ILP send carried it, ``send_id`` (unique per writing
#: process, increasing), and the session's first row in each table of a send what that
#: send held for the session: ``send_first`` (its first batch ``seq`` in it) and
#: ``send_trades``/``send_books`` (its trades and snapshots in it; NULL on other rows).
#: One request's tables commit on their own, so a seal uses these to tell a lost
#: owner's last send that landed in one table only (_ticks.py, ``seal``).
#: Rows of a build without them have NULLs and count as complete; a table made before
#: gets them at open (:func:`ensure_tick_send_columns`).
TICK_SEND_COLUMNS = ("send_id", "send_first", "send_trades", "send_books")

#: The symbol columns of the small tables below are NOCACHE: a cached symbol column
#: holds a capacity-sized cache on the server's Java heap, per table (docs/questdb.md),
#: and these tables are read rarely (a results page, a quality report).
#: Gaps of a recording (ticktape.ticks.Gap): few rows, written over PG wire into
#: a non-WAL table so they are visible on return; a gap written twice (a retried write)
#: is read once — reads keep one row per (symbol, data type, start, cause). Each row
#: carries its writer's tenure and write sequence, fenced like ticks (``_fence.py``);
#: a table made before those columns gets them at open (``GAPS_COLUMNS``).
GAPS_DDL = f"""
CREATE TABLE IF NOT EXISTS tt_gaps (
    session_id {SESSION_SYMBOL},
    symbol SYMBOL CAPACITY 4096 NOCACHE,
    data_type SYMBOL CAPACITY 4 NOCACHE,
    start_us LONG,
    end_us LONG,
    cause SYMBOL CAPACITY 16 NOCACHE,
    lost LONG,
    detail VARCHAR,
    ts TIMESTAMP,
    tenure LONG,
    write_seq LONG
) TIMESTAMP(ts) PARTITION BY MONTH BYPASS WAL
"""
GAPS_COLUMNS = (
    "ALTER TABLE tt_gaps ADD COLUMN IF NOT EXISTS tenure LONG",
    "ALTER TABLE tt_gaps ADD COLUMN IF NOT EXISTS write_seq LONG",
)

#: Results of backtest and paper sessions: non-WAL tables written over PG wire (visible
#: on commit). A results write never deletes: it appends rows under a fresh ``run`` id
#: and then the summary row naming that run; readers take the newest summary written
#: by the session's current owner and the rows of its run (``_results.py``).
RESULT_SUMMARY_DDL = f"""
CREATE TABLE IF NOT EXISTS tt_result_summary (
    session_id {SESSION_SYMBOL},
    run VARCHAR,
    owner VARCHAR,
    hash VARCHAR,
    status VARCHAR,
    summary VARCHAR,
    orders LONG,
    fills LONG,
    equity LONG,
    ts TIMESTAMP
) TIMESTAMP(ts) PARTITION BY MONTH BYPASS WAL
"""

RESULT_ROWS_DDL = f"""
CREATE TABLE IF NOT EXISTS tt_result_{{table}} (
    session_id {SESSION_SYMBOL},
    run VARCHAR,
    seq LONG,
    body VARCHAR,
    ts TIMESTAMP
) TIMESTAMP(ts) PARTITION BY MONTH BYPASS WAL
"""

RESULT_TABLES = ("tt_result_summary", "tt_result_orders", "tt_result_fills", "tt_result_equity")
#: Every table's session-id SYMBOL column, each read by value (``= %s``, ``IN``, ``LATEST
#: ON … PARTITION BY``): :data:`SESSION_SYMBOL` (:func:`ensure_session_symbols`).
SESSION_ID_COLUMNS = (
    ("tt_session_log", "id"),
    ("tt_trades", "session_id"),
    ("tt_orderbook", "session_id"),
    ("tt_gaps", "session_id"),
    *((table, "session_id") for table in RESULT_TABLES),
)
#: The tables :data:`SCHEMA` makes whose columns the open checks (``schema_at_open``):
#: those of :data:`REQUIRED_COLUMNS`, :data:`TICK_SEND_COLUMNS` and session-id symbols.
SCHEMA_TABLES = tuple(table for table, _ in SESSION_ID_COLUMNS)

#: Instance leases (``SessionStore.renew_instance``): one row per owner token, updated
#: in place once per heartbeat. A small non-WAL table: an ``UPDATE`` is synchronous,
#: its row count works, and rewriting two columns of a few rows costs a few ms
#: (docs/questdb.md) — once per heartbeat per instance, whatever its session count.
#: ``progress`` is JSON ``{"<id>": [trades, orderbook, errors]}``.
INSTANCES_DDL = """
CREATE TABLE IF NOT EXISTS tt_instances (
    token VARCHAR,
    expires TIMESTAMP,
    progress VARCHAR,
    ts TIMESTAMP
) TIMESTAMP(ts) PARTITION BY NONE BYPASS WAL
"""

#: Idempotency keys (``_commit.py``): one row per session created with a key — the key,
#: the session id and the timestamp of the session's first log row — so that a key is
#: found through the index on ``idempotency_key`` and the session's first row by an
#: interval search on the log's designated timestamp, whatever the log's size (a scan
#: of the log's ``idempotency_key`` column grew with every row ever stored). Written only
#: by a group commit while it holds the session log's writer, and committed before the
#: log's commit: a key row whose session row is missing (that commit failed) is ignored.
#: The index is used by ``WHERE idempotency_key IN (...)`` alone, never with
#: ``LATEST ON`` (an index and LATEST ON together returned wrong rows: docs/questdb.md).
#: ``idempotency_key`` is :data:`SESSION_SYMBOL` (one value per session created with a
#: key: the same lookup misses as a session id's); a table made with a smaller capacity
#: gets it at open (:func:`ensure_session_keys`).
SESSION_KEYS_DDL = f"""
CREATE TABLE IF NOT EXISTS tt_session_keys (
    idempotency_key {SESSION_SYMBOL} INDEX,
    id VARCHAR,
    first_ts TIMESTAMP,
    ts TIMESTAMP
) TIMESTAMP(ts) PARTITION BY MONTH BYPASS WAL
"""

SCHEMA = (
    SESSION_LOG_DDL,
    *SESSION_LOG_ADDED,
    TRADES_DDL,
    ORDERBOOK_DDL,
    GAPS_DDL,
    *GAPS_COLUMNS,
    INSTANCES_DDL,
    RESULT_SUMMARY_DDL,
    *(RESULT_ROWS_DDL.replace("{table}", t) for t in ("orders", "fills", "equity")),
)
#: Columns an existing table must have: tables left by a pre-release build lack some,
#: and the store refuses to open on them with one clear line (there is no migration).
REQUIRED_COLUMNS = {
    "tt_session_log": tuple(name for name, _ in SESSION_LOG_COLUMNS),
    "tt_trades": ("tenure", "batch_seq"),
    "tt_orderbook": ("tenure", "batch_seq"),
}

DEFAULT_PREFIX = "tt_"  # every table name starts so; ``?prefix=`` in the URL changes it
_PREFIX_RE = re.compile(r"[a-z][a-z0-9_]{0,30}_", re.ASCII)
TICK_TABLES = ("tt_trades", "tt_orderbook")


@dataclass(frozen=True)
class QuestDBAddress:
    """Where a QuestDB server answers: PG wire for SQL, HTTP for ILP."""

    host: str
    pg_port: int
    ilp_url: str
    user: str = "admin"
    password: str = "quest"
    dbname: str = "qdb"
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def from_url(cls, url: str) -> QuestDBAddress:
        """``questdb://host:8812?ilp=http://host:9000&user=admin&password=quest``."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "questdb" or not parts.hostname:
            raise ValidationError(f"invalid QuestDB URL {clip(redact(url))!r}", field="store")
        query = dict(urllib.parse.parse_qsl(parts.query))
        host = parts.hostname
        prefix = query.get("prefix", DEFAULT_PREFIX)
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValidationError(
                f"invalid table prefix {prefix!r}: lower-case letters, digits and _, ending in _",
                field="store",
            )
        try:
            pg_port = parts.port or 8812
        except ValueError:
            raise ValidationError(
                f"invalid port in QuestDB URL {clip(redact(url))!r}", field="store"
            ) from None
        return cls(
            host=host,
            pg_port=pg_port,
            ilp_url=query.get("ilp", f"http://{host}:9000"),
            user=parts.username or query.get("user") or _env_user() or "admin",
            password=parts.password or query.get("password") or _env_password() or "quest",
            dbname=query.get("dbname", "qdb"),
            prefix=prefix,
        )

    @property
    def conninfo(self) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host,
            port=self.pg_port,
            user=self.user,
            password=self.password,
            dbname=self.dbname,
            connect_timeout=int(CONNECT_TIMEOUT_S),
        )

    @property
    def ilp_conf(self) -> str:
        ilp = urllib.parse.urlsplit(self.ilp_url)
        scheme = "https" if ilp.scheme == "https" else "http"
        return (
            f"{scheme}::addr={ilp.hostname}:{ilp.port or 9000};"
            f"username={self.user};password={self.password};"
            "retry_timeout=10000;request_timeout=30000;"
        )


#: Every error the PostgreSQL-wire driver (and the sockets under it) and the ILP client
#: raise, as a ticktape store error (first match wins). "table busy": another writer
#: holds the non-WAL session log — retried with backoff by the store boundary.
ERRORS = ErrorMap(
    "QuestDB",
    (psycopg.Error, OSError, QuestDBError),
    [
        Rule(
            (psycopg.Error, OSError),
            StoreBusy,
            "{what}: QuestDB table busy ({text})",
            contains=("table busy", "Timeout expired on waiting for the async command"),
        ),
        Rule(
            (psycopg.OperationalError, OSError),
            StoreUnavailable,
            "{what}: cannot reach QuestDB ({text})",
        ),
        # A statement the server cancelled: a shutdown or restart cancels what runs
        # (9.3.4: DatabaseError, SQLSTATE 00000, "cancelled by user [fd=...]"; ticktape
        # itself never cancels one). It did not happen: retried like an unreachable server.
        Rule(
            psycopg.DatabaseError,
            StoreUnavailable,
            "{what}: QuestDB cancelled the statement, e.g. while restarting ({text})",
            contains=("cancelled by user",),
        ),
        Rule(QuestDBError, StoreUnavailable, "{what}: QuestDB ILP error ({text})"),
        Rule(psycopg.Error, StoreError, "{what}: QuestDB error ({text})"),
    ],
)


def _env_user() -> str | None:
    return os.environ.get("TICKTAPE_STORE_USER") or None


def _env_password() -> str | None:
    """The store password kept out of the URL: ``TICKTAPE_STORE_PASSWORD_FILE`` (first
    line of the file, e.g. a mounted secret) or ``TICKTAPE_STORE_PASSWORD``."""
    path = os.environ.get("TICKTAPE_STORE_PASSWORD_FILE")
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValidationError(
                f"cannot read TICKTAPE_STORE_PASSWORD_FILE: {exc.strerror}", field="store"
            ) from None
        return lines[0] if lines else None
    return os.environ.get("TICKTAPE_STORE_PASSWORD") or None


LATE_READ_CANCEL_S = 2.0  # close() waits this long at most for cancelled late reads to end


class CountedLock(asyncio.Lock):
    """An asyncio lock that counts the tasks waiting for it (:attr:`waiting`, an int the
    log thread may read)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def acquire(self) -> Literal[True]:
        self.waiting += 1
        try:
            return await super().acquire()
        finally:
            self.waiting -= 1


class Connections:
    """One connection for session-log writes (serialised here, so this process never
    collides with itself on the table writer), one for results writes (a backtest's
    parts, which can be large, never hold up the session log: transitions, leases),
    one for the instance lease (a heartbeat queues behind nothing of this process),
    a small pool for reads; and, on a thread of their own (``_logthread.py``), the
    session log's group commit and its idempotency keys (committed while the group
    holds the log), serialised with the session-log writer."""

    def __init__(self, address: QuestDBAddress) -> None:
        self.address = address
        self.tick_tables = tuple(self.prefixed(t) for t in TICK_TABLES)
        self._writer: psycopg.AsyncConnection[Any] | None = None
        self._write_lock = CountedLock()
        self._results: psycopg.AsyncConnection[Any] | None = None
        self._results_lock = asyncio.Lock()
        self._lease: psycopg.AsyncConnection[Any] | None = None
        self._lease_lock = asyncio.Lock()
        # A connection unused this long is replaced before its next use (QuestDB closes
        # idle ones: config.QUESTDB_IDLE_RECONNECT_S); QuestDBStore.idle_reconnect_s sets it.
        self.idle_reconnect_s = QUESTDB_IDLE_RECONNECT_S
        self._used: dict[int, float] = {}  # id(connection) → time.monotonic() of its last use
        # a session-log transaction open longer is abandoned (LogThread.abandoned_after);
        # QuestDBStore.log_transaction_max_s sets it
        self.log_transaction_max_s = QUESTDB_LOG_TRANSACTION_MAX_S
        self._log_thread = LogThread(
            address.conninfo,
            "ticktape-questdb-log",
            lambda: self.on_connect,
            lambda: self.idle_reconnect_s,
        )
        self._readers: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        self._all: list[psycopg.AsyncConnection[Any]] = []
        self._opened = 0
        self._closed = False  # set by close(): no connection is opened or pooled after it
        self._late: set[asyncio.Future[Any]] = set()  # reads that outlived their timeout
        # Whether writes (session log over PG wire, ticks over ILP) work: what /health,
        # /ready, /metrics and the admission of new sessions read (Store.write_failure).
        self.health = WriteHealth("QuestDB")
        self.timeout_s = STORE_TIMEOUT_S  # QuestDBStore.timeout_s sets it
        # Testing hook (QuestDBStore.on_connect): called with every connection opened,
        # a psycopg.Connection (in the log thread) or a psycopg.AsyncConnection
        self.on_connect: Callable[[Any], None] | None = None
        # every by-id read of the session log that must find its sessions goes through it
        self.symbol_misses = SymbolMisses()
        self.log_lookups = LogLookups(self.symbol_misses)
        # a stop's phases, from QuestDBTickStore.expect_seals to seals_done (INFO lines)
        self.stop_trace = StopTrace()
        self._schema: dict[str, TableColumns] | None = None  # schema_at_open()

    async def bounded(self, work: Coroutine[Any, Any, T], what: str) -> T:
        """``work`` (a read) answered within the store timeout, or :class:`WriteTimedOut`.

        A frozen server answers nothing and never closes the socket: the caller stops
        waiting, but the query is not cancelled mid-flight (that would leave its
        connection in an unknown state); it finishes, and frees its connection, when
        the server answers again — or is cancelled by :meth:`close`, which closes every
        connection anyway (a late read never opens or keeps one after the close).

        The caller cancelled (a runner cancelled at the shutdown's grace) leaves the query
        running as well, shielded: it is kept as a late read, whose outcome (an error once
        :meth:`close` shuts its socket) is consumed, never "Task exception was never
        retrieved"."""
        task = asyncio.ensure_future(work)
        try:
            async with asyncio.timeout(self.timeout_s):  # not wait_for: see bounded_write
                return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._keep_late(task)
            raise
        except TimeoutError:
            self._keep_late(task)
            timed_out = WriteTimedOut(
                f"{what}: QuestDB did not answer within {self.timeout_s:g}s "
                "(limit TICKTAPE_STORE_TIMEOUT_S)"
            )
            self.health.failed(timed_out)
            raise timed_out from None

    def _keep_late(self, task: asyncio.Future[Any]) -> None:
        """``task``, a read nobody waits for any more: its outcome consumed when it ends,
        cancelled by :meth:`close` if still running then."""
        task.add_done_callback(_retrieve)
        if not task.done():
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    def prefixed(self, sql: str) -> str:
        """``sql`` with the default table prefix replaced by this store's."""
        prefix = self.address.prefix
        return sql if prefix == DEFAULT_PREFIX else sql.replace(DEFAULT_PREFIX, prefix)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._closed:
            raise StoreUnavailable("connect: the QuestDB store is closed")
        try:
            for attempt in connect_attempts(lambda: self._closed):
                with attempt:
                    # prepare_threshold=None: QuestDB drops cached plans when a table changes
                    # and then fails every later call of an auto-prepared statement
                    # (docs/questdb-notes.md); a cancelled query closes its connection at
                    # once (_abandon.py)
                    conn = await AbandoningConnection.connect(
                        self.address.conninfo, autocommit=True, prepare_threshold=None
                    )
        except (psycopg.Error, OSError) as exc:
            raise ERRORS.translate(exc, "connect") from exc
        if self._closed:  # closed while connecting (a late read): nobody would close it
            await _close_quietly(conn)
            raise StoreUnavailable("connect: the QuestDB store is closed")
        self._all.append(conn)
        self._used[id(conn)] = time.monotonic()  # idle from now: a short server timeout counts
        if self.on_connect is not None:
            self.on_connect(conn)
        return conn

    def _stale(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Unused for ``idle_reconnect_s``: QuestDB may have closed it meanwhile."""
        used = self._used.get(id(conn))
        return used is not None and time.monotonic() - used >= self.idle_reconnect_s

    async def schema_at_open(self) -> dict[str, TableColumns]:
        """The columns of :data:`SCHEMA_TABLES` (prefixed name → columns), read once per
        :meth:`open` in one query and shared by the open's checks; a check that changes a
        table reads it again itself."""
        if self._schema is None:
            self._schema = await read_columns(self, [self.prefixed(t) for t in SCHEMA_TABLES])
        return self._schema

    async def open(self) -> None:
        self._closed = False
        self._schema = None
        self._log_thread.reopen()
        self._writer = await self._connect()

    async def close(self) -> None:
        """Close every connection, then cancel the reads still running past their timeout
        (their sockets are closed by then, so they end at once; one still connecting to a
        frozen server closes its connection itself when it gets one: ``_closed``)."""
        self._closed = True
        await self._log_thread.close()
        for conn in self._all:
            if not conn.closed:
                await _close_quietly(conn)
        late, self._late = list(self._late), set()
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=LATE_READ_CANCEL_S)
        self._all.clear()
        self._used.clear()
        self._writer = None
        self._results = None
        self._lease = None
        self._readers = asyncio.Queue()
        self._opened = 0

    async def _reader_connection(self) -> psycopg.AsyncConnection[Any]:
        """A new connection for a reader slot already counted in ``_opened``; the slot is
        given back if it cannot be made."""
        try:
            return await self._connect()
        except StoreError as exc:
            self._opened -= 1
            if isinstance(exc, StoreUnavailable):
                self.health.failed(exc)
            raise

    @asynccontextmanager
    async def reader(self, what: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A read connection; a broken one is dropped and replaced next time.

        QuestDB unreachable here is a write failure too (:attr:`health`): every write
        first reads (the newest row, the tick writers' tenure). Only a write that works
        clears it: reads can work while writes do not."""
        if self._readers.empty() and self._opened < READ_CONNECTIONS:
            self._opened += 1
            conn = await self._reader_connection()
        else:
            conn = await self._readers.get()
            if self._stale(conn):  # the server may have closed it: a fresh one instead
                await _close_quietly(conn)
                conn = await self._reader_connection()
        self._used[id(conn)] = time.monotonic()
        try:
            yield conn
        except psycopg.Error as exc:
            if conn.closed or isinstance(exc, psycopg.OperationalError):
                self._opened -= 1
                await _close_quietly(conn)
                conn = None  # type: ignore[assignment]
            error = ERRORS.translate(exc, what)
            if isinstance(error, StoreUnavailable):
                self.health.failed(error)
            raise error from exc
        finally:
            if conn is not None:
                if self._closed:  # finished after close(): not pooled, closed
                    await _close_quietly(conn)
                elif conn.closed:  # its query abandoned by a cancellation (_abandon.py)
                    self._opened -= 1
                else:
                    self._readers.put_nowait(conn)

    @asynccontextmanager
    async def results_writer(self, what: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The results write connection, one user at a time (the results tables are not
        WAL: one writer each); opened on first use, reconnects if broken. Failures count
        as write failures (:attr:`health`) as the session-log writer's do."""
        async with self._exclusive("_results", self._results_lock, what) as conn:
            yield conn

    @asynccontextmanager
    async def lease_writer(self, what: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The instance-lease connection (``renew_instance``), one user at a time: a
        heartbeat never waits for a pooled reader (up to READ_CONNECTIONS reads of
        sessions, lists and ticks run on those) nor behind a group commit of the session
        log. Opened on first use, reconnects if broken; failures count as the writer's."""
        async with self._exclusive("_lease", self._lease_lock, what) as conn:
            yield conn

    def log_writes_waiting(self) -> bool:
        """Whether a log write of this process waits for the session-log writer's lock.
        Read by the log thread while its job holds that lock (a hint: a write that
        starts waiting just after is seen at the job's next look)."""
        return self._write_lock.waiting > 0

    def log_transaction_bounded(self) -> AbstractContextManager[None]:
        """In the log thread, around one transaction: abandoned past ``log_transaction_max_s``."""
        return self._log_thread.abandoned_after(self.log_transaction_max_s, "write session log")

    async def in_log_thread(self, job: Callable[[Connect], T], what: str) -> T:
        """``job`` run on the log thread's connections (``_logthread.py``: roles
        ``"log"`` and ``"keys"``), under the session-log writer's lock, so this process
        never collides with itself on the log. Errors are translated and counted as the
        writer's are (:attr:`health`)."""
        async with self._write_lock:
            try:
                try:
                    answer = await self._log_thread.run(job)
                except psycopg.Error as exc:
                    raise ERRORS.translate(exc, what) from exc
            except StoreUnavailable as exc:
                self.health.failed(exc)
                raise
            self.health.succeeded()
            return answer

    @asynccontextmanager
    async def writer(self, what: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The session-log write connection, one user at a time; reconnects if broken.

        A connection failure (server down, connection lost) counts as a write failure
        (:attr:`health`) until a use of the writer succeeds again."""
        async with self._exclusive("_writer", self._write_lock, what) as conn:
            yield conn

    @asynccontextmanager
    async def _exclusive(
        self, slot: Literal["_writer", "_results", "_lease"], lock: asyncio.Lock, what: str
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The connection kept in attribute ``slot``, held under ``lock``: opened when
        missing or closed, dropped when a use breaks it; a use that works clears a write
        failure (:attr:`health`), an unreachable store records one."""
        async with lock:
            try:
                conn: psycopg.AsyncConnection[Any] | None = getattr(self, slot)
                if conn is not None and not conn.closed and self._stale(conn):
                    await _close_quietly(conn)  # the server may have closed it
                if conn is None or conn.closed:
                    conn = await self._connect()
                    setattr(self, slot, conn)
                self._used[id(conn)] = time.monotonic()
                try:
                    yield conn
                except psycopg.Error as exc:
                    if conn.closed or isinstance(exc, psycopg.OperationalError):
                        await _close_quietly(conn)
                        if getattr(self, slot) is conn:  # close() may have emptied it meanwhile
                            setattr(self, slot, None)
                    raise ERRORS.translate(exc, what) from exc
            except StoreUnavailable as exc:
                self.health.failed(exc)
                raise
            else:
                self.health.succeeded()


#: Rows of one multi-row INSERT statement, at most: a power of two (:func:`values_statements`).
INSERT_ROWS = 512


def values_statements(
    head: str, rows: Sequence[Sequence[Any]], most: int = INSERT_ROWS
) -> list[tuple[str, list[Any]]]:
    """``rows`` as multi-row statements ``{head} VALUES ($1, $2, …), (…)`` (``head``:
    ``INSERT INTO table (columns)``), each of a power-of-two number of rows, ``most`` at
    most (a power of two): the fewest such statements, largest first. Their placeholders
    are the server's own (``$1``): run them with a raw cursor (:func:`execute_raw`).

    Few distinct texts, so QuestDB finds each in its per-connection cache of compiled
    INSERTs after the first use. Compiling one generates and loads a row-copier class
    that the JIT then compiles too. A text per distinct row count was compiled anew for
    almost every group commit, and so was each of pipelined one-row INSERTs
    (``executemany``): measured on the project VM, 200 commits of 1-40 rows (4,264 rows)
    cost the JVM 1.56 s of CPU as ``executemany`` and 0.29 s as these statements. And
    psycopg's own ``%s`` placeholders are found by parsing the text anew at every call
    for a statement of over 50 parameters (it caches only smaller ones), which a raw
    cursor never does."""
    statements: list[tuple[str, list[Any]]] = []
    start = 0
    size = most
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        part = rows[start : start + size]
        params = [value for values in part for value in values]
        statements.append((_values_text(head, len(part[0]), size), params))
        start += size
    return statements


def in_list(values: Sequence[T]) -> tuple[str, list[T]]:
    """The placeholders of ``IN (…)`` for ``values`` (not empty), and the values to bind:
    padded to a power-of-two count with the last value again, which an ``IN`` list means
    the same with. So a query has a few texts, whatever the number of values, and
    QuestDB's cache of compiled SELECTs (keyed by text, 128 entries by default) keeps
    them: measured on the project VM, a SELECT of a new text cost the JVM 0.5-0.9 ms of
    CPU, a cached one 0.13-0.23 ms, and a start->get run sent ~380 distinct texts.
    Raises ValueError for no values: ``IN ()`` has no placeholder to pad with, and a
    caller with nothing to look up has no query to send."""
    if not values:
        raise ValueError("in_list: an IN list needs at least one value")
    padded = list(values)
    count = 1
    while count < len(padded):
        count *= 2
    padded.extend(padded[-1:] * (count - len(padded)))
    return _in_marks(count), padded


@functools.lru_cache(maxsize=64)
def _in_marks(count: int) -> str:
    return ", ".join("%s" for _ in range(count))


@functools.lru_cache(maxsize=256)
def _values_text(head: str, width: int, rows: int) -> str:
    marks = (
        "(" + ", ".join(f"${row * width + column + 1}" for column in range(width)) + ")"
        for row in range(rows)
    )
    return f"{head} VALUES {', '.join(marks)}"


def execute_raw(conn: psycopg.Connection[Any], statements: list[tuple[str, list[Any]]]) -> None:
    """Send ``statements`` (``$n`` placeholders: :func:`values_statements`) on ``conn``, in
    its pipeline if one is open."""
    with psycopg.RawCursor(conn) as cur:
        for sql, params in statements:
            cur.execute(sql, params)


async def insert_rows(
    conn: psycopg.AsyncConnection[Any],
    head: str,
    rows: Sequence[Sequence[Any]],
    per_statement: int = INSERT_ROWS,
) -> None:
    """``rows`` inserted by multi-row statements (:func:`values_statements`, ``head``:
    ``INSERT INTO table (columns)``; ``per_statement`` rows at most, a power of two).

    Never pipelined one-row INSERTs (``executemany``): after a change of the table's
    metadata QuestDB 9.3.4 answers pipelined INSERTs as done yet keeps only the last of
    them, while single statements, multi-row ``VALUES`` too, are kept (docs/questdb.md)."""
    async with psycopg.AsyncRawCursor(conn) as cur:
        for sql, params in values_statements(head, rows, per_statement):
            await cur.execute(sql, params)


#: ``SHOW PARAMETERS`` tries at a store's open (see :func:`adopt_idle_timeout`).
SHOW_PARAMETERS_ATTEMPTS = 4


async def adopt_idle_timeout(db: Connections) -> None:
    """Replace connections sooner than ``db.idle_reconnect_s`` if the server closes idle ones
    sooner: once unused for ``QUESTDB_IDLE_RECONNECT_SHARE`` of its
    ``pg.net.connection.timeout`` (read from ``SHOW PARAMETERS``; a server that does not
    say leaves the setting as it is).

    QuestDB 9.3.4 answers some of several ``SHOW PARAMETERS`` run at once with a
    ``ClassCastException`` (measured: 2-10 of 20 calls made four at a time; instances
    opening together on one server do that): the read is made again after a short random
    pause, up to ``SHOW_PARAMETERS_ATTEMPTS`` in all, and a server that still does not answer
    is one that does not say (logged). An unreachable server still fails the open."""
    rows: list[tuple[Any, ...]] = []
    for attempt in range(1, SHOW_PARAMETERS_ATTEMPTS + 1):
        try:
            async with db.reader("read server parameters") as conn:
                cur = await conn.execute("SHOW PARAMETERS")
                rows = await cur.fetchall()
            break
        except StoreUnavailable:
            raise
        except StoreError as exc:
            if attempt == SHOW_PARAMETERS_ATTEMPTS:
                log.warning("%s; keeping the idle reconnect at %.1f s", exc, db.idle_reconnect_s)
                return
            await asyncio.sleep(random.uniform(0.01, 0.05))
    for row in rows:
        if str(row[0]) == "pg.net.connection.timeout":
            with suppress(TypeError, ValueError):
                server_s = float(row[2]) / 1000
                if server_s > 0:
                    db.idle_reconnect_s = min(
                        db.idle_reconnect_s, server_s * QUESTDB_IDLE_RECONNECT_SHARE
                    )
            return


#: A table's columns as ``table_columns()`` shows them: name → (symbol capacity, whether
#: the symbol is cached); (0, False) for a column that is not a SYMBOL.
TableColumns = dict[str, tuple[int, bool]]

#: Waiting for a table to show an ``ALTER`` (and retrying one refused "table busy"):
#: the first pause, doubled up to the second, within the store's timeout.
SCHEMA_WAIT_FIRST_S = 0.01
SCHEMA_WAIT_MAX_S = 0.2


async def read_columns(db: Connections, names: Sequence[str]) -> dict[str, TableColumns]:
    """The columns of the (existing, prefixed) tables ``names``, in one query."""
    # literals: table_columns() takes no bind parameter (the names are checked prefixes)
    sql = " UNION ALL ".join(
        f"SELECT '{name}' t, \"column\", symbolCapacity, symbolCached FROM table_columns('{name}')"
        for name in names
    )
    async with db.reader("read schema") as conn:
        cur = await conn.execute(sql)
        rows = await cur.fetchall()
    columns: dict[str, TableColumns] = {name: {} for name in names}
    for table, column, capacity, cached in rows:
        columns[str(table)][str(column)] = (int(capacity or 0), bool(cached))
    return columns


async def check_schema(db: Connections) -> None:
    """StoreError naming the table and columns if a table lacks what this build writes."""
    schema = await db.schema_at_open()
    for table, required in REQUIRED_COLUMNS.items():
        name = db.prefixed(table)
        missing = [column for column in required if column not in schema[name]]
        if missing:
            raise StoreError(
                f"open the store: QuestDB table {name} lacks column(s) {', '.join(missing)}: "
                "it was created by a pre-release build of ticktape; drop its tables or "
                "choose another ?prefix="
            )


async def alter_until_shown(
    db: Connections,
    name: str,
    alters: Sequence[str],
    lacking: Callable[[TableColumns], str | None],
    what: str,
) -> float:
    """Run ``alters`` on table ``name``, then wait until ``table_columns()`` shows them
    (a WAL table applies an ``ALTER`` later): ``lacking`` says, from the table's columns,
    what it does not show yet (None: nothing). Within the store's timeout; the seconds
    it took.

    An ``ALTER`` refused "table busy" (another writer holds a non-WAL table) is run again;
    an unreachable server fails at once; one refused otherwise is waited out — of two
    instances opening at once, the second's may be refused because the first's changed
    the table — and its refusal is named if the table never shows the change."""
    started = time.monotonic()
    deadline = started + db.timeout_s
    refusals: list[str] = []
    for sql in alters:
        delay = SCHEMA_WAIT_FIRST_S
        while True:
            try:
                async with db.writer(what) as conn:
                    await conn.execute(sql)
                break
            except StoreBusy:
                if time.monotonic() >= deadline:
                    raise
            except StoreUnavailable:
                raise
            except StoreError as exc:
                refusals.append(str(exc))
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, SCHEMA_WAIT_MAX_S)
    delay = SCHEMA_WAIT_FIRST_S
    while (still := lacking((await read_columns(db, (name,)))[name])) is not None:
        if time.monotonic() >= deadline:
            raise StoreError(
                f"open the store: QuestDB table {name} did not show {still} within "
                f"{db.timeout_s:g}s" + (f" (refused: {refusals[-1]})" if refusals else "")
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, SCHEMA_WAIT_MAX_S)
    return time.monotonic() - started


async def ensure_tick_send_columns(db: Connections) -> None:
    """Add :data:`TICK_SEND_COLUMNS` to tick tables made before them, and wait until the
    tables show them (a seal reads them). Only the missing ones are added: QuestDB
    refuses an ``ADD COLUMN IF NOT EXISTS`` that changes nothing on a WAL table."""
    schema = await db.schema_at_open()
    for table in TICK_TABLES:
        name = db.prefixed(table)

        def lacking(columns: TableColumns) -> str | None:
            missing = [column for column in TICK_SEND_COLUMNS if column not in columns]
            return f"the added column(s) {', '.join(missing)}" if missing else None

        if lacking(schema[name]) is None:
            continue
        adds = [
            f"ALTER TABLE {name} ADD COLUMN {column} LONG"
            for column in TICK_SEND_COLUMNS
            if column not in schema[name]
        ]
        await alter_until_shown(db, name, adds, lacking, "add tick send columns")


async def ensure_session_symbols(db: Connections) -> None:
    """Give every column of :data:`SESSION_ID_COLUMNS` made before with a smaller capacity
    or cached :data:`SESSION_SYMBOL`'s capacity and NOCACHE (:func:`ensure_large_symbol`);
    ``tt_session_keys``' key gets it in :func:`ensure_session_keys`.

    Safe while other instances write (docs/questdb.md, "Session-id symbol capacity"): the
    ``ALTER`` rebuilds the column's symbol map, not its rows; a non-WAL table's writer is
    refused "table busy" meanwhile (and retries), and the ``ALTER`` itself is retried while
    another writer holds the table, until the store's timeout. Of two instances opening at
    once, both may alter: the second rebuilds the map again, harmlessly."""
    schema = await db.schema_at_open()
    for table, column in SESSION_ID_COLUMNS:
        name = db.prefixed(table)
        await ensure_large_symbol(db, name, column, schema[name])


async def ensure_large_symbol(
    db: Connections, name: str, column: str, columns: TableColumns
) -> None:
    """Make SYMBOL ``column`` of table ``name`` (its ``columns`` as read) NOCACHE and of
    :data:`SESSION_SYMBOL_CAPACITY` if it is cached or smaller, and wait until the table
    shows it; one INFO line when it changed."""
    if column not in columns:
        raise StoreError(f"open the store: QuestDB table {name} has no column {column}")
    capacity, cached = columns[column]
    if capacity >= SESSION_SYMBOL_CAPACITY and not cached:
        return
    alters = []
    if cached:  # first, so the new capacity never fills a cache on the heap
        alters.append(f"ALTER TABLE {name} ALTER COLUMN {column} NOCACHE")
    if capacity < SESSION_SYMBOL_CAPACITY:
        alters.append(
            f"ALTER TABLE {name} ALTER COLUMN {column} SYMBOL CAPACITY {SESSION_SYMBOL_CAPACITY}"
        )

    def lacking(now: TableColumns) -> str | None:
        shown = now.get(column, (0, False))
        if shown[0] >= SESSION_SYMBOL_CAPACITY and not shown[1]:
            return None
        return (
            f"{column} as {SESSION_SYMBOL} (it shows capacity {shown[0]}, "
            f"{'cached' if shown[1] else 'not cached'})"
        )

    took = await alter_until_shown(db, name, alters, lacking, f"alter {name}.{column}")
    log.info(
        "open the store: %s.%s is now %s (was capacity %d, %s) in %.2fs",
        name,
        column,
        SESSION_SYMBOL,
        capacity,
        "cached" if cached else "not cached",
        took,
    )


async def ensure_session_keys(db: Connections) -> None:
    """Create ``tt_session_keys`` if missing, holding the keys of the sessions already in
    the log (a store written before the table existed): built under a name of its own and
    renamed once complete, so no instance ever looks a key up in a partial table; of two
    instances opening at once, the second's rename fails and its copy is dropped. A table
    made before with a smaller or cached ``idempotency_key`` gets :data:`SESSION_SYMBOL`
    (:func:`ensure_large_symbol`)."""
    name = db.prefixed("tt_session_keys")
    if await _table_exists(db, name):
        columns = (await read_columns(db, (name,)))[name]
        await ensure_large_symbol(db, name, "idempotency_key", columns)
        return
    filling = f"{name}_fill_{os.getpid()}_{id(db):x}"
    async with db.writer("create the idempotency keys") as conn:
        with ERRORS.wrap("create the idempotency keys"):
            try:
                await conn.execute(
                    db.prefixed(SESSION_KEYS_DDL).replace(f"EXISTS {name}", f"EXISTS {filling}")
                )
                await conn.execute(
                    f"INSERT INTO {filling} SELECT idempotency_key::symbol, id::varchar, "
                    f"ts, ts FROM {db.prefixed('tt_session_log')} WHERE row_seq = 1 "
                    "AND idempotency_key IS NOT NULL"
                )
                await conn.execute(f"RENAME TABLE {filling} TO {name}")
            except psycopg.Error:
                with suppress(psycopg.Error):
                    await conn.execute(f"DROP TABLE IF EXISTS {filling}")
                if not await _table_exists(db, name):
                    raise


#: At most one warning this often about the session-log rows a lookup of the ``id`` symbol
#: missed (:class:`LogLookups`): a burst of creates can cause many in a second.
SYMBOL_MISS_WARN_EVERY_S = 60.0

_LATEST_BY_ID = "LATEST ON ts PARTITION BY id"


class SymbolMisses:
    """Session ids a read by a table's session-id symbol did not find, read again by their
    string value (``rechecked``), and those of them found then (``confirmed``: QuestDB's
    lookup missed stored rows), per table (``session_log``: :class:`LogLookups`;
    ``trades``, ``orderbook``: the seal's counts, ``_ticks.py``), ever: what
    ``Store.symbol_misses`` and ``/metrics`` show."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, table: str, rechecked: int, confirmed: int) -> None:
        for outcome, count in (("rechecked", rechecked), ("confirmed", confirmed)):
            self.counts[table, outcome] = self.counts.get((table, outcome), 0) + count

    def of(self, tables: Sequence[str], outcome: str) -> int:
        """``outcome``'s count over ``tables``."""
        return sum(self.counts.get((table, outcome), 0) for table in tables)


class LogLookups:
    """The newest session-log rows of sessions that must exist, read by their ids.

    QuestDB 9.3.4's lookup of the ``id`` SYMBOL's key misses transiently while other
    connections add new symbol values at a high rate: ``WHERE id IN (...)`` (and ``id =
    %s``) finds no row of a session whose create was acknowledged, the same query a few
    milliseconds later finds it, and ``WHERE cast(id AS string) = %s`` finds it at once
    (docs/questdb.md, "The symbol lookup that misses"). So every id such a read did not
    find is read again by its string value before the caller acts on its absence (a
    tick write refused as "unknown session", a 404, a lost compare-and-set). That read
    compares every row of the log, so it runs only for the ids missed — never on the
    normal path; an id that is really unknown pays it.

    :attr:`rechecked` counts the ids read again, :attr:`confirmed` those of them that
    were there after all (QuestDB's miss); ``bench/log_visibility.py`` reads both.
    Testing hook: :attr:`on_lookup`, if set, is called with each first read's rows and
    returns the rows to use (a test drops one to show the fallback finds it).
    """

    def __init__(self, misses: SymbolMisses | None = None) -> None:
        self._misses = SymbolMisses() if misses is None else misses
        self.on_lookup: Callable[[list[tuple[Any, ...]]], list[tuple[Any, ...]]] | None = None
        self._warnings = LogThrottle(SYMBOL_MISS_WARN_EVERY_S)

    @property
    def rechecked(self) -> int:
        return self._misses.of(("session_log",), "rechecked")

    @property
    def confirmed(self) -> int:
        return self._misses.of(("session_log",), "confirmed")

    @staticmethod
    def sql(columns: str, ids: Sequence[str], *, by_string: bool = False) -> tuple[str, list[str]]:
        """``SELECT columns`` of the newest log rows of ``ids``, and its parameters."""
        column = "cast(id AS string)" if by_string else "id"
        marks, params = in_list(ids)
        sql = f"SELECT {columns} FROM tt_session_log WHERE {column} IN ({marks}) {_LATEST_BY_ID}"
        return sql, params

    def first(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return rows if self.on_lookup is None else self.on_lookup(rows)

    @staticmethod
    def missed(ids: Sequence[str], rows: list[tuple[Any, ...]], id_at: int) -> list[str]:
        found = {str(r[id_at]) for r in rows}
        return sorted({sid for sid in ids if sid not in found})

    def found_again(self, missed: list[str], again: list[tuple[Any, ...]], what: str) -> None:
        """Count ``missed`` and the rows the read by string found for them; warn."""
        self._misses.add("session_log", len(missed), len(again))
        if not again:
            return
        unwarned = self._warnings.event(len(again))
        if unwarned is not None:
            log.warning(
                "%s: QuestDB's lookup of the session log's id symbol missed %d stored "
                "session(s) since the last warning (%d in all); found by their string "
                "value (docs/questdb.md)",
                what,
                unwarned,
                self.confirmed,
            )

    async def read(
        self,
        db: Connections,
        conn: psycopg.AsyncConnection[Any],
        columns: str,
        ids: Sequence[str],
        what: str,
        *,
        id_at: int = 0,
    ) -> list[tuple[Any, ...]]:
        """The newest rows of ``ids`` (``columns`` hold ``id`` at ``id_at``) on ``conn``,
        every id the symbol lookup missed read again by its string value."""
        sql, params = self.sql(columns, ids)
        cur = await conn.execute(db.prefixed(sql), params)
        rows = self.first(await cur.fetchall())
        missed = self.missed(ids, rows, id_at)
        if not missed:
            return rows
        sql, params = self.sql(columns, missed, by_string=True)
        cur = await conn.execute(db.prefixed(sql), params)
        again = await cur.fetchall()
        self.found_again(missed, again, what)
        return rows + again

    def read_missed(
        self,
        db: Connections,
        conn: psycopg.Connection[Any],
        columns: str,
        missed: list[str],
        what: str,
    ) -> list[tuple[Any, ...]]:
        """:meth:`read`'s second read on a blocking connection (the log thread's), for
        ids its caller's own read missed; their rows."""
        if not missed:
            return []
        sql, params = self.sql(columns, missed, by_string=True)
        again = conn.execute(db.prefixed(sql), params).fetchall()
        self.found_again(missed, again, what)
        return again


async def _table_exists(db: Connections, name: str) -> bool:
    async with db.reader("read schema") as conn:
        cur = await conn.execute("SELECT count() FROM tables() WHERE table_name = %s", (name,))
        return bool((await cur.fetchall())[0][0])


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Consume the outcome of work nobody waits for any more (no 'never retrieved')."""
    if not task.cancelled():
        task.exception()


async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
    with suppress(psycopg.Error, OSError):
        await conn.close()
