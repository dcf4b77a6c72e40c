"""Group commit for the QuestDB session log: many compare-and-set appends, one transaction.

Every instance writes the log through one connection, so its appends queue up
behind each other. Appends that arrive while a group is being committed join
the next group. A group runs on the log thread (``_logthread.py``: synchronous
connections on a thread of their own; the appenders await a future), so from its
first reply to its COMMIT the table is held for the server's round trips, never
for the event loop's turn. It takes two round trips, each a pipeline of statements
sent together (one wait for the server instead of one per statement: on a loaded
server each wait is a millisecond or more while the group holds the table) — or a
lone COMMIT or ROLLBACK, when that is all the second has to send:

1. ``BEGIN``, INSERT the first append's row — from here until COMMIT or
   ROLLBACK no other writer can touch the table (QuestDB answers "table busy")
   — and read the committed state: the newest ``row_seq`` of every session in
   the group (``LATEST ON``: it stops at each session's newest row, so its cost
   does not grow with the log's history as an aggregate over the rows would) and
   the sessions of every idempotency key in it (``tt_session_keys``, through its
   index: a scan of the log's keys grew with the history). Only when a key is found,
   one more round trip reads that session's first row (an interval search on the
   log's timestamp).
2. Keep the appends whose expectation still holds (at most one per session and
   per key: later ones in the group lost the race to the earlier one). If the
   first append is among the losers, ROLLBACK and answer it "lost"; otherwise
   INSERT the other winners (multi-row INSERTs of power-of-two row counts, in the
   pipeline: ``values_statements``; their few texts are compiled once per connection,
   by QuestDB and by psycopg, where a text per group's size, or a pipelined one-row
   INSERT per winner, had QuestDB compile each anew) and COMMIT. The idempotency
   keys of the winners are committed into ``tt_session_keys`` on a connection of
   their own (the log thread's ``"keys"`` connection) just before: a key is never
   missing for a committed session, and a key row left by a COMMIT that then failed
   names a first row that does not exist, and is ignored.
   An append may carry the same session's next rows (``Append.then``: a create
   that its owner starts at once carries its ``running`` row): judged by its first
   row's expectation, they are written with it, in the same transaction.
   Losers are answered "lost" (their caller re-reads and decides again), winners
   "done" — after COMMIT, so an acknowledged append is durable and visible.
3. In the COMMIT's pipeline, read the group's rows back (its ids in the span of its
   timestamps): after a change of the log's metadata (another connection's ``ADD
   COLUMN``, the ``id`` symbol outgrowing its capacity) QuestDB answers pipelined
   INSERTs and the COMMIT as done yet does not keep some rows (docs/questdb.md). An
   append whose row is absent is submitted again, so it is judged anew, never
   acknowledged. The keys are read back likewise and a missing one written again.

"Table busy" (another instance holds the log) rolls the attempt back, and the group is
tried again after a short delay, spent on the log thread — or, when another log write
of this process waits for the lock over the log's writers, spent without that lock,
so that write goes first. Every attempt does both steps anew, and leaves out the
appends whose callers gave up before it began.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from ticktape.config import RetryPolicy
from ticktape.domain import utcnow
from ticktape.errors import StoreBusy, WriteTimedOut
from ticktape.store.base import bounded_write
from ticktape.store.questdb._db import (
    ERRORS,
    SESSION_LOG_COLUMNS,
    Connections,
    LogLookups,
    execute_raw,
    in_list,
    log_params,
    values_statements,
)
from ticktape.store.questdb._grouping import Grouper, Waiting
from ticktape.store.questdb._logthread import Connect, collector_paused

log = logging.getLogger(__name__)
MAX_GROUP = 256  # appends sharing one transaction, at most
_LOG_COLUMNS = [name for name, _ in SESSION_LOG_COLUMNS]
_ROW_SEQ_AT = _LOG_COLUMNS.index("row_seq")
_TS_AT = _LOG_COLUMNS.index("ts")
_KEYS_HEAD = "INSERT INTO tt_session_keys (idempotency_key, id, first_ts, ts)"
_INSERT_KEY = f"{_KEYS_HEAD} VALUES (%s, %s, %s, %s)"


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What became of one append: ``appended``; or not, with ``existing`` the first row
    of the session that already holds its idempotency key, or None when another
    writer changed the session first (the caller re-reads and decides again)."""

    appended: bool
    existing: tuple[Any, ...] | None = None


APPENDED = AppendResult(appended=True)
LOST = AppendResult(appended=False)


@dataclass
class Append(Waiting[AppendResult]):
    """One compare-and-set append: ``values`` if ``id``'s newest row is ``expect_row_seq``,
    followed by the rows of ``then`` (the same session's next rows, in order) in the same
    transaction: all of them or none."""

    id: str
    values: tuple[Any, ...]
    expect_row_seq: int | None
    idempotency_key: str | None = None
    ts: datetime | None = None  # the row's timestamp: with a key, where its first row is
    then: tuple[tuple[Any, ...], ...] = ()

    @property
    def rows(self) -> tuple[tuple[Any, ...], ...]:
        return (self.values, *self.then)


@dataclass(frozen=True, slots=True)
class _GiveWay:
    """The log is busy and another log write of this process waits for the writer's
    lock: the group gives the lock up for ``delay_s``, then tries again."""

    delay_s: float


class _BusyRetry:
    """The "table busy" attempts of one group, counted across its turns on the lock."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._attempt = 0

    def next_delay(self, exc: psycopg.Error) -> float | None:
        """The delay before the next attempt after ``exc``; None: not to be retried
        (not "table busy", or the last attempt failed)."""
        policy = self._policy
        if self._attempt >= policy.busy_attempts - 1:
            return None
        if not isinstance(ERRORS.translate(exc, "write session log"), StoreBusy):
            return None
        cap = min(policy.busy_max_s, policy.busy_base_s * 2**self._attempt)
        self._attempt += 1
        return random.uniform(0, cap)


class GroupCommitter:
    """Queues appends and commits them in groups; see the module docstring."""

    def __init__(
        self, db: Connections, insert_sql: str, select_sql: str, retry: RetryPolicy
    ) -> None:
        """``select_sql`` reads whole rows; ``retry.busy_*`` bound the retry of a "table
        busy" group."""
        self._db = db
        self._retry = retry
        self._insert = insert_sql
        # the many rows of a group go in multi-row statements of this head (values_statements)
        self._head, values, _ = insert_sql.partition(" VALUES ")
        assert values, insert_sql
        self._select = select_sql
        self._groups: Grouper[Append] = Grouper(
            self._commit_group, lambda queue: MAX_GROUP, "append to session log"
        )
        # Testing hook (QuestDBSessionStore.on_log_transaction): called on the log thread
        # with each attempt's start and end (time.perf_counter())
        self.on_transaction: Callable[[float, float], None] | None = None

    async def append(self, op: Append) -> AppendResult:
        """Whether ``op`` was appended, and if not, why (:class:`AppendResult`).

        Bounded by the store's write timeout: an append that hangs (a frozen server)
        fails as unavailable and counts as a write failure."""
        self._groups.submit(op)
        try:
            return await bounded_write(op.future, self._db.timeout_s, "write session log")
        except WriteTimedOut as exc:
            self._db.health.failed(exc)
            raise

    async def _commit_group(self, group: list[Append]) -> None:
        answers = await self._commit(group)
        self._db.stop_trace.committed(len(group))
        retry = []
        for op, answer in zip(group, answers, strict=True):
            if answer is None:
                retry.append(op)  # lost only because the group's first append did
            else:
                op.answer(answer)
        self._groups.requeue(retry)

    async def _commit(self, group: list[Append]) -> Sequence[AppendResult | None]:
        """One answer per append; None: not judged, only because the group's first append
        lost (it is submitted again). Run on the log thread (module docstring); between
        "table busy" attempts the session-log writer's lock is given up while another of
        this process's log writes waits for it."""
        busy = _BusyRetry(self._retry)
        while True:
            outcome = await self._db.in_log_thread(
                lambda connection: self._commit_while_busy(connection, group, busy),
                "write session log",
            )
            if not isinstance(outcome, _GiveWay):
                return outcome
            # without the writer's lock: the write waiting for it goes first (the lock
            # is handed over in the order asked), then this group tries again
            await asyncio.sleep(outcome.delay_s)

    def _commit_while_busy(
        self, connection: Connect, group: list[Append], busy: _BusyRetry
    ) -> Sequence[AppendResult | None] | _GiveWay:
        """The group, tried again while another writer holds the log: only "table busy" is
        retried here, briefly (RetryPolicy.busy_*, the one named nesting: every other
        transient error goes to the store boundary's retry). In the thread, so each retry
        comes after its delay, not after the event loop's next turn as well — unless
        another log write of this process waits for the writer's lock: then the delay
        is spent without it (:class:`_GiveWay`). Each attempt is a whole transaction that
        reads the committed state again, so a retry judges every append anew."""
        while True:
            try:
                return self._commit_live(connection, group)
            except psycopg.Error as exc:
                delay = busy.next_delay(exc)
                if delay is None:
                    raise
                log.debug("append to session log: table busy (%s); retrying in %.3fs", exc, delay)
                self._db.stop_trace.busy(delay)
            if self._db.log_writes_waiting():
                return _GiveWay(delay)
            time.sleep(delay)  # on the log thread: the event loop goes on meanwhile

    def _commit_live(
        self, connection: Connect, group: list[Append]
    ) -> Sequence[AppendResult | None]:
        """The group without the appends whose callers gave up (cancelled, or past the
        store timeout) before this attempt began: those are never written, and answered
        "lost" (nobody reads it). Once an attempt begins, it writes its appends whole.
        ``done()`` is read here off the event loop: a caller that gives up at that very
        moment has its append written, as one that gives up once the write is under way."""
        live = [i for i, op in enumerate(group) if not op.future.done()]
        if len(live) == len(group):
            return self._commit_in_thread(connection, group)
        answers: list[AppendResult | None] = [LOST] * len(group)
        if live:
            judged = self._commit_in_thread(connection, [group[i] for i in live])
            for i, answer in zip(live, judged, strict=True):
                answers[i] = answer
        return answers

    def _commit_in_thread(
        self, connection: Connect, group: list[Append]
    ) -> Sequence[AppendResult | None]:
        conn = connection("log")
        began = ended = 0.0
        try:
            # the log is held from the first round trip: no collection of this process
            # may keep the thread from its next one (collector_paused), and the hold
            # is bounded (log_transaction_bounded: a frozen server would keep it)
            with collector_paused(), self._db.log_transaction_bounded():
                began = time.perf_counter()
                try:
                    return self._transaction(connection, conn, group)
                finally:
                    ended = time.perf_counter()  # before the collector may run again
        finally:
            if self.on_transaction is not None:
                self.on_transaction(began, ended)

    def _transaction(
        self, connection: Connect, conn: psycopg.Connection[Any], group: list[Append]
    ) -> Sequence[AppendResult | None]:
        began = time.perf_counter()
        answered = None  # when the first round trip was answered
        try:
            answers = self._decide(conn, group)
            answered = time.perf_counter()
            if not answers[0].appended:
                conn.execute("ROLLBACK")
                return [answers[0], *([None] * (len(group) - 1))]
            # the first append's first row is in already; its ``then`` rows follow it
            winners = list(group[0].then) + [
                row
                for op, a in zip(group[1:], answers[1:], strict=True)
                if a.appended
                for row in op.rows
            ]
            self._record_keys(
                connection("keys"),
                [op for op, a in zip(group, answers, strict=True) if a.appended],
            )
            written = [op for op, a in zip(group, answers, strict=True) if a.appended]
            with conn.pipeline() as pipeline:
                rows = [log_params(row) for row in winners]
                execute_raw(conn, values_statements(self._db.prefixed(self._head), rows))
                conn.execute("COMMIT")
                kept_cur = conn.execute(*self._kept_sql(written))
                pipeline.sync()
                kept_rows = self._db.log_lookups.first(kept_cur.fetchall())
            # a session with none of its rows read back: the symbol lookup may have
            # missed it (LogLookups); read again by the id's string value
            unread = LogLookups.missed([op.id for op in written], kept_rows, 0)
            if unread:
                again = conn.execute(*self._kept_sql(written, unread)).fetchall()
                self._db.log_lookups.found_again(unread, again, "append to session log")
                kept_rows += again
            kept = {(str(r[0]), int(r[1]), _utc(r[2])) for r in kept_rows}
            return _unkept(group, answers, kept)
        except BaseException as exc:
            if isinstance(exc, psycopg.OperationalError) and conn.closed:
                # the server closed it mid-transaction: it does so to a connection silent
                # for pg.net.connection.timeout (1.5 s managed; docs/resilience.md) —
                # whether this thread was that slow to go on, these two figures say
                now = time.perf_counter()
                log.warning(
                    "append to session log: connection lost mid-transaction (%s), "
                    "%.3fs after BEGIN, %s after the first round trip's answer; "
                    "its %d appends fail (their callers retry)",
                    exc,
                    now - began,
                    "-" if answered is None else f"{now - answered:.3f}s",
                    len(group),
                )
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise

    async def first_rows(
        self, conn: psycopg.AsyncConnection[Any], candidates: Sequence[tuple[Any, ...]]
    ) -> dict[str, tuple[Any, ...]]:
        """Key → the first log row of the session holding it, for ``candidates`` (rows of
        :func:`keys_sql`), in one pipelined round trip (none without candidates): each
        first row found by an interval search on the log's timestamp. A key with several
        rows (a key row whose session's COMMIT failed, then the retried create) gives the
        earliest session that exists (:class:`_FirstRows`)."""
        if not candidates:
            return {}
        reads = _FirstRows(candidates, self._select, self._db)
        async with conn.pipeline() as pipeline:
            curs = [await conn.execute(sql, params) for sql, params in reads.first]
            await pipeline.sync()
            first = [await cur.fetchall() for cur in curs]
        again = [
            await (await conn.execute(sql, params)).fetchall() for sql, params in reads.again(first)
        ]
        return reads.answer(again)

    def _first_rows_in_thread(
        self, conn: psycopg.Connection[Any], candidates: Sequence[tuple[Any, ...]]
    ) -> dict[str, tuple[Any, ...]]:
        """:meth:`first_rows` on the log thread's connection."""
        if not candidates:
            return {}
        reads = _FirstRows(candidates, self._select, self._db)
        with conn.pipeline() as pipeline:
            curs = [conn.execute(sql, params) for sql, params in reads.first]
            pipeline.sync()
            first = [cur.fetchall() for cur in curs]
        again = [conn.execute(sql, params).fetchall() for sql, params in reads.again(first)]
        return reads.answer(again)

    def _kept_sql(
        self, written: list[Append], by_string: list[str] | None = None
    ) -> tuple[str, list[Any]]:
        """The read-back of ``written``'s rows after their COMMIT: (id, row_seq, ts) of the
        log's rows in the span of their timestamps (an interval search) and of their ids —
        or of the ids ``by_string``, compared as strings (``LogLookups``)."""
        times = [_utc(row[_TS_AT]) for op in written for row in op.rows]
        ids = sorted({op.id for op in written}) if by_string is None else by_string
        column = "id" if by_string is None else "cast(id AS string)"
        marks, params = in_list(ids)
        sql = self._db.prefixed(
            f"SELECT id, row_seq, ts FROM tt_session_log WHERE ts BETWEEN %s AND %s AND {column} "
            f"IN ({marks})"
        )
        return sql, [min(times), max(times), *params]

    def _record_keys(self, keys: psycopg.Connection[Any], appended: list[Append]) -> None:
        """Commit the idempotency keys of ``appended`` (``tt_session_keys``) on ``keys``,
        before the log's COMMIT: while this group holds the log, no other writer looks
        keys up."""
        keyed = [
            (op.idempotency_key, op.id, op.ts, utcnow())
            for op in appended
            if op.idempotency_key is not None
        ]
        if not keyed:
            return
        insert = self._db.prefixed(_INSERT_KEY)
        try:
            with keys.pipeline() as pipeline:
                keys.execute("BEGIN")
                execute_raw(keys, values_statements(self._db.prefixed(_KEYS_HEAD), keyed))
                keys.execute("COMMIT")
                missing = self._keys_not_kept(keys, keyed, pipeline)
        except BaseException:
            if not keys.closed:
                with contextlib.suppress(psycopg.Error):
                    keys.execute("ROLLBACK")
            raise
        if not missing:
            return
        # QuestDB answered them as written yet did not keep them (a metadata change of the
        # table: docs/questdb.md); one statement at a time, outside a pipeline, it does
        log.warning(
            "session keys: %d key rows missing after their COMMIT; written again", len(missing)
        )
        for row in missing:
            keys.execute(insert, row)
        with keys.pipeline() as pipeline:
            if self._keys_not_kept(keys, missing, pipeline):
                raise StoreBusy("write session keys: key rows not kept by the server")

    def _keys_not_kept(
        self,
        keys: psycopg.Connection[Any],
        keyed: list[tuple[Any, ...]],
        pipeline: psycopg.Pipeline,
    ) -> list[tuple[Any, ...]]:
        """The rows of ``keyed`` (key, id, first_ts, ts) not in ``tt_session_keys``, read
        in ``pipeline`` (synced here)."""
        sql, params = keys_sql([row[0] for row in keyed])
        cur = keys.execute(self._db.prefixed(sql), params)
        pipeline.sync()
        kept = {(str(k), str(i), _utc(ts)) for k, i, ts in cur.fetchall()}
        return [row for row in keyed if (row[0], row[1], _utc(row[2])) not in kept]

    def _decide(self, conn: psycopg.Connection[Any], group: list[Append]) -> list[AppendResult]:
        """Begin, insert the first row (taking the table) and read the committed state, in
        one round trip (and one more when an idempotency key is found); then judge every
        append of the group."""
        ids = sorted({op.id for op in group})
        keys = sorted({op.idempotency_key for op in group if op.idempotency_key})
        with conn.pipeline() as pipeline:
            conn.execute("BEGIN")
            conn.execute(self._db.prefixed(self._insert), log_params(group[0].values))
            marks, params = in_list(ids)
            newest_cur = conn.execute(
                self._db.prefixed(
                    f"SELECT id, row_seq FROM tt_session_log WHERE id IN ({marks}) "
                    "LATEST ON ts PARTITION BY id"
                ),
                params,
            )
            keys_cur = None
            if keys:
                sql, params = keys_sql(keys)
                keys_cur = conn.execute(self._db.prefixed(sql), params)
            pipeline.sync()
            newest_rows = self._db.log_lookups.first(newest_cur.fetchall())
            candidates = keys_cur.fetchall() if keys_cur is not None else []
        # a session an append expects to exist, missing from the read: QuestDB's symbol
        # lookup may have missed it (LogLookups); a create's id missing is the rule
        existing = [op.id for op in group if op.expect_row_seq is not None]
        newest_rows += self._db.log_lookups.read_missed(
            self._db,
            conn,
            "id, row_seq",
            LogLookups.missed(existing, newest_rows, 0),
            "append to session log",
        )
        newest: dict[str, int | None] = {str(r[0]): r[1] for r in newest_rows}
        first_rows = self._first_rows_in_thread(conn, candidates)
        answers: list[AppendResult] = []
        taken_ids: set[str] = set()
        taken_keys: set[str] = set()
        for op in group:
            key = op.idempotency_key
            if key is not None and key in first_rows:
                answers.append(AppendResult(appended=False, existing=first_rows[key]))
            elif (
                op.id in taken_ids
                or (key is not None and key in taken_keys)
                or newest.get(op.id) != op.expect_row_seq
            ):
                answers.append(LOST)
            else:
                answers.append(APPENDED)
                taken_ids.add(op.id)
                if key is not None:
                    taken_keys.add(key)
        return answers


def _utc(ts: datetime) -> datetime:
    """``ts`` as a naive UTC time, as QuestDB returns a TIMESTAMP."""
    return ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)


def _unkept(
    group: list[Append], answers: list[AppendResult], kept: set[tuple[str, int, datetime]]
) -> list[AppendResult | None]:
    """``answers`` with None for every append judged "appended" whose row the read-back
    after COMMIT did not find (``kept``: id, row_seq, ts): QuestDB answered its INSERT
    and the COMMIT as done yet did not keep it (docs/questdb.md), so it is judged anew."""
    judged: list[AppendResult | None] = []
    for op, answer in zip(group, answers, strict=True):
        rows = [(op.id, int(r[_ROW_SEQ_AT]), _utc(r[_TS_AT])) for r in op.rows]
        missing = [row for row in rows if row not in kept]
        if answer.appended and missing:
            log.warning(
                "append to session log: row %s/%s missing after its COMMIT; judged anew",
                op.id,
                missing[0][1],
            )
            judged.append(None)
        else:
            judged.append(answer)
    return judged


def _earliest(
    ordered: list[tuple[Any, ...]], read: list[list[tuple[Any, ...]]]
) -> dict[str, tuple[Any, ...]]:
    """Key → the first row of the earliest of its sessions (``ordered``) that was read."""
    found: dict[str, tuple[Any, ...]] = {}
    for (key, _sid, _ts), rows in zip(ordered, read, strict=True):
        if rows:
            found.setdefault(str(key), rows[0])
    return found


def _by_first_ts(candidates: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(candidates, key=lambda c: (c[2], str(c[1])))


class _FirstRows:
    """The reads of :meth:`GroupCommitter.first_rows`, without their I/O: the first row
    (``row_seq = 1``, at its ``first_ts``) of each candidate (key, id, first_ts), in the
    order of their first rows (:attr:`first`); the candidates whose row was not read, no
    earlier candidate of their key's was, read again by the id's string value
    (:meth:`again`, ``LogLookups``); key → the earliest session's first row
    (:meth:`answer`). Each caller runs the reads on its own connection."""

    def __init__(self, candidates: Sequence[tuple[Any, ...]], select: str, db: Connections) -> None:
        self._ordered = _by_first_ts(candidates)
        self._select = select
        self._db = db
        self._read: list[list[tuple[Any, ...]]] = []
        self._unfound: list[int] = []
        self.first = [(self._sql(), (ts, str(sid))) for _key, sid, ts in self._ordered]

    def _sql(self, *, by_string: bool = False) -> str:
        column = "cast(id AS string)" if by_string else "id"
        return self._db.prefixed(f"{self._select} WHERE ts = %s AND {column} = %s AND row_seq = 1")

    def again(self, first: list[list[tuple[Any, ...]]]) -> list[tuple[str, tuple[Any, ...]]]:
        """The second reads, given the rows of :attr:`first`'s: where in the order a
        candidate's first row was not read, no earlier candidate of its key's was — a key
        is committed before its session's rows, so the session exists unless its append
        lost, or QuestDB's symbol lookup missed it (``LogLookups``): read again by the
        id's string value (an interval search on ``ts`` first: cheap)."""
        self._read = [self._db.log_lookups.first(rows) for rows in first]
        settled: set[str] = set()
        self._unfound = []
        for at, ((key, _sid, _ts), rows) in enumerate(zip(self._ordered, self._read, strict=True)):
            if rows:
                settled.add(str(key))
            elif str(key) not in settled:
                self._unfound.append(at)
        sql = self._sql(by_string=True)
        return [(sql, (self._ordered[at][2], str(self._ordered[at][1]))) for at in self._unfound]

    def answer(self, again: list[list[tuple[Any, ...]]]) -> dict[str, tuple[Any, ...]]:
        """Key → the first row of its earliest session read, given the rows of
        :meth:`again`'s reads."""
        if self._unfound:
            for at, rows in zip(self._unfound, again, strict=True):
                self._read[at] = rows
            self._db.log_lookups.found_again(
                sorted({str(self._ordered[at][1]) for at in self._unfound}),
                [self._read[at][0] for at in self._unfound if self._read[at]],
                "read idempotency key",
            )
        return _earliest(self._ordered, self._read)


def keys_sql(keys: Sequence[str]) -> tuple[str, list[str]]:
    """The sessions holding idempotency ``keys`` — (key, session id, first row's ts) — and
    the query's parameters."""
    marks, params = in_list(keys)
    return (
        "SELECT idempotency_key, id, first_ts FROM tt_session_keys "
        f"WHERE idempotency_key IN ({marks})",
        params,
    )
