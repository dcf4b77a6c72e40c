"""SessionService: the only door to sessions (DESIGN.md, invariant 1).

Every API route, the CLI (through the API) and internal code read and change
sessions here, and this class reads the store every time: it keeps no copy of
any session. State changes are written to the store first, conditionally on
the version they were read at, and only then acted on in memory (invariant 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from ticktape.config import (
    IDEMPOTENCY_KEY_TTL_S,
    READY_TIMEOUT_S,
    STOP_WAIT_TIMEOUT_S,
    Settings,
)
from ticktape.domain import (
    ACTIVE_STATUSES,
    DataType,
    OwnerLossPolicy,
    Reason,
    Session,
    SessionConfig,
    SessionEvent,
    SessionKind,
    SessionSpec,
    SessionStatus,
    new_session_id,
    utcnow,
)
from ticktape.errors import (
    IdempotencyKeyReused,
    LimitExceeded,
    SessionConflict,
    SessionNotFound,
    StopTimeout,
    StoreError,
    StoreUnavailable,
    ValidationError,
    clip,
)
from ticktape.export import ExportFormat, book_pages, encode, trade_pages
from ticktape.metrics import Metrics
from ticktape.quality import StreamQuality, feed_totals, stream_quality
from ticktape.redact import redact
from ticktape.store.base import (
    DEFAULT_DATA_LIMIT,
    MAX_LIST_LIMIT,
    ChangePage,
    ResultRow,
    ResultSummary,
    ResultTable,
    SessionPage,
    SessionQuery,
    Store,
    TickQuery,
    TradeBucket,
)
from ticktape.store.rules import to_us
from ticktape.store.transitions import request_stop
from ticktape.strategies import BacktestSpec, PaperSpec
from ticktape.ticks import BookSnapshot, Trade

log = logging.getLogger(__name__)

#: Running sessions whose progress the push channel re-reads per heartbeat, at most.
PROGRESS_SESSIONS_MAX = 5_000

STOP_POLL_INTERVAL_S = 0.05  # how often a waiting stop re-reads the store
ACTIVE_COUNT_MAX_AGE_S = 1.0  # the per-store session limit counts the store this often
# A create waits for that count only when the last one is older than this (none yet, or
# the counts are failing or slow); a younger one answers while the next is under way.
ACTIVE_COUNT_WAIT_AGE_S = 5.0
UNLAUNCHED_REMEMBERED = 10_000  # failed creates whose written start a key retry may launch


class Runtime(Protocol):
    """What the service needs from the supervisor of this instance."""

    @property
    def owner(self) -> str:
        """The owner token this instance writes into the sessions it runs."""

    def launch(self, session: Session) -> None:
        """Start running a ``pending`` session this instance owns (or one its create moved
        to ``running`` already: :meth:`start_lease_until`); a no-op if it runs here."""

    def start_lease_until(self) -> datetime | None:
        """When this runtime launches a new session at once: the lease its ``pending`` →
        ``running`` transition is to carry, written with the create (one log write per
        start instead of two); None: the runner writes that transition itself."""

    def request_stop(self, session_id: str) -> None:
        """Wake the local runner of this session, if any, to act on a stop now."""

    @property
    def running_ids(self) -> list[str]:
        """Sessions with a live runner on this instance."""


def _check_key_reuse(key: str, found: Session, spec: SessionSpec, now: datetime) -> None:
    """An ``Idempotency-Key`` names one request: the same again, within its lifetime.

    Stripe's semantics: the key sent with a different request is refused (409
    ``idempotency_key_reused``), whatever became of the first session (deleted too);
    a key older than :data:`IDEMPOTENCY_KEY_TTL_S` has expired and is refused (422)
    rather than silently answered with a session from long ago.
    """
    if (now - found.created_at).total_seconds() > IDEMPOTENCY_KEY_TTL_S:
        raise ValidationError(
            f"Idempotency-Key {clip(key)!r} expired (keys are kept "
            f"{IDEMPOTENCY_KEY_TTL_S / 3600:g} h); use a new key",
            field="Idempotency-Key",
        )
    same = (
        found.kind,
        found.symbols,
        found.exchange,
        found.data_types,
        found.config,
    ) == (spec.kind, spec.symbols, spec.exchange, spec.data_types, spec.config)
    if not same:
        raise IdempotencyKeyReused(key, found.id)


class SessionService:
    def __init__(
        self, store: Store, runtime: Runtime, settings: Settings, metrics: Metrics
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._settings = settings
        self._metrics = metrics
        # (count, monotonic time its read began): each count has its own time, so a
        # create tells by it whether a count landed while it was being written
        self._active_count: tuple[int, float] | None = None
        self._counting: asyncio.Future[None] | None = None  # the count under way, if any
        # creates that raised after asking for their start to be written with them
        self._unlaunched: OrderedDict[str, None] = OrderedDict()

    @property
    def owner(self) -> str:
        """The owner token of this instance: a session it runs carries it."""
        return self._runtime.owner

    async def create(self, spec: SessionSpec, *, idempotency_key: str | None = None) -> Session:
        """Write the ``pending`` session durably and visibly, hand it to the runtime, return it.

        With an ``idempotency_key`` already used, returns that earlier session unchanged
        (and, if it is still ``pending`` under this instance, launches it: the attempt that
        wrote it may have failed before it could).
        """
        started = time.perf_counter()
        failing = self._store.write_failure
        if failing is not None:
            # The fault may have cleared with no write since to tell (no session running,
            # no probe from a load balancer): one bounded probe decides.
            with contextlib.suppress(StoreError, TimeoutError):
                async with asyncio.timeout(READY_TIMEOUT_S):
                    await self._store.check_ready()
            failing = self._store.write_failure
        if failing is not None:
            # Admission control: a session started on a store that is failing writes (a
            # nearly full disk takes a small row, then not its ticks) would fail anyway.
            raise StoreUnavailable(
                f"create session: the store is failing writes ({redact(failing)}); "
                "retry when /ready answers 200"
            )
        await self._check_limits(spec)
        now = utcnow()
        draft = Session(
            id=new_session_id(),
            kind=spec.kind,
            status=SessionStatus.PENDING,
            symbols=spec.symbols,
            exchange=spec.exchange,
            data_types=spec.data_types,
            config=spec.config,
            created_at=now,
            reason=Reason.CREATED,
            owner=self._runtime.owner,
            lease_expires_at=now + timedelta(seconds=self._settings.lease_s),
            idempotency_key=idempotency_key,
        )
        start_lease_until = self._runtime.start_lease_until()
        # the count known when the write begins: a create adds itself to it only if no
        # other count landed during the write (one that did may already have seen it)
        counted_at = None if self._active_count is None else self._active_count[1]
        try:
            stored = await self._create_once(draft, start_lease_until)
        except BaseException:
            if start_lease_until is not None:
                # it may be written, ``running`` and owned here, yet launched nowhere
                self._unlaunched[draft.id] = None
                while len(self._unlaunched) > UNLAUNCHED_REMEMBERED:
                    self._unlaunched.popitem(last=False)
            raise
        if stored.id == draft.id:
            if self._active_count is not None and self._active_count[1] == counted_at:
                self._active_count = (self._active_count[0] + 1, self._active_count[1])
            self._runtime.launch(stored)
            self._metrics.session_created(time.perf_counter() - started)
            # the session as created (``pending``, version 1), whether or not its start
            # was written with it: the create answers its own write, as it always has
            return draft
        if idempotency_key is not None:
            _check_key_reuse(idempotency_key, stored, spec, now)
        if stored.owner == self._runtime.owner and (
            stored.status is SessionStatus.PENDING
            or (stored.status is SessionStatus.RUNNING and stored.id in self._unlaunched)
        ):
            # A client retrying with its key after an earlier attempt was written but
            # answered with an error: that attempt launched nothing, so launch it now
            # (a no-op if it is running here; the pending → running CAS decides the rest,
            # or, for an attempt that wrote its start as well, the failed attempt's
            # record here: only a create of this instance that raised is launched so).
            self._unlaunched.pop(stored.id, None)
            self._runtime.launch(stored)
        return stored

    async def _check_limits(self, spec: SessionSpec) -> None:
        """The configured limits a new session must fit (each error names its setting)."""
        settings = self._settings
        if len(spec.symbols) > settings.max_symbols_per_session:
            raise ValidationError(
                f"at most {settings.max_symbols_per_session} symbols per session "
                f"(got {len(spec.symbols)}; limit TICKTAPE_MAX_SYMBOLS)",
                field="symbols",
            )
        budget = settings.disk_budget_mb
        used = self._store.disk_usage_bytes() if budget is not None else None
        if budget is not None and used is not None and used >= budget * 1_000_000:
            raise LimitExceeded(
                f"the store's files take {used / 1e6:.1f} MB, at or over the disk budget of "
                f"{budget:g} MB (limit TICKTAPE_DISK_BUDGET_MB)",
                limit="TICKTAPE_DISK_BUDGET_MB",
                code="disk_budget",
            )
        local = len(self._runtime.running_ids)
        if local >= settings.max_running_per_instance:
            raise LimitExceeded(
                f"this instance already runs {local} sessions "
                f"(limit TICKTAPE_MAX_RUNNING_PER_INSTANCE={settings.max_running_per_instance})",
                limit="TICKTAPE_MAX_RUNNING_PER_INSTANCE",
                retry_after_s=self._settings.heartbeat_interval_s,
            )
        active = await self._active_in_store()
        if active >= settings.max_running_per_store:
            raise LimitExceeded(
                f"the store already holds {active} active sessions "
                f"(limit TICKTAPE_MAX_RUNNING_PER_STORE={settings.max_running_per_store})",
                limit="TICKTAPE_MAX_RUNNING_PER_STORE",
                retry_after_s=self._settings.heartbeat_interval_s,
            )

    async def _active_in_store(self) -> int:
        """Active sessions in the store, for the per-store limit: counted at most every
        :data:`ACTIVE_COUNT_MAX_AGE_S` (a count on QuestDB is a read of the log), plus
        the creates this instance made since — except one during whose write a count
        landed, which that count may have seen already (counted twice, it refused a
        create below the limit) — so the limit may be passed by what other instances (or
        creates racing here) added within that time.

        A create that finds the count stale starts the next one (one at a time: the
        creates meanwhile share it) and, while the last count is younger than
        :data:`ACTIVE_COUNT_WAIT_AGE_S`, answers from that one without waiting: the
        count's round trip (and the log scan it may queue behind) is not added to one
        create in every second's worth. With no count yet, or an older one, it waits."""
        now = time.monotonic()
        known = self._active_count
        if known is not None and now - known[1] <= ACTIVE_COUNT_MAX_AGE_S:
            return known[0]
        counting = self._counting
        if counting is None or counting.done():
            counting = self._counting = asyncio.ensure_future(self._count_active(now))
            counting.add_done_callback(self._counted)
        if known is not None and now - known[1] <= ACTIVE_COUNT_WAIT_AGE_S:
            return known[0]
        await asyncio.shield(counting)
        assert self._active_count is not None
        return self._active_count[0]

    def _counted(self, counting: asyncio.Future[None]) -> None:
        if self._counting is counting:
            self._counting = None
        if not counting.cancelled() and counting.exception() is not None:
            # a create waiting on it raises it; one that did not wait counts again later
            log.debug("the per-store limit's count failed: %r", counting.exception())

    async def _count_active(self, now: float) -> None:
        counted = await self._store.sessions.count_sessions(
            SessionQuery(statuses=ACTIVE_STATUSES, include_deleted=True)
        )
        self._active_count = (counted, now)

    async def _create_once(self, draft: Session, start_lease_until: datetime | None) -> Session:
        try:
            return await self._store.sessions.create_session(
                draft, actor=self._runtime.owner, start_lease_until=start_lease_until
            )
        except SessionConflict:
            # The store handle's retry after an attempt that was written but whose
            # answer was lost:
            # the session found is this very draft, not a conflict.
            found = await self._store.sessions.get_session(draft.id)
            if (found.owner, found.created_at) == (draft.owner, draft.created_at):
                return found
            raise

    def local_running_ids(self) -> list[str]:
        """Sessions with a live runner on this instance."""
        return list(self._runtime.running_ids)

    def store_problem(self) -> str | None:
        """Why the store's writes are failing right now, or None (health, metrics)."""
        return self._store.write_failure

    def store_write_failures(self) -> int:
        return self._store.write_failures

    def store_symbol_misses(self) -> dict[tuple[str, str], int]:
        return self._store.symbol_misses

    async def check_store(self) -> None:
        """Raise the store's error unless it answers a read and takes writes (readiness)."""
        await self._store.check_ready()

    async def get(self, session_id: str) -> Session:
        try:
            session = await self._store.sessions.get_session(session_id)
        except Exception:
            self._metrics.lookup(found=False)
            raise
        self._metrics.lookup(found=True)
        return session

    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        return await self._store.sessions.list_sessions(query)

    async def count(self, query: SessionQuery) -> int:
        return await self._store.sessions.count_sessions(query)

    async def changes(self, since: str | None) -> ChangePage:
        """Sessions changed since a change-feed position (see ``SessionStore.list_changed``)."""
        return await self._store.sessions.list_changed(since)

    async def progress(self, *, at_most: int = PROGRESS_SESSIONS_MAX) -> list[Session]:
        """The running and stopping sessions with their fresh stats, newest first, at most
        ``at_most``: a running session's progress is published by its owner's heartbeat
        (``SessionStore.renew_instance``), which is not a change in ``list_changed``, so
        the push channel reads it here once per heartbeat."""
        query = SessionQuery(
            statuses=frozenset({SessionStatus.RUNNING, SessionStatus.STOPPING}),
            limit=MAX_LIST_LIMIT,
        )
        out: list[Session] = []
        while len(out) < at_most:
            page = await self._store.sessions.list_sessions(query)
            out.extend(page.sessions)
            if page.next_cursor is None:
                break
            query = replace(query, cursor=page.next_cursor)
        return out[:at_most]

    async def events(self, session_id: str) -> list[SessionEvent]:
        return await self._store.sessions.list_events(session_id)

    async def stop(
        self,
        session_id: str,
        *,
        wait: bool = False,
        timeout_s: float = STOP_WAIT_TIMEOUT_S,
        reason: str = Reason.USER_STOP,
    ) -> Session:
        """Ask a session to stop; idempotent. A terminal session is returned unchanged.

        The request is recorded in the store (``pending``/``running`` → ``stopping``)
        before anything in memory moves; the owner — on this instance or another —
        finishes the stop (flush, then ``stopped``). With ``wait``, returns once the
        session is terminal, or raises :class:`StopTimeout` after ``timeout_s``.
        """
        session = await request_stop(
            self._store,
            session_id,
            actor=self._runtime.owner,
            reason=reason,
            policy=self._settings.retry,
        )
        if session.status is SessionStatus.STOPPING:
            self._runtime.request_stop(session_id)
        if not wait or session.is_terminal:
            return session
        return await self.wait_terminal(session_id, timeout_s)

    async def wait_terminal(self, session_id: str, timeout_s: float) -> Session:
        deadline = time.monotonic() + timeout_s
        while True:
            session = await self.get(session_id)
            if session.is_terminal:
                return session
            if time.monotonic() >= deadline:
                raise StopTimeout(session_id, session.status.value, timeout_s)
            await asyncio.sleep(STOP_POLL_INTERVAL_S)

    async def delete(self, session_id: str) -> Session:
        """Soft delete: only terminal sessions (409 otherwise); idempotent."""
        return await self._store.sessions.mark_deleted(session_id)

    async def trades(self, query: TickQuery) -> list[Trade]:
        await self.get(query.session_id)  # unknown id → 404, never an empty answer
        return await self._store.ticks.read_trades(query)

    async def orderbook(self, query: TickQuery) -> list[BookSnapshot]:
        await self.get(query.session_id)
        return await self._store.ticks.read_orderbook(query)

    async def export(
        self, session_id: str, data: DataType, fmt: ExportFormat, symbol: str | None = None
    ) -> AsyncIterator[bytes]:
        """The session's trades or snapshots as CSV or Parquet bytes, streamed page by page.
        Checks the session exists first, so an unknown id is a 404, not a broken stream."""
        session = await self.get(session_id)
        query = TickQuery(session_id, symbol=symbol)
        if data is DataType.TRADES:
            return encode(trade_pages(self._store.ticks.read_trades, query), fmt)
        pages = book_pages(self._store.ticks.read_orderbook, query)
        return encode(pages, fmt, depth=session.config.book_depth)

    async def quality(
        self, session_id: str
    ) -> tuple[Session, datetime, datetime, list[StreamQuality], dict[str, int]]:
        """Per symbol and data type: rows, gaps, coverage, latency, duplicates dropped
        (``ticktape.quality``); and the malformed messages per kind, for the whole feed."""
        session = await self.get(session_id)
        gaps = await self._store.ticks.read_gaps(session_id)
        duplicates, malformed = feed_totals(await self._store.sessions.list_events(session_id))
        start = session.started_at or session.created_at
        end = session.ended_at or utcnow()
        end = max(end, start)
        window = (to_us(start), to_us(end))
        out = []
        for symbol in session.symbols:
            for data_type in session.data_types:
                times = await self._store.ticks.read_times(session_id, symbol, data_type)
                dups = duplicates.get(symbol, 0) if data_type is DataType.TRADES else 0
                out.append(
                    stream_quality(
                        symbol, data_type, times.ts_us, times.recv_us, gaps, window, dups
                    )
                )
        return session, start, end, out, malformed

    # ------------------------------------------------------------------ backtests

    async def backtest_spec(
        self, spec: BacktestSpec, *, on_owner_loss: OwnerLossPolicy = OwnerLossPolicy.FAIL
    ) -> SessionSpec:
        """The session a validated backtest request asks for, checked against its source:
        a finished collect (or paper) session with recorded ticks, else 422."""
        field = "source_session"
        try:
            source = await self._store.sessions.get_session(spec.source_session)
        except SessionNotFound:
            raise ValidationError(
                f"source_session {clip(spec.source_session)!r} not found", field=field
            ) from None
        if source.kind not in (SessionKind.COLLECT, SessionKind.PAPER):
            raise ValidationError(
                f"source_session {source.id} is a {source.kind.value} session: replay a "
                "collect or paper session",
                field=field,
            )
        if not source.is_terminal:
            raise ValidationError(
                f"source_session {source.id} is still {source.status.value}: replay a "
                "finished session (stopped, completed or failed)",
                field=field,
            )
        if source.stats.records_collected == 0:
            raise ValidationError(
                f"source_session {source.id} has no recorded ticks to replay", field=field
            )
        symbols = tuple(spec.symbols) if spec.symbols else source.symbols
        missing = [s for s in symbols if s not in source.symbols]
        if missing:
            raise ValidationError(
                f"symbols {', '.join(missing)} were not recorded by source_session "
                f"{source.id} (it has {', '.join(source.symbols)})",
                field="symbols",
            )
        if len(set(symbols)) != len(symbols):
            raise ValidationError("duplicate symbols", field="symbols")
        run: dict[str, object] = spec.model_dump(mode="json")
        run[TICKS_TOTAL] = await self._replay_total(source, spec, symbols)
        return SessionSpec(
            kind=SessionKind.BACKTEST,
            symbols=symbols,
            exchange=source.exchange,
            data_types=source.data_types,
            config=SessionConfig(
                seed=spec.seed,
                on_owner_loss=on_owner_loss,
                strategy_run=json.dumps(run, sort_keys=True),
            ),
        )

    async def _replay_total(
        self, source: Session, spec: BacktestSpec, symbols: tuple[str, ...]
    ) -> int:
        """The ticks the replay will go through: the whole source's count (its final stats
        equal its stored ticks, invariant 7), or the stored ticks in the narrowed range
        (the window the runner reads: start <= ts < end, the chosen symbols)."""
        if spec.symbols is None and spec.start is None and spec.end is None:
            return source.stats.records_collected
        span = await self._store.ticks.span(source.id)
        if span is None:
            return 0
        lo = span[0] if spec.start is None else max(span[0], to_us(spec.start))
        hi = span[1] + 1 if spec.end is None else min(span[1] + 1, to_us(spec.end))
        if hi <= lo:
            return 0
        narrowed = None if spec.symbols is None else symbols
        counts = await self._store.ticks.count_window(source.id, lo, hi, narrowed)
        return counts.trades + counts.orderbook

    async def results(self, session_id: str) -> ResultSummary | None:
        """The session's results summary; None while it has none (404 for an unknown id)."""
        await self.get(session_id)
        return await self._store.results.summary(session_id)

    async def result_rows(
        self,
        session_id: str,
        table: ResultTable,
        *,
        after: int = -1,
        limit: int = DEFAULT_DATA_LIMIT,
    ) -> list[ResultRow]:
        await self.get(session_id)
        return await self._store.results.rows(session_id, table, after=after, limit=limit)

    async def trade_span(self, session_id: str, symbol: str) -> tuple[datetime, datetime] | None:
        """First and last trade time of ``symbol`` in the session (404 for an unknown id)."""
        await self.get(session_id)
        return await self._store.ticks.trade_span(session_id, symbol)

    async def trade_buckets(self, query: TickQuery, width_us: int) -> list[TradeBucket]:
        """The session's trades summed into chart buckets (see ``TickStore.trade_buckets``)."""
        await self.get(query.session_id)
        return await self._store.ticks.trade_buckets(query, width_us)


#: Key of the replay's tick total in a backtest's ``strategy_run`` (not a request field).
TICKS_TOTAL = "ticks_total"


def paper_spec(recording: SessionSpec, spec: PaperSpec) -> SessionSpec:
    """A paper session: ``recording`` (validated collect fields) with a strategy listening."""
    if recording.config.on_owner_loss is OwnerLossPolicy.RESUME:
        raise ValidationError(
            "a paper session cannot be resumed after its owner is lost (on_owner_loss: fail)",
            field="on_owner_loss",
        )
    run = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return replace(
        recording,
        kind=SessionKind.PAPER,
        config=replace(recording.config, strategy_run=run),
    )
