"""An in-memory store that keeps the whole contract, for unit tests and the fake.

It implements exactly what the real backends do — compare-and-set, fencing,
idempotent tick writes — so tests against it mean something. A lock makes each
operation atomic, as a database transaction would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from ticktape.domain import (
    DataType,
    Note,
    Reason,
    Session,
    SessionEvent,
    SessionStatus,
    Stats,
    utcnow,
)
from ticktape.errors import LeaseLost, SessionConflict, SessionNotFound, ValidationError
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
)
from ticktape.store.rules import (
    after_cursor,
    apply_claim,
    apply_start,
    apply_transition,
    bucket_trades,
    check_bucket_query,
    check_continues,
    check_limit,
    check_note_owner,
    decode_cursor,
    effective,
    encode_cursor,
    from_us,
    matches,
    recv_time,
    to_us,
)
from ticktape.ticks import (
    BookBatch,
    BookSnapshot,
    Float64Array,
    Gap,
    StreamTimes,
    TickBatch,
    TickCounts,
    Trade,
    TradeBatch,
    side_name,
)


@dataclass
class _State:
    sessions: dict[str, Session] = field(default_factory=dict)
    events: dict[str, list[SessionEvent]] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    # (session, symbol, trade_id) -> (ts_us, price, qty, side)
    trades: dict[tuple[str, str, int], tuple[int, float, float, int]] = field(default_factory=dict)
    # (session, symbol, ts_us) -> (bids, asks)
    books: dict[tuple[str, str, int], tuple[tuple[tuple[float, float], ...], ...]] = field(
        default_factory=dict
    )
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # the change feed: a counter bumped by every write, and each session's last value
    change_seq: int = 0
    changed: dict[str, int] = field(default_factory=dict)
    # (session, symbol, trade_id or ts_us) -> receive time (µs) of trades / snapshots
    trades_recv: dict[tuple[str, str, int], int] = field(default_factory=dict)
    books_recv: dict[tuple[str, str, int], int] = field(default_factory=dict)
    # (session, symbol, data type, start_us, cause) -> gap
    gaps: dict[tuple[str, str, str, int, str], Gap] = field(default_factory=dict)
    # session -> (results, when written)
    results: dict[str, tuple[StoredResults, datetime]] = field(default_factory=dict)
    result_runs: dict[str, str] = field(default_factory=dict)  # run of appended results
    # instance leases: owner -> (lease, published progress)
    instances: dict[str, tuple[datetime, dict[str, Stats]]] = field(default_factory=dict)


class MemorySessionStore(SessionStore):
    def __init__(self, state: _State) -> None:
        self._s = state

    def _get(self, session_id: str) -> Session:
        try:
            return self._view(self._s.sessions[session_id])
        except KeyError:
            raise SessionNotFound(session_id) from None

    def _view(self, session: Session) -> Session:
        """The session with its owner's instance lease and published progress applied."""
        instance = self._s.instances.get(session.owner) if session.owner is not None else None
        if instance is None:
            return session
        lease, progress = instance
        return effective(session, lease, progress.get(session.id))

    def _views(self) -> list[Session]:
        return [self._view(s) for s in self._s.sessions.values()]

    def _put(self, session: Session) -> None:
        self._s.sessions[session.id] = session
        self._s.change_seq += 1
        self._s.changed.pop(session.id, None)  # re-inserted last: dicts keep change order
        self._s.changed[session.id] = self._s.change_seq

    async def list_changed(self, since: str | None, *, limit: int = MAX_CHANGES) -> ChangePage:
        if since is None:
            return ChangePage([], str(self._s.change_seq))
        try:
            after = int(since)
        except ValueError:
            raise ValidationError(f"invalid change cursor {since!r}", field="cursor") from None
        ids = [sid for sid, seq in self._s.changed.items() if seq > after][:limit]
        if not ids:
            return ChangePage([], since)
        return ChangePage([self._get(sid) for sid in ids], str(self._s.changed[ids[-1]]))

    def _record(
        self,
        session_id: str,
        from_status: SessionStatus | None,
        to_status: SessionStatus,
        actor: str,
        reason: str,
        detail: str | None,
        at: datetime,
    ) -> SessionEvent:
        events = self._s.events.setdefault(session_id, [])
        event = SessionEvent(
            session_id, len(events) + 1, at, from_status, to_status, actor, reason, detail
        )
        events.append(event)
        return event

    async def create_session(
        self, session: Session, *, actor: str, start_lease_until: datetime | None = None
    ) -> Session:
        async with self._s.lock:
            if session.idempotency_key is not None and session.idempotency_key in self._s.by_key:
                return self._get(self._s.by_key[session.idempotency_key])
            if session.id in self._s.sessions:
                raise SessionConflict(
                    f"session {session.id!r} already exists",
                    session_id=session.id,
                    status=session.status.value,
                )
            self._put(session)
            if session.idempotency_key is not None:
                self._s.by_key[session.idempotency_key] = session.id
            self._record(
                session.id, None, session.status, actor, "created", None, session.created_at
            )
            if start_lease_until is None:
                return session
            now = utcnow()
            running = apply_start(session, lease_expires_at=start_lease_until, now=now)
            self._put(running)
            self._record(
                session.id, session.status, running.status, actor, Reason.STARTED, None, now
            )
            return self._view(running)

    async def get_session(self, session_id: str) -> Session:
        return self._get(session_id)

    def _ordered(self, query: SessionQuery) -> list[Session]:
        found = [s for s in self._views() if matches(s, query)]
        found.sort(key=lambda s: (to_us(s.created_at), s.id), reverse=not query.oldest_first)
        return found

    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        check_limit(query.limit, MAX_LIST_LIMIT)
        found = self._ordered(query)
        if query.cursor is not None:
            position = decode_cursor(query.cursor)
            found = [s for s in found if after_cursor(s, position, oldest_first=query.oldest_first)]
        page = found[: query.limit]
        more = len(found) > query.limit
        return SessionPage(page, encode_cursor(page[-1]) if more and page else None)

    async def count_sessions(self, query: SessionQuery) -> int:
        return len(self._ordered(query))

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
        async with self._s.lock:
            current = self._get(session_id)
            now = utcnow()
            updated = apply_transition(
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
            self._put(updated)
            if note is not None:
                self._record(
                    session_id, current.status, current.status, actor, note.reason, note.detail, now
                )
            self._record(session_id, current.status, to_status, actor, reason, detail, now)
            return self._view(updated)

    async def renew_lease(
        self,
        session_id: str,
        *,
        owner: str,
        lease_expires_at: datetime | None,
        stats: Stats | None = None,
    ) -> Session:
        async with self._s.lock:
            current = self._get(session_id)
            if current.is_terminal or current.owner != owner:
                raise LeaseLost(
                    session_id, owner, f"status {current.status}, owner {current.owner}"
                )
            changes: dict[str, object] = {"lease_expires_at": lease_expires_at}
            if stats is not None:
                changes["stats"] = stats
            updated = current.evolve(**changes)
            self._put(updated)
            return self._view(updated)

    async def renew_instance(
        self, owner: str, *, lease_expires_at: datetime, progress: Mapping[str, Stats]
    ) -> list[Session]:
        async with self._s.lock:
            self._s.instances[owner] = (lease_expires_at, dict(progress))
            return [s for s in self._views() if not s.is_terminal and s.owner == owner]

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
        async with self._s.lock:
            current = self._get(session_id)
            updated = apply_claim(
                current,
                expected_version=expected_version,
                owner=owner,
                lease_expires_at=lease_expires_at,
                lease_expired_before=lease_expired_before,
            )
            self._put(updated)
            self._record(
                session_id, current.status, current.status, actor, reason, detail, utcnow()
            )
            return self._view(updated)

    async def add_event(
        self,
        session_id: str,
        *,
        actor: str,
        reason: str,
        detail: str | None = None,
        owner: str | None = None,
    ) -> SessionEvent:
        async with self._s.lock:
            current = self._get(session_id)
            check_note_owner(current, owner)
            return self._record(
                session_id, current.status, current.status, actor, reason, detail, utcnow()
            )

    async def list_events(self, session_id: str) -> list[SessionEvent]:
        self._get(session_id)
        return list(self._s.events.get(session_id, []))

    async def mark_deleted(self, session_id: str) -> Session:
        async with self._s.lock:
            current = self._get(session_id)
            if not current.is_terminal:
                raise SessionConflict(
                    f"session {session_id!r} is {current.status}; stop it before deleting",
                    session_id=session_id,
                    status=current.status.value,
                )
            updated = current.evolve(deleted=True)
            self._put(updated)
            return updated

    async def find_finished(
        self, ended_before: datetime, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Session]:
        check_limit(limit, MAX_LIST_LIMIT)
        found = sorted(
            (
                (to_us(s.ended_at), s.id, s)
                for s in self._s.sessions.values()
                if s.is_terminal and s.ended_at is not None and s.ended_at < ended_before
            ),
            key=lambda item: (item[0], item[1]),
        )
        if after is not None:
            position = (to_us(after[0]), after[1])
            found = [item for item in found if (item[0], item[1]) > position]
        return [item[2] for item in found[:limit]]

    async def purge(self, session_ids: Sequence[str], *, ended_before: datetime) -> Purged:
        total = Purged()
        async with self._s.lock:
            for session_id in dict.fromkeys(session_ids):
                session = self._s.sessions.get(session_id)
                if (
                    session is None
                    or not session.is_terminal
                    or session.ended_at is None
                    or session.ended_at >= ended_before
                ):
                    continue
                total += self._remove(session_id)
        return total

    def _remove(self, session_id: str) -> Purged:
        s = self._s
        session = s.sessions.pop(session_id)
        s.changed.pop(session_id, None)
        if session.idempotency_key is not None:
            s.by_key.pop(session.idempotency_key, None)
        events = len(s.events.pop(session_id, []))
        s.trades_recv = {k: v for k, v in s.trades_recv.items() if k[0] != session_id}
        s.books_recv = {k: v for k, v in s.books_recv.items() if k[0] != session_id}
        trades, orderbook, gaps = len(s.trades), len(s.books), len(s.gaps)
        s.trades = {k: v for k, v in s.trades.items() if k[0] != session_id}
        s.books = {k: v for k, v in s.books.items() if k[0] != session_id}
        s.gaps = {k: v for k, v in s.gaps.items() if k[0] != session_id}
        stored = s.results.pop(session_id, None)
        results = 0
        if stored is not None:
            r = stored[0]
            results = 1 + len(r.orders) + len(r.fills) + len(r.equity)
        return Purged(
            sessions=1,
            events=events,
            trades=trades - len(s.trades),
            orderbook=orderbook - len(s.books),
            gaps=gaps - len(s.gaps),
            results=results,
        )

    async def find_expired(self, now: datetime) -> list[Session]:
        return [
            s
            for s in self._views()
            if not s.is_terminal and (s.lease_expires_at is None or s.lease_expires_at < now)
        ]

    async def scan_leases(self, now: datetime) -> LeaseScan:
        expired: list[Session] = []
        next_expiry: datetime | None = None
        for s in self._views():
            if s.is_terminal:
                continue
            if s.lease_expires_at is None or s.lease_expires_at < now:
                expired.append(s)
            elif next_expiry is None or s.lease_expires_at < next_expiry:
                next_expiry = s.lease_expires_at
        return LeaseScan(expired, next_expiry)

    async def find_owned(self, owner_prefix: str) -> list[Session]:
        return [
            s
            for s in self._views()
            if not s.is_terminal and s.owner is not None and s.owner.startswith(owner_prefix)
        ]


class MemoryTickStore(TickStore):
    def __init__(self, state: _State) -> None:
        self._s = state

    async def write(self, batches: list[TickBatch], *, owner: str) -> WriteResult:
        async with self._s.lock:
            return self._write(batches, owner)

    async def write_sessions(
        self, writes: Sequence[list[TickBatch]], *, owner: str
    ) -> list[WriteResult | Exception]:
        answers: list[WriteResult | Exception] = []
        async with self._s.lock:
            for batches in writes:
                try:
                    answers.append(self._write(batches, owner))
                except LeaseLost as exc:
                    answers.append(exc)
        return answers

    def _write(self, batches: list[TickBatch], owner: str) -> WriteResult:
        for batch in batches:
            session = self._s.sessions.get(batch.session_id)
            if session is None or session.is_terminal or session.owner != owner:
                raise LeaseLost(batch.session_id, owner, "tick write rejected")
        trades = books = 0
        for batch in batches:
            if isinstance(batch, BookBatch):
                for i in range(len(batch)):
                    key = (batch.session_id, batch.symbol, int(batch.ts_us[i]))
                    if key not in self._s.books:
                        if batch.recv_us is not None:
                            self._s.books_recv[key] = int(batch.recv_us[i])
                        self._s.books[key] = (
                            tuple(
                                zip(
                                    batch.bid_price[i].tolist(),
                                    batch.bid_qty[i].tolist(),
                                    strict=True,
                                )
                            ),
                            tuple(
                                zip(
                                    batch.ask_price[i].tolist(),
                                    batch.ask_qty[i].tolist(),
                                    strict=True,
                                )
                            ),
                        )
                        books += 1
            else:
                recv = batch.recv_us.tolist() if batch.recv_us is not None else [-1] * len(batch)
                for ts, tid, px, qty, side, rcv in zip(
                    batch.ts_us.tolist(),
                    batch.trade_id.tolist(),
                    batch.price.tolist(),
                    batch.qty.tolist(),
                    batch.side.tolist(),
                    recv,
                    strict=True,
                ):
                    key3 = (batch.session_id, batch.symbol, tid)
                    if key3 not in self._s.trades:
                        if rcv >= 0:
                            self._s.trades_recv[key3] = rcv
                        self._s.trades[key3] = (ts, px, qty, side)
                        trades += 1
        return WriteResult(TickCounts(trades, books))

    async def wait_visible(self, timeout_s: float, *, committed_by: datetime | None = None) -> None:
        return None

    async def read_times(self, session_id: str, symbol: str, data_type: DataType) -> StreamTimes:
        async with self._s.lock:
            if data_type is DataType.TRADES:
                keys = sorted(k for k in self._s.trades if k[0] == session_id and k[1] == symbol)
                ts = [self._s.trades[k][0] for k in keys]
                recv = [self._s.trades_recv.get(k, -1) for k in keys]
            else:
                keys = sorted(k for k in self._s.books if k[0] == session_id and k[1] == symbol)
                ts = [k[2] for k in keys]
                recv = [self._s.books_recv.get(k, -1) for k in keys]
        return StreamTimes(np.array(ts, dtype=np.int64), np.array(recv, dtype=np.int64))

    async def write_gaps(self, session_id: str, gaps: list[Gap], *, owner: str) -> None:
        async with self._s.lock:
            session = self._s.sessions.get(session_id)
            if session is None or session.is_terminal or session.owner != owner:
                raise LeaseLost(session_id, owner, "gap write rejected")
            for g in gaps:
                key = (session_id, g.symbol, g.data_type.value, g.start_us, g.cause.value)
                self._s.gaps.setdefault(key, g)

    async def read_gaps(self, session_id: str) -> list[Gap]:
        async with self._s.lock:
            found = [(k, g) for k, g in self._s.gaps.items() if k[0] == session_id]
        return [
            g for _, g in sorted(found, key=lambda kg: (kg[0][3], kg[0][1], kg[0][2], kg[0][4]))
        ]

    async def count(self, session_id: str) -> TickCounts:
        trades = sum(1 for k in self._s.trades if k[0] == session_id)
        books = sum(1 for k in self._s.books if k[0] == session_id)
        return TickCounts(trades, books)

    async def position(self, session_id: str) -> TickPosition:
        last_us: int | None = None
        trade_ids: dict[str, int] = {}
        for (sid, sym, tid), (ts, *_rest) in self._s.trades.items():
            if sid == session_id:
                trade_ids[sym] = max(tid, trade_ids.get(sym, tid))
                last_us = ts if last_us is None else max(last_us, ts)
        for sid, _sym, ts in self._s.books:
            if sid == session_id:
                last_us = ts if last_us is None else max(last_us, ts)
        return TickPosition(
            None if last_us is None else from_us(last_us), dict(sorted(trade_ids.items()))
        )

    @staticmethod
    def _in_range(query: TickQuery, symbol: str, ts_us: int) -> bool:
        if query.symbol is not None and symbol != query.symbol:
            return False
        if query.start is not None and ts_us < to_us(query.start):
            return False
        return query.end is None or ts_us < to_us(query.end)

    async def read_trades(self, query: TickQuery) -> list[Trade]:
        check_limit(query.limit, MAX_DATA_LIMIT)
        rows = [
            (ts, tid, sym, px, qty, side)
            for (sid, sym, tid), (ts, px, qty, side) in self._s.trades.items()
            if sid == query.session_id
            and self._in_range(query, sym, ts)
            and (query.after is None or (ts, tid, sym) > query.after)
        ]
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        recv = self._s.trades_recv
        sid = query.session_id
        return [
            Trade(
                sym,
                from_us(ts),
                tid,
                px,
                qty,
                side_name(side),
                recv_time(recv.get((sid, sym, tid))),
            )
            for ts, tid, sym, px, qty, side in rows[: query.limit]
        ]

    async def read_orderbook(self, query: TickQuery) -> list[BookSnapshot]:
        check_limit(query.limit, MAX_DATA_LIMIT)
        rows = [
            (ts, sym, sides)
            for (sid, sym, ts), sides in self._s.books.items()
            if sid == query.session_id
            and self._in_range(query, sym, ts)
            and (query.after is None or (ts, 0, sym) > query.after)
        ]
        rows.sort(key=lambda r: (r[0], r[1]))
        recv = self._s.books_recv
        sid = query.session_id
        return [
            BookSnapshot(sym, from_us(ts), sides[0], sides[1], recv_time(recv.get((sid, sym, ts))))
            for ts, sym, sides in rows[: query.limit]
        ]

    async def trade_span(self, session_id: str, symbol: str) -> tuple[datetime, datetime] | None:
        times = [
            ts
            for (sid, sym, _tid), (ts, *_rest) in self._s.trades.items()
            if sid == session_id and sym == symbol
        ]
        return (from_us(min(times)), from_us(max(times))) if times else None

    async def trade_buckets(self, query: TickQuery, width_us: int) -> list[TradeBucket]:
        symbol = check_bucket_query(query.symbol, width_us, query.limit)
        rows = sorted(
            (ts, tid, px, qty)
            for (sid, sym, tid), (ts, px, qty, _side) in self._s.trades.items()
            if sid == query.session_id and sym == symbol and self._in_range(query, sym, ts)
        )
        return bucket_trades([(ts, px, qty) for ts, _tid, px, qty in rows], width_us, query.limit)

    async def count_window(
        self,
        session_id: str,
        start_us: int,
        end_us: int,
        symbols: tuple[str, ...] | None = None,
    ) -> TickCounts:
        wanted = None if symbols is None else set(symbols)

        def within(sid: str, sym: str, ts: int) -> bool:
            return (
                sid == session_id and start_us <= ts < end_us and (wanted is None or sym in wanted)
            )

        trades = sum(
            1 for (sid, sym, _t), (ts, *_r) in self._s.trades.items() if within(sid, sym, ts)
        )
        books = sum(1 for sid, sym, ts in self._s.books if within(sid, sym, ts))
        return TickCounts(trades, books)

    async def read_window(
        self,
        session_id: str,
        start_us: int,
        end_us: int,
        symbols: tuple[str, ...] | None = None,
    ) -> list[TickBatch]:
        wanted = None if symbols is None else set(symbols)
        trades: dict[str, list[tuple[int, int, float, float, int]]] = {}
        for (sid, sym, tid), (ts, px, qty, side) in self._s.trades.items():
            if sid == session_id and start_us <= ts < end_us and (wanted is None or sym in wanted):
                trades.setdefault(sym, []).append((ts, tid, px, qty, side))
        books: dict[str, list[tuple[int, tuple[tuple[tuple[float, float], ...], ...]]]] = {}
        for (sid, sym, ts), sides in self._s.books.items():
            if sid == session_id and start_us <= ts < end_us and (wanted is None or sym in wanted):
                books.setdefault(sym, []).append((ts, sides))
        out: list[TickBatch] = []
        for sym in sorted(set(trades) | set(books)):
            if sym in trades:
                rows = sorted(trades[sym])
                out.append(
                    TradeBatch(
                        session_id,
                        sym,
                        np.array([r[0] for r in rows], np.int64),
                        np.array([r[1] for r in rows], np.int64),
                        np.array([r[2] for r in rows], np.float64),
                        np.array([r[3] for r in rows], np.float64),
                        np.array([r[4] for r in rows], np.int8),
                    )
                )
            if sym in books:
                snaps = sorted(books[sym], key=lambda b: b[0])
                depth = max(max(len(s[1][0]), len(s[1][1])) for s in snaps)

                out.append(
                    BookBatch(
                        session_id,
                        sym,
                        np.array([s[0] for s in snaps], np.int64),
                        _levels(snaps, 0, 0, np.nan, depth),
                        _levels(snaps, 0, 1, 0.0, depth),
                        _levels(snaps, 1, 0, np.nan, depth),
                        _levels(snaps, 1, 1, 0.0, depth),
                    )
                )
        return out


def _levels(
    snaps: list[tuple[int, tuple[tuple[tuple[float, float], ...], ...]]],
    side: int,
    column: int,
    pad: float,
    depth: int,
) -> Float64Array:
    """One side's prices (column 0) or quantities (1) of ``snaps``, padded to ``depth``."""
    out = np.full((len(snaps), depth), pad)
    for n, (_ts, sides) in enumerate(snaps):
        values = [level[column] for level in sides[side]]
        out[n, : len(values)] = values
    return out


class MemoryResultStore(ResultStore):
    def __init__(self, state: _State) -> None:
        self._s = state

    async def write(self, session_id: str, results: StoredResults, *, owner: str) -> None:
        async with self._s.lock:
            session = self._s.sessions.get(session_id)
            if session is None or session.is_terminal or session.owner != owner:
                raise LeaseLost(session_id, owner, "results write rejected")
            self._s.results[session_id] = (results, utcnow())
            self._s.result_runs.pop(session_id, None)

    async def append(self, session_id: str, part: ResultPart, *, owner: str) -> None:
        async with self._s.lock:
            session = self._s.sessions.get(session_id)
            if session is None or session.is_terminal or session.owner != owner:
                raise LeaseLost(session_id, owner, "results write rejected")
            found = self._s.results.get(session_id)
            same_run = found is not None and self._s.result_runs.get(session_id) == part.run
            if same_run:
                assert found is not None
                stored = found[0]
                n = (len(stored.orders), len(stored.fills), len(stored.equity))
                if not check_continues(part, *n):
                    return  # a retry of the part stored last
                orders, fills, equity = stored.orders, stored.fills, stored.equity
            else:
                check_continues(part, 0, 0, 0)
                orders, fills, equity = [], [], []
            self._s.results[session_id] = (
                StoredResults(
                    orders=[*orders, *part.orders],
                    fills=[*fills, *part.fills],
                    equity=[*equity, *part.equity],
                    summary=part.summary,
                    hash=part.hash,
                    status=part.status,
                ),
                utcnow(),
            )
            self._s.result_runs[session_id] = part.run

    async def summary(self, session_id: str) -> ResultSummary | None:
        found = self._s.results.get(session_id)
        if found is None:
            return None
        r, at = found
        return ResultSummary(
            session_id, r.hash, r.status, r.summary, len(r.orders), len(r.fills), len(r.equity), at
        )

    async def rows(
        self,
        session_id: str,
        table: ResultTable,
        *,
        after: int = -1,
        limit: int = DEFAULT_DATA_LIMIT,
    ) -> list[ResultRow]:
        check_limit(limit, MAX_DATA_LIMIT)
        found = self._s.results.get(session_id)
        if found is None:
            return []
        lines: list[str] = getattr(found[0], table)
        start = max(after + 1, 0)
        return [ResultRow(n, lines[n]) for n in range(start, min(start + limit, len(lines)))]


class MemoryStore(Store):
    """Both contracts over one in-process state. URL: ``memory://``."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        state = _State()
        self.sessions = MemorySessionStore(state)
        self.ticks = MemoryTickStore(state)
        self.results = MemoryResultStore(state)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None


__all__ = ["MemoryStore"]
