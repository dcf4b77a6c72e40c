"""Store handles that pass every call through one function: the shared shape of wrappers.

:class:`InterceptedSessionStore` and :class:`InterceptedTickStore` keep both contracts
by handing each call to an :data:`Interceptor` with the operation's name (the method's)
and its arguments by name; the interceptor decides what happens around the real call.
:class:`InterceptedStore` is a whole store so wrapped. The retry layer
(:mod:`ticktape.store.retrying`) and fault injection (:mod:`ticktape.testing`) are
both built on it.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ticktape.domain import DataType, Note, Session, SessionEvent, SessionStatus, Stats
from ticktape.store.base import (
    DEFAULT_DATA_LIMIT,
    MAX_CHANGES,
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
    WriteHealth,
    WriteResult,
)
from ticktape.ticks import BookSnapshot, Gap, StreamTimes, TickBatch, TickCounts, Trade

T = TypeVar("T")

SESSION_OPERATIONS = frozenset(
    {
        "create_session",
        "get_session",
        "list_sessions",
        "count_sessions",
        "transition",
        "claim",
        "renew_lease",
        "renew_instance",
        "add_event",
        "list_events",
        "mark_deleted",
        "find_finished",
        "purge",
        "reclaim",
        "find_expired",
        "scan_leases",
        "find_owned",
        "list_changed",
    }
)
TICK_OPERATIONS = frozenset(
    {
        "write",
        "write_sessions",
        "wait_visible",
        "note_committed",
        "count",
        "seal",
        "position",
        "read_trades",
        "read_orderbook",
        "write_gaps",
        "read_gaps",
        "read_times",
        "read_window",
        "count_window",
        "span",
        "trade_span",
        "trade_buckets",
    }
)
#: Result-store calls, named apart from the tick store's (``ResultStore.write`` is
#: ``write_results`` here).
RESULT_OPERATIONS = frozenset(
    {"write_results", "append_results", "read_results_summary", "read_result_rows"}
)
OPERATIONS = SESSION_OPERATIONS | TICK_OPERATIONS | RESULT_OPERATIONS


class Interceptor(Protocol):
    """``await call(operation, fn, **arguments)``: what happens around ``fn(**arguments)``."""

    def __call__(
        self, operation: str, fn: Callable[..., Awaitable[T]], **kwargs: Any
    ) -> Awaitable[T]: ...


class InterceptedSessionStore(SessionStore):
    def __init__(self, inner: SessionStore, call: Interceptor) -> None:
        self._inner = inner
        self._f = call

    async def create_session(
        self, session: Session, *, actor: str, start_lease_until: datetime | None = None
    ) -> Session:
        i = self._inner
        return await self._f(
            "create_session",
            i.create_session,
            session=session,
            actor=actor,
            start_lease_until=start_lease_until,
        )

    async def get_session(self, session_id: str) -> Session:
        i = self._inner
        return await self._f("get_session", i.get_session, session_id=session_id)

    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        return await self._f("list_sessions", self._inner.list_sessions, query=query)

    async def count_sessions(self, query: SessionQuery) -> int:
        return await self._f("count_sessions", self._inner.count_sessions, query=query)

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
        return await self._f(
            "transition",
            self._inner.transition,
            session_id=session_id,
            expected_version=expected_version,
            to_status=to_status,
            actor=actor,
            reason=reason,
            detail=detail,
            owner=owner,
            lease_expires_at=lease_expires_at,
            stats=stats,
            lease_expired_before=lease_expired_before,
            seal=seal,
            note=note,
            read=read,
        )

    async def renew_lease(
        self,
        session_id: str,
        *,
        owner: str,
        lease_expires_at: datetime | None,
        stats: Stats | None = None,
    ) -> Session:
        return await self._f(
            "renew_lease",
            self._inner.renew_lease,
            session_id=session_id,
            owner=owner,
            lease_expires_at=lease_expires_at,
            stats=stats,
        )

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
        return await self._f(
            "claim",
            self._inner.claim,
            session_id=session_id,
            expected_version=expected_version,
            owner=owner,
            lease_expires_at=lease_expires_at,
            actor=actor,
            reason=reason,
            detail=detail,
            lease_expired_before=lease_expired_before,
            seal=seal,
        )

    async def renew_instance(
        self, owner: str, *, lease_expires_at: datetime, progress: Mapping[str, Stats]
    ) -> list[Session]:
        return await self._f(
            "renew_instance",
            self._inner.renew_instance,
            owner=owner,
            lease_expires_at=lease_expires_at,
            progress=progress,
        )

    async def add_event(
        self,
        session_id: str,
        *,
        actor: str,
        reason: str,
        detail: str | None = None,
        owner: str | None = None,
    ) -> SessionEvent:
        return await self._f(
            "add_event",
            self._inner.add_event,
            session_id=session_id,
            actor=actor,
            reason=reason,
            detail=detail,
            owner=owner,
        )

    async def list_events(self, session_id: str) -> list[SessionEvent]:
        i = self._inner
        return await self._f("list_events", i.list_events, session_id=session_id)

    async def mark_deleted(self, session_id: str) -> Session:
        i = self._inner
        return await self._f("mark_deleted", i.mark_deleted, session_id=session_id)

    async def find_finished(
        self, ended_before: datetime, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Session]:
        i = self._inner
        return await self._f(
            "find_finished", i.find_finished, ended_before=ended_before, limit=limit, after=after
        )

    async def purge(self, session_ids: Sequence[str], *, ended_before: datetime) -> Purged:
        i = self._inner
        return await self._f("purge", i.purge, session_ids=session_ids, ended_before=ended_before)

    async def reclaim(self, ended_before: datetime) -> Purged:
        return await self._f("reclaim", self._inner.reclaim, ended_before=ended_before)

    async def find_expired(self, now: datetime) -> list[Session]:
        return await self._f("find_expired", self._inner.find_expired, now=now)

    async def scan_leases(self, now: datetime) -> LeaseScan:
        return await self._f("scan_leases", self._inner.scan_leases, now=now)

    async def find_owned(self, owner_prefix: str) -> list[Session]:
        i = self._inner
        return await self._f("find_owned", i.find_owned, owner_prefix=owner_prefix)

    async def list_changed(self, since: str | None, *, limit: int = MAX_CHANGES) -> ChangePage:
        i = self._inner
        return await self._f("list_changed", i.list_changed, since=since, limit=limit)


class InterceptedTickStore(TickStore):
    def __init__(self, inner: TickStore, call: Interceptor) -> None:
        self._inner = inner
        self._f = call

    async def write(self, batches: list[TickBatch], *, owner: str) -> WriteResult:
        return await self._f("write", self._inner.write, batches=batches, owner=owner)

    async def write_sessions(
        self, writes: Sequence[list[TickBatch]], *, owner: str
    ) -> list[WriteResult | Exception]:
        i = self._inner
        return await self._f("write_sessions", i.write_sessions, writes=writes, owner=owner)

    async def wait_visible(self, timeout_s: float, *, committed_by: datetime | None = None) -> None:
        i = self._inner
        return await self._f(
            "wait_visible", i.wait_visible, timeout_s=timeout_s, committed_by=committed_by
        )

    async def note_committed(self) -> None:
        return await self._f("note_committed", self._inner.note_committed)

    async def count(self, session_id: str) -> TickCounts:
        return await self._f("count", self._inner.count, session_id=session_id)

    async def seal(self, session_id: str, *, acknowledged: bool = False) -> Seal:
        i = self._inner
        return await self._f("seal", i.seal, session_id=session_id, acknowledged=acknowledged)

    def expect_seals(self, sessions: int, within_s: float) -> None:
        self._inner.expect_seals(sessions, within_s)  # a hint: nothing to retry or fail

    def seals_due_within(self, within_s: float) -> None:
        self._inner.seals_due_within(within_s)

    def seal_not_coming(self) -> None:
        self._inner.seal_not_coming()

    def seals_done(self) -> None:
        self._inner.seals_done()

    async def position(self, session_id: str) -> TickPosition:
        return await self._f("position", self._inner.position, session_id=session_id)

    async def read_trades(self, query: TickQuery) -> list[Trade]:
        return await self._f("read_trades", self._inner.read_trades, query=query)

    async def read_orderbook(self, query: TickQuery) -> list[BookSnapshot]:
        return await self._f("read_orderbook", self._inner.read_orderbook, query=query)

    async def write_gaps(self, session_id: str, gaps: list[Gap], *, owner: str) -> None:
        i = self._inner
        return await self._f(
            "write_gaps", i.write_gaps, session_id=session_id, gaps=gaps, owner=owner
        )

    async def read_times(self, session_id: str, symbol: str, data_type: DataType) -> StreamTimes:
        i = self._inner
        return await self._f(
            "read_times", i.read_times, session_id=session_id, symbol=symbol, data_type=data_type
        )

    async def read_gaps(self, session_id: str) -> list[Gap]:
        return await self._f("read_gaps", self._inner.read_gaps, session_id=session_id)

    async def span(self, session_id: str) -> tuple[int, int] | None:
        return await self._f("span", self._inner.span, session_id=session_id)

    async def read_window(
        self,
        session_id: str,
        start_us: int,
        end_us: int,
        symbols: tuple[str, ...] | None = None,
    ) -> list[TickBatch]:
        return await self._f(
            "read_window",
            self._inner.read_window,
            session_id=session_id,
            start_us=start_us,
            end_us=end_us,
            symbols=symbols,
        )

    async def count_window(
        self,
        session_id: str,
        start_us: int,
        end_us: int,
        symbols: tuple[str, ...] | None = None,
    ) -> TickCounts:
        return await self._f(
            "count_window",
            self._inner.count_window,
            session_id=session_id,
            start_us=start_us,
            end_us=end_us,
            symbols=symbols,
        )

    async def trade_span(self, session_id: str, symbol: str) -> tuple[datetime, datetime] | None:
        i = self._inner
        return await self._f("trade_span", i.trade_span, session_id=session_id, symbol=symbol)

    async def trade_buckets(self, query: TickQuery, width_us: int) -> list[TradeBucket]:
        i = self._inner
        return await self._f("trade_buckets", i.trade_buckets, query=query, width_us=width_us)


class InterceptedResultStore(ResultStore):
    def __init__(self, inner: ResultStore, call: Interceptor) -> None:
        self._inner = inner
        self._f = call

    async def write(self, session_id: str, results: StoredResults, *, owner: str) -> None:
        i = self._inner
        return await self._f(
            "write_results", i.write, session_id=session_id, results=results, owner=owner
        )

    async def append(self, session_id: str, part: ResultPart, *, owner: str) -> None:
        i = self._inner
        return await self._f(
            "append_results", i.append, session_id=session_id, part=part, owner=owner
        )

    async def summary(self, session_id: str) -> ResultSummary | None:
        i = self._inner
        return await self._f("read_results_summary", i.summary, session_id=session_id)

    async def rows(
        self,
        session_id: str,
        table: ResultTable,
        *,
        after: int = -1,
        limit: int = DEFAULT_DATA_LIMIT,
    ) -> list[ResultRow]:
        return await self._f(
            "read_result_rows",
            self._inner.rows,
            session_id=session_id,
            table=table,
            after=after,
            limit=limit,
        )


class InterceptedStore(Store):
    """``inner`` with every session and tick call handed to :meth:`intercept`.

    Opening, closing, the write timeout and the write-failure and disk-usage reports go
    straight to ``inner``; the readiness check reads through the wrapper, then asks
    ``inner``.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.sessions = InterceptedSessionStore(inner.sessions, self.intercept)
        self.ticks = InterceptedTickStore(inner.ticks, self.intercept)
        self.results = InterceptedResultStore(inner.results, self.intercept)

    @abc.abstractmethod
    async def intercept(self, operation: str, fn: Callable[..., Awaitable[T]], **kwargs: Any) -> T:
        """Run ``fn(**kwargs)``, the call named ``operation``, with this wrapper's behaviour."""

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    @property
    def write_failure(self) -> str | None:
        return self.inner.write_failure

    @property
    def write_failures(self) -> int:
        return self.inner.write_failures

    @property
    def write_health(self) -> WriteHealth | None:
        return self.inner.write_health

    @property
    def symbol_misses(self) -> dict[tuple[str, str], int]:
        return self.inner.symbol_misses

    @property  # a class attribute in Store; the inner store's here
    def timeout_s(self) -> float:
        return self.inner.timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        self.inner.timeout_s = value

    def disk_usage_bytes(self) -> int | None:
        return self.inner.disk_usage_bytes()

    async def check_ready(self) -> None:
        await super().check_ready()  # one read through this wrapper (its faults show)
        await self.inner.check_ready()  # and the backend's own check (a write probe)


__all__ = [
    "OPERATIONS",
    "RESULT_OPERATIONS",
    "SESSION_OPERATIONS",
    "TICK_OPERATIONS",
    "InterceptedResultStore",
    "InterceptedSessionStore",
    "InterceptedStore",
    "InterceptedTickStore",
    "Interceptor",
]
