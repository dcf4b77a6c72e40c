"""The SQLite backend: the embedded default store (``sqlite:///path/to/file.db``).

Every write is one ``BEGIN IMMEDIATE`` transaction, so a conditional transition
reads and updates under SQLite's write lock: compare-and-set holds across
threads and processes. A commit is visible to every new read transaction at
once, so read-your-writes needs nothing more (invariant 2).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import repeat

import numpy as np

from ticktape.config import FLUSH_MAX_ROWS, sqlite_path_from_url
from ticktape.domain import (
    ACTIVE_STATUSES,
    DataType,
    Note,
    Reason,
    Session,
    SessionEvent,
    SessionKind,
    SessionStatus,
    Stats,
    utcnow,
)
from ticktape.errors import (
    LeaseLost,
    SessionConflict,
    SessionNotFound,
    StoreBusy,
    StoreUnavailable,
    ValidationError,
)
from ticktape.store.base import (
    DEFAULT_DATA_LIMIT,
    MAX_CHANGES,
    MAX_DATA_LIMIT,
    MAX_LIST_LIMIT,
    UNCHANGED,
    ChangePage,
    LeaseScan,
    Purged,
    ResultPart,
    ResultRow,
    ResultStore,
    ResultSummary,
    ResultTable,
    Seal,
    SessionPage,
    SessionQuery,
    SessionStore,
    Store,
    StoredResults,
    TickPosition,
    TickQuery,
    TickStore,
    TradeBucket,
    Unchanged,
    WriteResult,
    gather_answers,
)
from ticktape.store.rules import (
    apply_claim,
    apply_start,
    apply_transition,
    check_bucket_query,
    check_continues,
    check_limit,
    check_note_owner,
    decode_cursor,
    dump_progress,
    effective,
    encode_cursor,
    from_us,
    parse_config,
    parse_data_types,
    parse_symbols,
    recv_time,
    to_us,
)
from ticktape.store.sqlite._db import BULK_GROUP_BUDGET_S, Database, WriteTrace
from ticktape.store.window import window_batches
from ticktape.ticks import (
    BookBatch,
    BookSnapshot,
    Gap,
    GapCause,
    StreamTimes,
    TickBatch,
    TickCounts,
    Trade,
    TradeBatch,
    side_name,
)

_SESSION_COLUMNS = (
    "id, kind, status, symbols, exchange, data_types, config, created_us, started_us, ended_us, "
    "reason, trades, orderbook, errors, owner, lease_us, version, deleted, idempotency_key"
)
_ACTIVE_SQL = "('pending', 'running', 'stopping')"
# A session as the contract shows it: its row, and for a non-terminal one its owner's
# instance lease and the progress published for it (rules.effective applies them).
_VIEW_COLUMNS = f"{_SESSION_COLUMNS}, expires_us, n_trades, n_orderbook, n_errors"
_VIEW_FROM = (
    f"FROM sessions LEFT JOIN instances ON instances.token = owner AND status IN {_ACTIVE_SQL} "
    "LEFT JOIN instance_progress AS p ON p.token = instances.token AND p.sid = id"
)
_SESSION_VIEW = f"{_VIEW_COLUMNS} {_VIEW_FROM}"
# Non-terminal sessions whose effective lease (rules.effective) expired before now.
_EXPIRED_SQL = (
    f"SELECT {_SESSION_VIEW} WHERE status IN {_ACTIVE_SQL} AND (lease_us IS NULL OR "
    "(lease_us < ? AND (expires_us IS NULL OR expires_us < ? OR n_trades IS NULL)))"
)
# A lower bound of the earliest effective lease at or after now of the other non-terminal
# sessions: the earliest such own lease or owner's instance lease. Exact would look up
# each session in its owner's progress rows; early only costs the reconciler a pass.
_NEXT_EXPIRY_SQL = (
    "SELECT min(t) FROM ("
    f"SELECT min(lease_us) AS t FROM sessions WHERE status IN {_ACTIVE_SQL} AND lease_us >= ? "
    "UNION ALL SELECT min(expires_us) FROM instances WHERE expires_us >= ? AND token IN "
    f"(SELECT owner FROM sessions WHERE status IN {_ACTIVE_SQL}))"
)
INSTANCE_ROWS_KEPT_US = 3_600_000_000  # an instance lease expired this long ago is deleted
_TERMINAL_SQL = "('stopped', 'completed', 'failed')"
#: Rows one transaction of a purge deletes at most: a purge of a long session is many
#: short bulk writes, so lease renewals and transitions never wait behind all of it.
PURGE_CHUNK_ROWS = 20_000
#: What a purge deletes, table by table, with the key that picks a chunk of rows.
_PURGED_TABLES = (
    ("trades", "symbol, trade_id", "trades"),
    ("orderbook", "symbol, ts_us", "orderbook"),
    ("gaps", "start_us, symbol, data_type, cause", "gaps"),
    ("result_orders", "seq", "results"),
    ("result_fills", "seq", "results"),
    ("result_equity", "seq", "results"),
    ("result_summary", "sid", "results"),
)


def _opt_us(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def _opt_dt(value: int | None) -> datetime | None:
    return None if value is None else from_us(value)


def _view_to_session(row: tuple[object, ...]) -> Session:
    """A row of ``_SESSION_VIEW``: the session with its owner's lease and progress applied."""
    session = _row_to_session(row[:-4])
    expires, trades, orderbook, errors = row[-4:]
    if expires is None or trades is None:  # not listed by its owner's last heartbeat
        return session
    stats = Stats(int(trades), int(orderbook), int(errors))  # type: ignore[call-overload]
    return effective(session, from_us(int(expires)), stats)  # type: ignore[call-overload]


def _row_to_session(row: tuple[object, ...]) -> Session:
    (
        sid,
        kind,
        status,
        symbols,
        exchange,
        data_types,
        config,
        created,
        started,
        ended,
        reason,
        trades,
        orderbook,
        errors,
        owner,
        lease,
        version,
        deleted,
        key,
    ) = row
    return Session(
        id=str(sid),
        kind=SessionKind(str(kind)),
        status=SessionStatus(str(status)),
        symbols=parse_symbols(str(symbols)),
        exchange=str(exchange),
        data_types=parse_data_types(str(data_types)),
        config=parse_config(str(config)),
        created_at=from_us(int(created)),  # type: ignore[call-overload]
        started_at=_opt_dt(started),  # type: ignore[arg-type]
        ended_at=_opt_dt(ended),  # type: ignore[arg-type]
        reason=None if reason is None else str(reason),
        stats=Stats(int(trades), int(orderbook), int(errors)),  # type: ignore[call-overload]
        owner=None if owner is None else str(owner),
        lease_expires_at=_opt_dt(lease),  # type: ignore[arg-type]
        version=int(version),  # type: ignore[call-overload]
        deleted=bool(deleted),
        idempotency_key=None if key is None else str(key),
    )


def _write_transition(
    conn: sqlite3.Connection,
    current: Session,
    new: Session,
    actor: str,
    reason: str,
    detail: str | None,
    now: datetime,
) -> None:
    """Write ``current`` → ``new`` (``rules.apply_transition``'s result) and its event."""
    conn.execute(
        "UPDATE sessions SET status = ?, reason = ?, version = ?, started_us = ?, "
        "ended_us = ?, owner = ?, lease_us = ?, trades = ?, orderbook = ?, errors = ? "
        "WHERE id = ? AND version = ?",
        (
            new.status.value,
            new.reason,
            new.version,
            _opt_us(new.started_at),
            _opt_us(new.ended_at),
            new.owner,
            _opt_us(new.lease_expires_at),
            new.stats.trades,
            new.stats.orderbook,
            new.stats.errors,
            current.id,
            current.version,
        ),
    )
    _append_event(conn, current.id, current.status, new.status, actor, reason, detail, now)


def _fetch(conn: sqlite3.Connection, session_id: str) -> Session:
    row = conn.execute(f"SELECT {_SESSION_VIEW} WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise SessionNotFound(session_id)
    return _view_to_session(row)


def _append_event(
    conn: sqlite3.Connection,
    session_id: str,
    from_status: SessionStatus | None,
    to_status: SessionStatus,
    actor: str,
    reason: str,
    detail: str | None,
    at: datetime,
) -> SessionEvent:
    (seq,) = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM session_events WHERE session_id = ?", (session_id,)
    ).fetchone()
    conn.execute(
        "INSERT INTO session_events (session_id, seq, at_us, from_status, to_status, actor, "
        "reason, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            session_id,
            seq,
            to_us(at),
            None if from_status is None else from_status.value,
            to_status.value,
            actor,
            reason,
            detail,
        ),
    )
    return SessionEvent(session_id, seq, at, from_status, to_status, actor, reason, detail)


def _where(query: SessionQuery) -> tuple[list[str], list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if not query.include_deleted:
        clauses.append("deleted = 0")
    if query.statuses:
        clauses.append(f"status IN ({', '.join('?' for _ in query.statuses)})")
        params.extend(sorted(s.value for s in query.statuses))
    if query.kind is not None:
        clauses.append("kind = ?")
        params.append(query.kind.value)
    if query.symbol is not None:
        clauses.append("EXISTS (SELECT 1 FROM json_each(sessions.symbols) WHERE value = ?)")
        params.append(query.symbol)
    return clauses, params


class SqliteSessionStore(SessionStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_session(
        self, session: Session, *, actor: str, start_lease_until: datetime | None = None
    ) -> Session:
        def run(conn: sqlite3.Connection) -> Session:
            if session.idempotency_key is not None:
                row = conn.execute(
                    f"SELECT {_SESSION_VIEW} WHERE idempotency_key = ?",
                    (session.idempotency_key,),
                ).fetchone()
                if row is not None:
                    return _view_to_session(row)
            if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session.id,)).fetchone():
                raise SessionConflict(
                    f"session {session.id!r} already exists",
                    session_id=session.id,
                    status=session.status.value,
                )
            conn.execute(
                f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    session.kind.value,
                    session.status.value,
                    json.dumps(list(session.symbols)),
                    session.exchange,
                    json.dumps([d.value for d in session.data_types]),
                    json.dumps(session.config.to_dict()),
                    to_us(session.created_at),
                    _opt_us(session.started_at),
                    _opt_us(session.ended_at),
                    session.reason,
                    session.stats.trades,
                    session.stats.orderbook,
                    session.stats.errors,
                    session.owner,
                    _opt_us(session.lease_expires_at),
                    session.version,
                    int(session.deleted),
                    session.idempotency_key,
                ),
            )
            _append_event(
                conn, session.id, None, session.status, actor, "created", None, session.created_at
            )
            if start_lease_until is None:
                return session
            now = utcnow()
            running = apply_start(session, lease_expires_at=start_lease_until, now=now)
            _write_transition(conn, session, running, actor, Reason.STARTED, None, now)
            return _fetch(conn, session.id)

        return await self._db.write(run, "create session")

    async def get_session(self, session_id: str) -> Session:
        return await self._db.read(lambda conn: _fetch(conn, session_id), "get session")

    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        check_limit(query.limit, MAX_LIST_LIMIT)
        clauses, params = _where(query)
        if query.cursor is not None:
            created, sid = decode_cursor(query.cursor)
            clauses.append(f"(created_us, id) {'>' if query.oldest_first else '<'} (?, ?)")
            params.extend([created, sid])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "ASC" if query.oldest_first else "DESC"
        sql = f"SELECT {_SESSION_VIEW} {where} ORDER BY created_us {order}, id {order} LIMIT ?"

        def run(conn: sqlite3.Connection) -> SessionPage:
            rows = conn.execute(sql, [*params, query.limit + 1]).fetchall()
            sessions = [_view_to_session(r) for r in rows[: query.limit]]
            more = len(rows) > query.limit
            return SessionPage(sessions, encode_cursor(sessions[-1]) if more and sessions else None)

        return await self._db.read(run, "list sessions")

    async def count_sessions(self, query: SessionQuery) -> int:
        clauses, params = _where(query)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return await self._db.read(
            lambda conn: int(
                conn.execute(f"SELECT count(*) FROM sessions {where}", params).fetchone()[0]
            ),
            "count sessions",
        )

    async def transition(
        self,
        session_id: str,
        *,
        expected_version: int,
        to_status: SessionStatus,
        actor: str,
        reason: str,
        detail: str | None = None,
        owner: str | Unchanged | None = UNCHANGED,
        lease_expires_at: datetime | Unchanged | None = UNCHANGED,
        stats: Stats | None = None,
        lease_expired_before: datetime | None = None,
        seal: Seal | None = None,
        note: Note | None = None,
        read: Session | None = None,
    ) -> Session:
        def run(conn: sqlite3.Connection) -> Session:
            current = _fetch(conn, session_id)
            now = utcnow()
            new = apply_transition(
                current,
                expected_version=expected_version,
                to_status=to_status,
                reason=reason,
                now=now,
                owner=owner,
                lease_expires_at=lease_expires_at,
                stats=stats,
                lease_expired_before=lease_expired_before,
            )
            if note is not None:  # in the transition's transaction: both or neither
                _append_event(
                    conn,
                    session_id,
                    current.status,
                    current.status,
                    actor,
                    note.reason,
                    note.detail,
                    now,
                )
            _write_transition(conn, current, new, actor, reason, detail, now)
            return _fetch(conn, session_id)

        return await self._db.write(run, f"transition session to {to_status.value}")

    async def renew_lease(
        self,
        session_id: str,
        *,
        owner: str,
        lease_expires_at: datetime | None,
        stats: Stats | None = None,
    ) -> Session:
        def run(conn: sqlite3.Connection) -> Session:
            current = _fetch(conn, session_id)
            if current.is_terminal or current.owner != owner:
                raise LeaseLost(
                    session_id, owner, f"status {current.status}, owner {current.owner}"
                )
            new_stats = current.stats if stats is None else stats
            conn.execute(
                "UPDATE sessions SET lease_us = ?, trades = ?, orderbook = ?, errors = ? "
                "WHERE id = ?",
                (
                    _opt_us(lease_expires_at),
                    new_stats.trades,
                    new_stats.orderbook,
                    new_stats.errors,
                    session_id,
                ),
            )
            return _fetch(conn, session_id)

        return await self._db.write(run, "renew lease")

    async def renew_instance(
        self, owner: str, *, lease_expires_at: datetime, progress: Mapping[str, Stats]
    ) -> list[Session]:
        until_us = to_us(lease_expires_at)
        stored = dump_progress(progress)

        def run(conn: sqlite3.Connection) -> list[Session]:
            conn.execute(
                "INSERT INTO instances (token, expires_us) VALUES (?, ?) "
                "ON CONFLICT (token) DO UPDATE SET expires_us = excluded.expires_us",
                (owner, until_us),
            )
            # The progress rows as ONE statement over the JSON map: it runs in C without
            # giving the GIL back per row (the owned sessions' SELECT below says why).
            conn.execute("DELETE FROM instance_progress WHERE token = ?", (owner,))
            conn.execute(
                "INSERT INTO instance_progress (token, sid, n_trades, n_orderbook, n_errors) "
                "SELECT ?, key, json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
                "json_extract(value, '$[2]') FROM json_each(?)",
                (owner, stored),
            )
            # rows of instances long gone: deleting one revives nothing (its sessions'
            # leases are the older of the two by then)
            gone_us = to_us(utcnow()) - INSTANCE_ROWS_KEPT_US
            conn.execute(
                "DELETE FROM instance_progress WHERE token IN "
                "(SELECT token FROM instances WHERE expires_us < ?)",
                (gone_us,),
            )
            conn.execute("DELETE FROM instances WHERE expires_us < ?", (gone_us,))
            # The owned sessions as ONE row (a JSON array of their rows): sqlite3 gives the
            # GIL back and takes it again for every row, and with a busy event loop each
            # take waited — at 1,000 sessions the renewal's SELECT held the writer for
            # 1.5 s (stop 14's trace). Their lease and progress are the ones just written,
            # applied here as _SESSION_VIEW would (without its per-row joins).
            (packed,) = conn.execute(
                f"SELECT json_group_array(json_array({_SESSION_COLUMNS})) FROM sessions "
                f"WHERE status IN {_ACTIVE_SQL} AND owner = ?",
                (owner,),
            ).fetchone()
            expires = from_us(until_us)
            owned = []
            for row in json.loads(packed):
                session = _row_to_session(tuple(row))
                stats = progress.get(session.id)
                owned.append(session if stats is None else effective(session, expires, stats))
            return owned

        return await self._db.write(run, "renew instance lease")

    async def claim(
        self,
        session_id: str,
        *,
        expected_version: int,
        owner: str,
        lease_expires_at: datetime,
        actor: str,
        reason: str,
        detail: str | None = None,
        lease_expired_before: datetime | None = None,
        seal: Seal | None = None,
    ) -> Session:
        def run(conn: sqlite3.Connection) -> Session:
            current = _fetch(conn, session_id)
            new = apply_claim(
                current,
                expected_version=expected_version,
                owner=owner,
                lease_expires_at=lease_expires_at,
                lease_expired_before=lease_expired_before,
            )
            conn.execute(
                "UPDATE sessions SET owner = ?, lease_us = ?, version = ? "
                "WHERE id = ? AND version = ?",
                (owner, to_us(lease_expires_at), new.version, session_id, expected_version),
            )
            _append_event(
                conn, session_id, current.status, current.status, actor, reason, detail, utcnow()
            )
            return _fetch(conn, session_id)

        return await self._db.write(run, "claim session")

    async def add_event(
        self,
        session_id: str,
        *,
        actor: str,
        reason: str,
        detail: str | None = None,
        owner: str | None = None,
    ) -> SessionEvent:
        def run(conn: sqlite3.Connection) -> SessionEvent:
            current = _fetch(conn, session_id)
            check_note_owner(current, owner)
            return _append_event(
                conn, session_id, current.status, current.status, actor, reason, detail, utcnow()
            )

        return await self._db.write(run, "add event")

    async def list_events(self, session_id: str) -> list[SessionEvent]:
        def run(conn: sqlite3.Connection) -> list[SessionEvent]:
            _fetch(conn, session_id)
            rows = conn.execute(
                "SELECT seq, at_us, from_status, to_status, actor, reason, detail "
                "FROM session_events WHERE session_id = ? ORDER BY seq",
                (session_id,),
            ).fetchall()
            return [
                SessionEvent(
                    session_id,
                    seq,
                    from_us(at),
                    None if fr is None else SessionStatus(fr),
                    SessionStatus(to),
                    actor,
                    reason,
                    detail,
                )
                for seq, at, fr, to, actor, reason, detail in rows
            ]

        return await self._db.read(run, "list events")

    async def mark_deleted(self, session_id: str) -> Session:
        def run(conn: sqlite3.Connection) -> Session:
            current = _fetch(conn, session_id)
            if not current.is_terminal:
                raise SessionConflict(
                    f"session {session_id!r} is {current.status}; stop it before deleting",
                    session_id=session_id,
                    status=current.status.value,
                )
            conn.execute("UPDATE sessions SET deleted = 1 WHERE id = ?", (session_id,))
            return current.evolve(deleted=True)

        return await self._db.write(run, "delete session")

    async def find_finished(
        self, ended_before: datetime, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Session]:
        check_limit(limit, MAX_LIST_LIMIT)
        params: list[object] = [to_us(ended_before)]
        clause = ""
        if after is not None:
            clause = "AND (ended_us, id) > (?, ?) "
            params.extend([to_us(after[0]), after[1]])
        sql = (
            f"SELECT {_SESSION_VIEW} WHERE ended_us < ? AND status IN {_TERMINAL_SQL} "
            f"{clause}ORDER BY ended_us, id LIMIT ?"
        )
        return await self._db.read(
            lambda conn: [_view_to_session(r) for r in conn.execute(sql, [*params, limit])],
            "find finished sessions",
        )

    async def purge(self, session_ids: Sequence[str], *, ended_before: datetime) -> Purged:
        total = Purged()
        for session_id in dict.fromkeys(session_ids):
            total += await self._purge_one(session_id, to_us(ended_before))
        return total

    async def _purge_one(self, session_id: str, cutoff_us: int) -> Purged:
        """Delete the session's rows chunk by chunk, each chunk its own transaction that
        checks again that the session is terminal and ended before the cutoff, then the
        session and its history in the last one. The first chunk soft-deletes it, so a
        purge cut short (a crash) leaves it hidden, and the next run finishes it."""

        def eligible(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                f"SELECT sid FROM sessions WHERE id = ? AND status IN {_TERMINAL_SQL} "
                "AND ended_us < ?",
                (session_id, cutoff_us),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE sessions SET deleted = 1 WHERE sid = ? AND deleted = 0", row)
            return int(row[0])

        deleted = Purged()
        for table, key, kind in _PURGED_TABLES:

            def chunk(conn: sqlite3.Connection, table: str = table, key: str = key) -> int | None:
                sid = eligible(conn)
                if sid is None:
                    return None
                return conn.execute(
                    f"DELETE FROM {table} WHERE sid = ? AND ({key}) IN "
                    f"(SELECT {key} FROM {table} WHERE sid = ? LIMIT ?)",
                    (sid, sid, PURGE_CHUNK_ROWS),
                ).rowcount

            while True:
                count = await self._db.write(chunk, f"purge a session's {kind}", bulk=True)
                if count is None:  # not (or no longer) purgeable: what went is reported
                    return deleted
                deleted = replace(deleted, **{kind: getattr(deleted, kind) + count})
                if count < PURGE_CHUNK_ROWS:
                    break

        def last(conn: sqlite3.Connection) -> int | None:
            sid = eligible(conn)
            if sid is None:
                return None
            events = conn.execute(
                "DELETE FROM session_events WHERE session_id = ?", (session_id,)
            ).rowcount
            conn.execute("DELETE FROM sessions WHERE sid = ?", (sid,))
            return events

        events = await self._db.write(last, "purge a session", bulk=True)
        if events is None:
            return deleted
        return replace(deleted, sessions=1, events=events)

    async def find_expired(self, now: datetime) -> list[Session]:
        now_us = to_us(now)
        return await self._db.read(
            lambda conn: [
                _view_to_session(r) for r in conn.execute(_EXPIRED_SQL, (now_us, now_us))
            ],
            "find expired leases",
        )

    async def scan_leases(self, now: datetime) -> LeaseScan:
        now_us = to_us(now)

        def scan(conn: sqlite3.Connection) -> LeaseScan:
            expired = [_view_to_session(r) for r in conn.execute(_EXPIRED_SQL, (now_us, now_us))]
            (next_us,) = conn.execute(_NEXT_EXPIRY_SQL, (now_us, now_us)).fetchone()
            return LeaseScan(expired, None if next_us is None else from_us(next_us))

        return await self._db.read(scan, "scan leases")

    async def find_owned(self, owner_prefix: str) -> list[Session]:
        sql = f"SELECT {_SESSION_VIEW} WHERE status IN {_ACTIVE_SQL} AND substr(owner, 1, ?) = ?"
        return await self._db.read(
            lambda conn: [
                _view_to_session(r) for r in conn.execute(sql, (len(owner_prefix), owner_prefix))
            ],
            "find owned sessions",
        )

    async def list_changed(self, since: str | None, *, limit: int = MAX_CHANGES) -> ChangePage:
        if since is None:
            top = await self._db.read(
                lambda conn: conn.execute("SELECT max(change_seq) FROM sessions").fetchone()[0],
                "read the change position",
            )
            return ChangePage([], str(top or 0))
        after = _change_position(since)
        sql = (
            f"SELECT {_VIEW_COLUMNS}, change_seq {_VIEW_FROM} WHERE change_seq > ? "
            "ORDER BY change_seq LIMIT ?"
        )
        rows = await self._db.read(
            lambda conn: conn.execute(sql, (after, limit)).fetchall(), "list changed sessions"
        )
        if not rows:
            return ChangePage([], since)
        return ChangePage([_view_to_session(r[:-1]) for r in rows], str(rows[-1][-1]))


def _change_position(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError:
        raise ValidationError(f"invalid change cursor {cursor!r}", field="cursor") from None


def _trade_rows(sid: int, batch: TradeBatch) -> zip[tuple[object, ...]]:
    return zip(
        repeat(sid),
        repeat(batch.symbol),
        batch.trade_id.tolist(),
        batch.ts_us.tolist(),
        batch.price.tolist(),
        batch.qty.tolist(),
        batch.side.tolist(),
        repeat(None) if batch.recv_us is None else batch.recv_us.tolist(),
        strict=False,
    )


def _book_rows(sid: int, batch: BookBatch) -> zip[tuple[object, ...]]:
    n, depth = len(batch), batch.depth
    bp = np.ascontiguousarray(batch.bid_price, dtype="<f8")
    ap = np.ascontiguousarray(batch.ask_price, dtype="<f8")
    # Each side's matrix as one bytes object, cut into a blob per row: far cheaper than
    # a numpy row view and its ``tobytes`` per row and side.
    width = 8 * depth
    cuts = range(0, n * width, width)
    blobs = [
        [whole[i : i + width] for i in cuts]
        for whole in (
            bp.tobytes(),
            np.ascontiguousarray(batch.bid_qty, dtype="<f8").tobytes(),
            ap.tobytes(),
            np.ascontiguousarray(batch.ask_qty, dtype="<f8").tobytes(),
        )
    ]
    return zip(
        repeat(sid),
        repeat(batch.symbol),
        batch.ts_us.tolist(),
        repeat(depth),
        bp[:, 0].tolist() if depth else repeat(0.0),
        ap[:, 0].tolist() if depth else repeat(0.0),
        *blobs,
        repeat(None) if batch.recv_us is None else batch.recv_us.tolist(),
        strict=False,
    )


#: Tick rows one coalesced write takes at most (the rest waits for the next one), as
#: one flush of one session: a lease renewal queued behind it waits for one such
#: transaction, not the backlog.
COALESCED_MAX_ROWS = FLUSH_MAX_ROWS


@dataclass
class _TickWrite:
    """One caller's :meth:`SqliteTickStore.write`, waiting to be coalesced."""

    batches: list[TickBatch]
    owner: str
    session_ids: list[str]
    rows: int
    future: asyncio.Future[WriteResult]


def _settle(
    future: asyncio.Future[WriteResult], result: WriteResult | None, error: BaseException | None
) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result or WriteResult())


def _settle_outcome(
    future: asyncio.Future[WriteResult], outcome: WriteResult | BaseException
) -> None:
    if isinstance(outcome, BaseException):
        _settle(future, None, outcome)
    else:
        _settle(future, outcome, None)


_TRADES_INSERT = (
    "INSERT OR IGNORE INTO trades (sid, symbol, trade_id, ts_us, price, qty, side, recv_us) VALUES "
)
_BOOKS_INSERT = (
    "INSERT OR IGNORE INTO orderbook (sid, symbol, ts_us, depth, best_bid, best_ask, "
    "bid_price, bid_qty, ask_price, ask_qty, recv_us) VALUES "
)
#: Rows per multi-row INSERT, largest first (a few fixed sizes: the statements stay in
#: the connection's statement cache). One statement is one sqlite3 step, so the writer
#: thread gives up and takes back the GIL once per statement, not once per row: with
#: the event loop busy (hundreds of sessions) every hand-back can wait for it.
_ROWS_PER_INSERT = (64, 16, 4, 1)  # 64 x 11 parameters: within SQLite's 999


def _insert_rows(
    conn: sqlite3.Connection, head: str, width: int, rows: list[tuple[object, ...]]
) -> None:
    """INSERT ``rows`` (tuples of ``width`` values) with few statements, in order."""
    i, n = 0, len(rows)
    for size in _ROWS_PER_INSERT:
        if n - i < size:
            continue
        values = head + ", ".join(["(" + ", ".join("?" * width) + ")"] * size)
        while n - i >= size:
            conn.execute(values, [v for row in rows[i : i + size] for v in row])
            i += size


def _write_requests(
    conn: sqlite3.Connection, requests: list[_TickWrite], budget_s: float = float("inf")
) -> list[WriteResult | BaseException | None]:
    """Store the requests in the current transaction; each one's outcome, in order.

    Fencing inside the write transaction (nobody can change ownership meanwhile), per
    request: one whose session is unknown, inactive or owned by someone else gets
    :class:`LeaseLost` and writes nothing; the others are stored. Once ``budget_s``
    has passed (at least one request is always stored), the rest are left out — None:
    the caller queues them again — so a lease renewal waiting for the writer waits
    for one budget, however many sessions' ticks are queued and however slow the
    machine is. The admitted requests' rows go in together, up to
    :data:`COMBINED_ROWS` at a time (:func:`_insert_part`).
    """
    started = time.monotonic()
    session_ids = sorted({sid for r in requests for sid in r.session_ids})
    found: dict[str, tuple[int, str, str | None]] = {}
    for start in range(0, len(session_ids), 500):  # within SQLite's bound on parameters
        chunk = session_ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        for sid_text, sid, status, row_owner in conn.execute(
            f"SELECT id, sid, status, owner FROM sessions WHERE id IN ({marks})", chunk
        ):
            found[sid_text] = (sid, status, row_owner)
    outcomes: list[WriteResult | BaseException | None] = [None] * len(requests)
    part: list[_Rows] = []  # admitted requests' rows, not inserted yet
    part_rows = 0
    tried = False
    for i, request in enumerate(requests):
        if tried and time.monotonic() - started > budget_s:
            break  # the rest are not tried: None, queued again
        tried = True
        refused: BaseException | None = None
        for session_id in request.session_ids:
            row = found.get(session_id)
            if (
                row is None
                or SessionStatus(row[1]) not in ACTIVE_STATUSES
                or row[2] != request.owner
            ):
                detail = "unknown session" if row is None else f"status {row[1]}, owner {row[2]}"
                refused = LeaseLost(session_id, request.owner, f"tick write rejected ({detail})")
                break
        if refused is not None:
            outcomes[i] = refused
            continue
        trade_rows: list[tuple[object, ...]] = []
        book_rows: list[tuple[object, ...]] = []
        for batch in request.batches:
            sid = found[batch.session_id][0]
            if isinstance(batch, TradeBatch):
                trade_rows.extend(_trade_rows(sid, batch))
            else:
                book_rows.extend(_book_rows(sid, batch))
        part.append((i, trade_rows, book_rows))
        part_rows += len(trade_rows) + len(book_rows)
        if part_rows >= COMBINED_ROWS:
            _insert_part(conn, part, outcomes)
            part, part_rows = [], 0
    if part:
        _insert_part(conn, part, outcomes)
    return outcomes


#: (request index, its trade rows, its book rows)
_Rows = tuple[int, list[tuple[object, ...]], list[tuple[object, ...]]]

#: Rows of several requests inserted by the same statements, at most (then the time
#: budget is looked at again). Each request's own rows in separate statements made
#: ~3 statements per 0.25 s flush of a default-rate session — each one a hand-back of
#: the GIL by the writer thread, thousands a second at a few hundred sessions.
COMBINED_ROWS = 2_048


def _insert_part(
    conn: sqlite3.Connection, part: list[_Rows], outcomes: list[WriteResult | BaseException | None]
) -> None:
    """Insert the rows of several admitted requests together; each request's outcome.

    The usual case, every row new, is answered from the row counts: each request
    stored all of its rows. If some row was already stored (a retried write whose
    acknowledgement was lost), the combined insert is rolled back and the requests are
    inserted one by one, so each is answered with exactly its own new rows.
    """
    trades = [row for _, rows, _ in part for row in rows]
    books = [row for _, _, rows in part for row in rows]
    conn.execute("SAVEPOINT ticktape_tick_part")
    before = conn.total_changes
    _insert_rows(conn, _TRADES_INSERT, 8, trades)
    _insert_rows(conn, _BOOKS_INSERT, 11, books)
    if conn.total_changes - before == len(trades) + len(books):
        conn.execute("RELEASE ticktape_tick_part")
        for i, trade_rows, book_rows in part:
            outcomes[i] = WriteResult(TickCounts(len(trade_rows), len(book_rows)))
        return
    conn.execute("ROLLBACK TO ticktape_tick_part")
    conn.execute("RELEASE ticktape_tick_part")
    for i, trade_rows, book_rows in part:
        before = conn.total_changes
        _insert_rows(conn, _TRADES_INSERT, 8, trade_rows)
        new_trades = conn.total_changes - before
        before = conn.total_changes
        _insert_rows(conn, _BOOKS_INSERT, 11, book_rows)
        outcomes[i] = WriteResult(TickCounts(new_trades, conn.total_changes - before))


#: Coalesced tick writes handed to the writer at once: while one commits, the next is
#: queued behind it, so the writer never waits for the event loop to come round.
ROUNDS_IN_FLIGHT = 3


class SqliteTickStore(TickStore):
    """Tick writes of every session of the process are coalesced.

    A :meth:`write` queues its batches and waits. Once the writes of the current
    turn of the event loop are queued, a round takes everything queued (up to
    :data:`COALESCED_MAX_ROWS` rows) and stores it as ONE store write — one
    transaction, one fencing query over all the sessions, one COMMIT — then answers
    each caller with its own outcome; up to :data:`ROUNDS_IN_FLIGHT` rounds are
    handed to the writer at once, and what arrives meanwhile gathers for the next.
    Fencing stays per session: a request whose session is no longer owned by its
    ``owner`` (or no longer active) gets :class:`LeaseLost` and none of its rows
    are stored, while the other requests of the same transaction are stored. A
    failure that is the store's (unavailable, busy, timed out) answers every
    request of the round with it; any other failure re-runs the round's requests
    one by one, each in its own write, so one bad request fails alone as before.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[_TickWrite] = []
        self._in_flight = 0
        self._kick_due = False
        self._rounds: set[asyncio.Task[None]] = set()
        self.rounds = 0  # store writes made for tick writes (coalesced rounds), ever

    async def write(self, batches: list[TickBatch], *, owner: str) -> WriteResult:
        session_ids = sorted({b.session_id for b in batches})
        if not session_ids:
            return WriteResult()
        loop = asyncio.get_running_loop()
        request = _TickWrite(
            batches, owner, session_ids, sum(len(b) for b in batches), loop.create_future()
        )
        self._pending.append(request)
        if not self._kick_due:  # after the other writes of this turn are queued too
            self._kick_due = True
            loop.call_soon(self._kick)
        return await request.future

    async def write_sessions(
        self, writes: Sequence[list[TickBatch]], *, owner: str
    ) -> list[WriteResult | Exception]:
        """Every item queued at once: they go in the same coalesced rounds."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[WriteResult]] = []
        for batches in writes:
            future: asyncio.Future[WriteResult] = loop.create_future()
            futures.append(future)
            session_ids = sorted({b.session_id for b in batches})
            if not session_ids:
                future.set_result(WriteResult())
                continue
            rows = sum(len(b) for b in batches)
            self._pending.append(_TickWrite(batches, owner, session_ids, rows, future))
        if self._pending and not self._kick_due:
            self._kick_due = True
            loop.call_soon(self._kick)
        return await gather_answers(futures, None, "write ticks")

    def _kick(self) -> None:
        """Start rounds for what is queued, up to :data:`ROUNDS_IN_FLIGHT` at once."""
        self._kick_due = False
        loop = asyncio.get_running_loop()
        while self._pending and self._in_flight < ROUNDS_IN_FLIGHT:
            taken, rows = 0, 0
            for request in self._pending:
                if taken and rows + request.rows > COALESCED_MAX_ROWS:
                    break
                taken += 1
                rows += request.rows
            round_, self._pending = self._pending[:taken], self._pending[taken:]
            live = [r for r in round_ if not r.future.done()]  # cancelled callers: skip
            if not live:
                continue
            self._in_flight += 1
            task = loop.create_task(self._write_round(live), name="sqlite-tick-round")
            self._rounds.add(task)
            task.add_done_callback(functools.partial(self._round_done, requests=live))

    def _round_done(self, task: asyncio.Task[None], *, requests: list[_TickWrite]) -> None:
        """A round ended — even one cancelled before it began: free its slot, answer
        whoever it left waiting, and start the next round if writes are queued."""
        self._rounds.discard(task)
        self._in_flight -= 1
        if task.cancelled():
            for request in requests:  # settled ones are left as they are
                _settle(request.future, None, StoreUnavailable("write ticks: cancelled"))
        if self._pending and not self._kick_due:
            self._kick_due = True
            task.get_loop().call_soon(self._kick)

    async def _write_round(self, requests: list[_TickWrite]) -> None:
        self.rounds += 1
        try:
            outcomes = await self._db.write(
                lambda conn: _write_requests(conn, requests, BULK_GROUP_BUDGET_S),
                "write ticks",
                bulk=True,
            )
        except (StoreUnavailable, StoreBusy) as exc:  # the store's failure: everyone's
            for request in requests:
                _settle(request.future, None, exc)
            return
        except Exception as exc:
            if len(requests) == 1:
                _settle(requests[0].future, None, exc)
                return
            # Not the store's failure: some request's own. Each alone, so it fails by itself
            # (the round's transaction was rolled back: nothing of it is stored).
            for request in requests:
                await self._write_round([request])
            return
        except BaseException:
            for request in requests:
                _settle(request.future, None, StoreUnavailable("write ticks: store closing"))
            raise
        left = [r for r, o in zip(requests, outcomes, strict=True) if o is None]
        self._pending[:0] = left  # over the time budget: first in the next round
        for request, outcome in zip(requests, outcomes, strict=True):
            if outcome is not None:
                _settle_outcome(request.future, outcome)

    async def wait_visible(self, timeout_s: float, *, committed_by: datetime | None = None) -> None:
        return None  # a committed SQLite transaction is visible to every new reader

    async def write_gaps(self, session_id: str, gaps: list[Gap], *, owner: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            sid = _fenced_sid(conn, session_id, owner, "gap write")
            conn.executemany(
                "INSERT OR IGNORE INTO gaps (sid, symbol, data_type, start_us, end_us, cause, "
                "lost, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(sid, *g.values()) for g in gaps],
            )

        if gaps:
            await self._db.write(run, "write gaps")

    async def read_times(self, session_id: str, symbol: str, data_type: DataType) -> StreamTimes:
        table, order = (
            ("trades", "trade_id") if data_type is DataType.TRADES else ("orderbook", "ts_us")
        )

        def run(conn: sqlite3.Connection) -> StreamTimes:
            rows = conn.execute(
                f"SELECT t.ts_us, coalesce(t.recv_us, -1) FROM {table} t "
                "JOIN sessions s ON s.sid = t.sid WHERE s.id = ? AND t.symbol = ? "
                f"ORDER BY t.{order}",
                (session_id, symbol),
            ).fetchall()
            arr = np.array(rows, dtype=np.int64).reshape(len(rows), 2)
            return StreamTimes(arr[:, 0].copy(), arr[:, 1].copy())

        return await self._db.read(run, "read stream times")

    async def read_gaps(self, session_id: str) -> list[Gap]:
        def run(conn: sqlite3.Connection) -> list[Gap]:
            rows = conn.execute(
                "SELECT g.symbol, g.data_type, g.start_us, g.end_us, g.cause, g.lost, g.detail "
                "FROM gaps g JOIN sessions s ON s.sid = g.sid WHERE s.id = ? "
                "ORDER BY g.start_us, g.symbol, g.data_type, g.cause",
                (session_id,),
            ).fetchall()
            return [
                Gap(sym, DataType(dt), int(a), int(b), GapCause(c), lost, detail)
                for sym, dt, a, b, c, lost, detail in rows
            ]

        return await self._db.read(run, "read gaps")

    async def count(self, session_id: str) -> TickCounts:
        def run(conn: sqlite3.Connection) -> TickCounts:
            row = conn.execute("SELECT sid FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                return TickCounts()
            (trades,) = conn.execute("SELECT count(*) FROM trades WHERE sid = ?", row).fetchone()
            (books,) = conn.execute("SELECT count(*) FROM orderbook WHERE sid = ?", row).fetchone()
            return TickCounts(int(trades), int(books))

        return await self._db.read(run, "count ticks")

    async def position(self, session_id: str) -> TickPosition:
        def run(conn: sqlite3.Connection) -> TickPosition:
            row = conn.execute(
                "SELECT sid, symbols FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return TickPosition()
            sid, symbols = row
            # Each query below is one index lookup (max over an index prefix), however
            # many ticks the session holds.
            newest = [
                conn.execute(f"SELECT max(ts_us) FROM {table} WHERE sid = ?", (sid,)).fetchone()[0]
                for table in ("trades", "orderbook")
            ]
            trade_ids: dict[str, int] = {}
            for symbol in sorted(json.loads(symbols)):
                (top,) = conn.execute(
                    "SELECT max(trade_id) FROM trades WHERE sid = ? AND symbol = ?", (sid, symbol)
                ).fetchone()
                if top is not None:
                    trade_ids[symbol] = int(top)
            known = [us for us in newest if us is not None]
            return TickPosition(from_us(max(known)) if known else None, trade_ids)

        return await self._db.read(run, "read tick position")

    @staticmethod
    def _range(query: TickQuery, trades: bool = True) -> tuple[str, list[object]]:
        clauses = ["sid = (SELECT sid FROM sessions WHERE id = ?)"]
        params: list[object] = [query.session_id]
        if query.after is not None:
            ts, tid, sym = query.after
            clauses.append("ts_us >= ?")
            params.append(ts)
            if trades:
                clauses.append("(ts_us, trade_id, symbol) > (?, ?, ?)")
                params += [ts, tid, sym]
            else:
                clauses.append("(ts_us, symbol) > (?, ?)")
                params += [ts, sym]
        if query.symbol is not None:
            clauses.append("symbol = ?")
            params.append(query.symbol)
        if query.start is not None:
            clauses.append("ts_us >= ?")
            params.append(to_us(query.start))
        if query.end is not None:
            clauses.append("ts_us < ?")
            params.append(to_us(query.end))
        return " AND ".join(clauses), params

    async def read_trades(self, query: TickQuery) -> list[Trade]:
        check_limit(query.limit, MAX_DATA_LIMIT)
        where, params = self._range(query)
        sql = (
            f"SELECT symbol, ts_us, trade_id, price, qty, side, recv_us FROM trades WHERE {where} "
            "ORDER BY ts_us, trade_id, symbol LIMIT ?"
        )
        return await self._db.read(
            lambda conn: [
                Trade(sym, from_us(ts), tid, px, qty, side_name(side), recv_time(rcv))
                for sym, ts, tid, px, qty, side, rcv in conn.execute(sql, [*params, query.limit])
            ],
            "read trades",
        )

    async def trade_span(self, session_id: str, symbol: str) -> tuple[datetime, datetime] | None:
        sql = (
            "SELECT min(ts_us), max(ts_us) FROM trades "
            "WHERE sid = (SELECT sid FROM sessions WHERE id = ?) AND symbol = ?"
        )
        first, last = await self._db.read(
            lambda conn: conn.execute(sql, [session_id, symbol]).fetchone(), "read trade span"
        )
        return None if first is None else (from_us(first), from_us(last))

    async def trade_buckets(self, query: TickQuery, width_us: int) -> list[TradeBucket]:
        check_bucket_query(query.symbol, width_us, query.limit)
        where, params = self._range(query)
        # Extremes, count and volume by GROUP BY; open/close are the prices at the
        # bucket's first/last ts (ties by trade_id), looked up through the time index.
        sql = (
            "WITH g AS (SELECT ts_us - ts_us % ? AS b, sid, symbol, max(price) AS hi, "
            "min(price) AS lo, count(*) AS n, sum(qty) AS vol, min(ts_us) AS t0, "
            f"max(ts_us) AS t1 FROM trades WHERE {where} GROUP BY b ORDER BY b LIMIT ?) "
            "SELECT b, (SELECT price FROM trades t WHERE t.sid = g.sid AND t.symbol = g.symbol "
            "AND t.ts_us = g.t0 ORDER BY t.trade_id LIMIT 1), hi, lo, "
            "(SELECT price FROM trades t WHERE t.sid = g.sid AND t.symbol = g.symbol "
            "AND t.ts_us = g.t1 ORDER BY t.trade_id DESC LIMIT 1), n, vol FROM g ORDER BY b"
        )
        return await self._db.read(
            lambda conn: [
                TradeBucket(from_us(b), op, hi, lo, cl, n, vol)
                for b, op, hi, lo, cl, n, vol in conn.execute(sql, [width_us, *params, query.limit])
            ],
            "read trade buckets",
        )

    async def read_orderbook(self, query: TickQuery) -> list[BookSnapshot]:
        check_limit(query.limit, MAX_DATA_LIMIT)
        where, params = self._range(query, trades=False)
        sql = (
            f"SELECT symbol, ts_us, bid_price, bid_qty, ask_price, ask_qty, recv_us FROM orderbook "
            f"WHERE {where} ORDER BY ts_us, symbol LIMIT ?"
        )

        def levels(prices: bytes, qtys: bytes) -> tuple[tuple[float, float], ...]:
            return tuple(
                zip(
                    np.frombuffer(prices, "<f8").tolist(),
                    np.frombuffer(qtys, "<f8").tolist(),
                    strict=True,
                )
            )

        return await self._db.read(
            lambda conn: [
                BookSnapshot(sym, from_us(ts), levels(bp, bq), levels(ap, aq), recv_time(rcv))
                for sym, ts, bp, bq, ap, aq, rcv in conn.execute(sql, [*params, query.limit])
            ],
            "read orderbook",
        )

    async def count_window(
        self,
        session_id: str,
        start_us: int,
        end_us: int,
        symbols: tuple[str, ...] | None = None,
    ) -> TickCounts:
        def run(conn: sqlite3.Connection) -> TickCounts:
            row = conn.execute("SELECT sid FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None or (symbols is not None and not symbols):
                return TickCounts()
            where = "sid = ? AND ts_us >= ? AND ts_us < ?"
            params: list[object] = [row[0], start_us, end_us]
            if symbols is not None:
                where += f" AND symbol IN ({', '.join('?' for _ in symbols)})"
                params.extend(symbols)
            (trades,) = conn.execute(
                f"SELECT count(*) FROM trades WHERE {where}", params
            ).fetchone()
            (books,) = conn.execute(
                f"SELECT count(*) FROM orderbook WHERE {where}", params
            ).fetchone()
            return TickCounts(int(trades), int(books))

        return await self._db.read(run, "count tick window")

    async def read_window(
        self,
        session_id: str,
        start_us: int,
        end_us: int,
        symbols: tuple[str, ...] | None = None,
    ) -> list[TickBatch]:
        def run(conn: sqlite3.Connection) -> list[TickBatch]:
            row = conn.execute("SELECT sid FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                return []
            sid = row[0]
            # The (sid, ts_us) index gives the window's rows in time order; the per-symbol
            # split and the trade-id order within a timestamp are done in numpy.
            trade_rows = conn.execute(
                "SELECT symbol, ts_us, trade_id, price, qty, side FROM trades "
                "WHERE sid = ? AND ts_us >= ? AND ts_us < ?",
                (sid, start_us, end_us),
            ).fetchall()
            book_rows = conn.execute(
                "SELECT symbol, ts_us, depth, bid_price, bid_qty, ask_price, ask_qty "
                "FROM orderbook WHERE sid = ? AND ts_us >= ? AND ts_us < ?",
                (sid, start_us, end_us),
            ).fetchall()
            return window_batches(session_id, trade_rows, book_rows, symbols)

        return await self._db.read(run, "read tick window")


_RESULT_TABLES = {"orders": "result_orders", "fills": "result_fills", "equity": "result_equity"}


def _fenced_sid(conn: sqlite3.Connection, session_id: str, owner: str, what: str) -> int:
    """The session's sid, if ``owner`` holds its lease and it is active; else :class:`LeaseLost`
    (a gap or results write of anyone else, or after the end, stores nothing)."""
    row = conn.execute(
        "SELECT sid, status, owner FROM sessions WHERE id = ?", (session_id,)
    ).fetchone()
    if row is None or SessionStatus(row[1]) not in ACTIVE_STATUSES or row[2] != owner:
        detail = "unknown session" if row is None else f"status {row[1]}, owner {row[2]}"
        raise LeaseLost(session_id, owner, f"{what} rejected ({detail})")
    sid: int = row[0]
    return sid


class SqliteResultStore(ResultStore):
    def __init__(self, db: Database) -> None:
        self._db = db

    async def write(self, session_id: str, results: StoredResults, *, owner: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            sid = _fenced_sid(conn, session_id, owner, "results write")
            conn.execute("DELETE FROM result_summary WHERE sid = ?", (sid,))
            for name, table in _RESULT_TABLES.items():
                conn.execute(f"DELETE FROM {table} WHERE sid = ?", (sid,))
                conn.executemany(
                    f"INSERT INTO {table} (sid, seq, body) VALUES (?, ?, ?)",
                    ((sid, n, line) for n, line in enumerate(getattr(results, name))),
                )
            conn.execute(
                "INSERT INTO result_summary (sid, hash, status, summary, orders, fills, equity, "
                "written_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sid,
                    results.hash,
                    results.status,
                    results.summary,
                    len(results.orders),
                    len(results.fills),
                    len(results.equity),
                    to_us(utcnow()),
                ),
            )

        await self._db.write(run, "write results")

    async def append(self, session_id: str, part: ResultPart, *, owner: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            sid = _fenced_sid(conn, session_id, owner, "results write")
            stored = conn.execute(
                "SELECT run, orders, fills, equity FROM result_summary WHERE sid = ?", (sid,)
            ).fetchone()
            if stored is not None and stored[0] == part.run:
                if not check_continues(part, stored[1], stored[2], stored[3]):
                    return  # a retry of the part stored last
                counts = (stored[1], stored[2], stored[3])
            else:
                check_continues(part, 0, 0, 0)
                conn.execute("DELETE FROM result_summary WHERE sid = ?", (sid,))
                for table in _RESULT_TABLES.values():
                    conn.execute(f"DELETE FROM {table} WHERE sid = ?", (sid,))
                counts = (0, 0, 0)
            for (name, table), at in zip(_RESULT_TABLES.items(), counts, strict=True):
                lines: list[str] = getattr(part, name)
                conn.executemany(
                    f"INSERT INTO {table} (sid, seq, body) VALUES (?, ?, ?)",
                    zip(itertools.repeat(sid), range(at, at + len(lines)), lines),
                )
            conn.execute(
                "INSERT OR REPLACE INTO result_summary (sid, hash, status, summary, orders, "
                "fills, equity, written_us, run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sid,
                    part.hash,
                    part.status,
                    part.summary,
                    counts[0] + len(part.orders),
                    counts[1] + len(part.fills),
                    counts[2] + len(part.equity),
                    to_us(utcnow()),
                    part.run,
                ),
            )

        await self._db.write(run, "append results")

    async def summary(self, session_id: str) -> ResultSummary | None:
        def run(conn: sqlite3.Connection) -> ResultSummary | None:
            row = conn.execute(
                "SELECT hash, status, summary, orders, fills, equity, written_us "
                "FROM result_summary WHERE sid = (SELECT sid FROM sessions WHERE id = ?)",
                (session_id,),
            ).fetchone()
            if row is None:
                return None
            h, status, summary, orders, fills, equity, written = row
            return ResultSummary(
                session_id, h, status, summary, orders, fills, equity, from_us(written)
            )

        return await self._db.read(run, "read results summary")

    async def rows(
        self,
        session_id: str,
        table: ResultTable,
        *,
        after: int = -1,
        limit: int = DEFAULT_DATA_LIMIT,
    ) -> list[ResultRow]:
        check_limit(limit, MAX_DATA_LIMIT)
        name = _RESULT_TABLES[table]
        # rows of whole parts only: below the summary's count (ResultStore.append)
        sql = (
            f"SELECT r.seq, r.body FROM result_summary s JOIN {name} r ON r.sid = s.sid "
            "WHERE s.sid = (SELECT sid FROM sessions WHERE id = ?) "
            f"AND r.seq > ? AND r.seq < s.{table} ORDER BY r.seq LIMIT ?"
        )
        return await self._db.read(
            lambda conn: [
                ResultRow(seq, body) for seq, body in conn.execute(sql, (session_id, after, limit))
            ],
            f"read results {table}",
        )


class SqliteStore(Store):
    def __init__(
        self,
        url: str,
        *,
        connection_factory: type[sqlite3.Connection] | None = None,
        failure_hold_s: float | None = None,
    ) -> None:
        """``connection_factory`` and ``failure_hold_s`` are for fault-injection tests."""
        self.url = url
        self._db = Database(
            sqlite_path_from_url(url),
            connection_factory=connection_factory,
            **({} if failure_hold_s is None else {"failure_hold_s": failure_hold_s}),
        )
        self.sessions = SqliteSessionStore(self._db)
        self.ticks = SqliteTickStore(self._db)
        self.results = SqliteResultStore(self._db)

    @property
    def path(self) -> str:
        return str(self._db.path)

    @property
    def timeout_s(self) -> float:
        return self._db.timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        self._db.timeout_s = value

    @property
    def write_failure(self) -> str | None:
        return self._db.write_failure

    @property
    def write_failures(self) -> int:
        return self._db.write_failures

    @property
    def queued_writes(self) -> tuple[int, int]:
        """Writes waiting for the writer thread: (session writes, tick writes)."""
        return self._db.queued_writes

    @property
    def write_traces(self) -> list[tuple[str, WriteTrace]]:
        """The last session writes (leases, transitions, creates) and where each waited."""
        return list(self._db.traces)

    def disk_usage_bytes(self) -> int | None:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(f"{self._db.path}{suffix}").st_size
            except FileNotFoundError:
                continue
        return total

    async def check_ready(self) -> None:
        if self._db.write_failure is not None:
            await self._db.probe_write()  # succeeds once the fault has cleared
            failing = self._db.write_failure  # still within its hold time
            if failing is not None:
                raise StoreUnavailable(f"SQLite writes failed moments ago ({failing})")
        await super().check_ready()

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()
