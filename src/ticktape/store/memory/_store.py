"""An in-memory store that keeps the whole contract, for unit tests and the fake.

It implements exactly what the real backends do — compare-and-set, fencing,
idempotent tick writes — so tests against it mean something. A lock makes each
operation atomic, as a database transaction would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ticktape.domain import Session, SessionEvent, SessionStatus, Stats, utcnow
from ticktape.errors import LeaseLost, SessionConflict, SessionNotFound, ValidationError
from ticktape.store.base import (
    MAX_CHANGES,
    MAX_DATA_LIMIT,
    MAX_LIST_LIMIT,
    UNCHANGED,
    ChangePage,
    Seal,
    SessionPage,
    SessionQuery,
    SessionStore,
    Store,
    TickPosition,
    TickQuery,
    TickStore,
    Unchanged,
    WriteResult,
)
from ticktape.store.rules import (
    after_cursor,
    apply_claim,
    apply_transition,
    check_limit,
    decode_cursor,
    effective,
    encode_cursor,
    from_us,
    to_us,
)
from ticktape.ticks import BookBatch, BookSnapshot, TickBatch, TickCounts, Trade, side_name


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
    # instance leases: owner -> (lease, published progress)
    instances: dict[str, tuple[datetime, dict[str, Stats]]] = field(default_factory=dict)


def _matches(session: Session, query: SessionQuery) -> bool:
    if session.deleted and not query.include_deleted:
        return False
    if query.statuses and session.status not in query.statuses:
        return False
    if query.kind is not None and session.kind is not query.kind:
        return False
    return query.symbol is None or query.symbol in session.symbols


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

    async def create_session(self, session: Session, *, actor: str) -> Session:
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
            return session

    async def get_session(self, session_id: str) -> Session:
        return self._get(session_id)

    def _ordered(self, query: SessionQuery) -> list[Session]:
        found = [s for s in self._views() if _matches(s, query)]
        found.sort(key=lambda s: (to_us(s.created_at), s.id), reverse=True)
        return found

    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        check_limit(query.limit, MAX_LIST_LIMIT)
        found = self._ordered(query)
        if query.cursor is not None:
            position = decode_cursor(query.cursor)
            found = [s for s in found if after_cursor(s, position)]
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
        self, session_id: str, *, actor: str, reason: str, detail: str | None = None
    ) -> SessionEvent:
        async with self._s.lock:
            current = self._get(session_id)
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

    async def find_expired(self, now: datetime) -> list[Session]:
        return [
            s
            for s in self._views()
            if not s.is_terminal and (s.lease_expires_at is None or s.lease_expires_at < now)
        ]

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
                    for ts, tid, px, qty, side in zip(
                        batch.ts_us.tolist(),
                        batch.trade_id.tolist(),
                        batch.price.tolist(),
                        batch.qty.tolist(),
                        batch.side.tolist(),
                        strict=True,
                    ):
                        key3 = (batch.session_id, batch.symbol, tid)
                        if key3 not in self._s.trades:
                            self._s.trades[key3] = (ts, px, qty, side)
                            trades += 1
            return WriteResult(TickCounts(trades, books))

    async def wait_visible(self, timeout_s: float) -> None:
        return None

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
            if sid == query.session_id and self._in_range(query, sym, ts)
        ]
        rows.sort(key=lambda r: (r[0], r[1]))
        return [
            Trade(sym, from_us(ts), tid, px, qty, side_name(side))
            for ts, tid, sym, px, qty, side in rows[: query.limit]
        ]

    async def read_orderbook(self, query: TickQuery) -> list[BookSnapshot]:
        check_limit(query.limit, MAX_DATA_LIMIT)
        rows = [
            (ts, sym, sides)
            for (sid, sym, ts), sides in self._s.books.items()
            if sid == query.session_id and self._in_range(query, sym, ts)
        ]
        rows.sort(key=lambda r: (r[0], r[1]))
        return [
            BookSnapshot(sym, from_us(ts), sides[0], sides[1])
            for ts, sym, sides in rows[: query.limit]
        ]


class MemoryStore(Store):
    """Both contracts over one in-process state. URL: ``memory://``."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        state = _State()
        self.sessions = MemorySessionStore(state)
        self.ticks = MemoryTickStore(state)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None


__all__ = ["MemoryStore"]
