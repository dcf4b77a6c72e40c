"""The store contract: what every backend (memory, sqlite, questdb) promises.

The docstrings below *are* the contract; ``tests/conformance`` proves it on every
backend. All methods are coroutines. A backend translates its driver's errors
into :mod:`ticktape.errors` at this boundary (``raise StoreError(...) from exc``);
no driver exception escapes.

Visibility: when a write method returns, what it wrote is durable *and* visible
to every reader of the same store, in this process and in every other process
(DESIGN.md, invariant 2) — except :meth:`TickStore.write`, whose rows are durable
on return and visible after :meth:`TickStore.wait_visible`.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal, TypeVar

from ticktape.config import STORE_TIMEOUT_S
from ticktape.domain import DataType, Note, Session, SessionEvent, SessionKind, SessionStatus, Stats
from ticktape.errors import WriteTimedOut
from ticktape.throttle import LogThrottle
from ticktape.ticks import BookSnapshot, Gap, StreamTimes, TickBatch, TickCounts, Trade

DEFAULT_LIST_LIMIT: Final = 50
MAX_LIST_LIMIT: Final = 500
MAX_CHANGES: Final = 1000  # sessions one list_changed call returns at most
FAILURE_HOLD_S: Final = 5.0  # a write failure keeps the store "failing" at least this long
FAILURE_LOG_EVERY_S: Final = 60.0  # the same write failure is logged again after this long

T = TypeVar("T")
log = logging.getLogger(__name__)
DEFAULT_DATA_LIMIT: Final = 1000
MAX_DATA_LIMIT: Final = 10_000


def _us(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class Unchanged:
    """The type of :data:`UNCHANGED`, "leave this field as it is" in conditional writes."""

    _instance: Unchanged | None = None

    def __new__(cls) -> Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = Unchanged()


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """Filters for :meth:`SessionStore.list_sessions`. Empty filter = no restriction."""

    statuses: frozenset[SessionStatus] = frozenset()
    kind: SessionKind | None = None
    symbol: str | None = None
    include_deleted: bool = False
    limit: int = DEFAULT_LIST_LIMIT
    cursor: str | None = None
    oldest_first: bool = False  # default newest first: (created_at, id) descending


@dataclass(frozen=True, slots=True)
class LeaseScan:
    """What :meth:`SessionStore.scan_leases` found at ``now``.

    ``expired``: what :meth:`SessionStore.find_expired` returns. ``next_expiry``: the
    earliest effective lease expiry at or after ``now`` among the other non-terminal
    sessions, or a time before it (never after; an early answer only costs a pass) —
    None: none, or the backend does not say. A renewal only moves an expiry
    later and a new lease starts after ``now``, so no session found live here expires
    before ``next_expiry``; one its owner stops covering falls back to its own earlier
    lease and is expired then. The reconciler sleeps until ``next_expiry`` at most.

    ``live_owners``: owner tokens whose instance lease was live at ``now`` (those the
    scan read; it may leave out instances that own no active session), from which the
    reconcilers pick a preferred reaper per orphan — empty: the backend does not say,
    and every instance takes every orphan at once.
    """

    expired: list[Session]
    next_expiry: datetime | None = None
    live_owners: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[Session]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class ChangePage:
    """Sessions changed since a position of the change feed, and the position after them."""

    sessions: list[Session]
    cursor: str


@dataclass(frozen=True, slots=True)
class TickQuery:
    """A range of one session's ticks: ``start <= ts < end``, oldest first.

    ``after`` continues a previous page: only rows strictly after that row's key in
    the read order — (ts_us, trade_id, symbol) for trades, (ts_us, 0, symbol) for
    snapshots (see :meth:`TickStore.read_trades` / :meth:`TickStore.read_orderbook`).
    """

    session_id: str
    symbol: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    limit: int = DEFAULT_DATA_LIMIT
    after: tuple[int, int, str] | None = None


@dataclass(frozen=True, slots=True)
class TradeBucket:
    """The trades of one symbol in ``[start, start + width)``: what a price chart draws.

    ``open``/``close`` are the prices of the bucket's first and last trade in time
    order, ``high``/``low`` its extremes, ``count`` how many trades, ``volume`` the sum
    of their quantities.
    """

    start: datetime
    open: float
    high: float
    low: float
    close: float
    count: int
    volume: float


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Rows a :meth:`TickStore.write` call stored that were not stored before."""

    counts: TickCounts = field(default_factory=TickCounts)


@dataclass(frozen=True, slots=True)
class TickPosition:
    """Where a session's stored ticks end: what a resumed recording continues after.

    ``last_ts`` is the newest timestamp of any stored trade or snapshot of the
    session (None if it has none); ``last_trade_ids`` maps each symbol that has
    trades to its highest stored trade id.
    """

    last_ts: datetime | None = None
    last_trade_ids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Seal:
    """A session's stored ticks counted at one instant, and the fence that keeps them so.

    Made by :meth:`TickStore.seal`, handed to the transition or claim that ends the
    current owner's tenure. ``fence`` is backend-specific and opaque to callers:
    None where tick writes are fenced in the session's own transaction (SQLite,
    memory), so nothing late can land; on QuestDB it names the tenure and the last
    batch ``seq`` counted per tick table.

    ``cut``: rows stored but left out of ``counts`` because they belong to a lost
    owner's last write that had landed in only some tick tables when counted (QuestDB:
    one ILP request's tables commit on their own). The write was never acknowledged, so
    it is the crash's tail: cut in every table at the same batch, and said in the
    transition's detail (:meth:`note`). Zero on SQLite and memory, and whenever
    everything written was acknowledged.
    """

    counts: TickCounts
    fence: str | None = None
    cut: TickCounts = field(default_factory=TickCounts)

    def note(self) -> str:
        """The cut, for a transition's detail ("" if nothing was cut)."""
        if self.cut == TickCounts():
            return ""
        return (
            f"the owner's last write had landed in part and was left out: "
            f"{self.cut.trades} trades, {self.cut.orderbook} book snapshots"
        )


@dataclass(frozen=True, slots=True)
class StoredResults:
    """A backtest's or paper session's results, as written to and read from a store.

    Orders, fills and equity points are canonical JSON lines (``strategies``'
    ``canonical_line``: sorted keys, shortest round-trip floats), stored and returned
    byte for byte, so the results hash recomputed from what a store returns equals
    the run's on every backend. ``summary`` is a JSON object; ``status`` how the run
    ended (``completed``, ``stopped``, ``strategy_error``).
    """

    orders: list[str]
    fills: list[str]
    equity: list[str]
    summary: str
    hash: str
    status: str


#: ``ResultSummary.status`` of results still being written (a run in progress, or one
#: whose owner died): the rows of every whole part appended so far.
PARTIAL_RESULTS: Final = "partial"


@dataclass(frozen=True, slots=True)
class ResultPart:
    """A batch of a run's results, appended as the run goes (:meth:`ResultStore.append`).

    ``run`` names the run (a fresh token per replay). Each list's lines continue that
    table: the first has seq ``*_at`` (the rows of the run's earlier parts). The last
    part of a run carries how it ended (``status``), its summary and hash; earlier
    parts have status :data:`PARTIAL_RESULTS`.
    """

    run: str
    orders: list[str]
    fills: list[str]
    equity: list[str]
    orders_at: int = 0
    fills_at: int = 0
    equity_at: int = 0
    status: str = PARTIAL_RESULTS
    summary: str = "{}"
    hash: str = ""

    @property
    def starts_run(self) -> bool:
        return self.orders_at == self.fills_at == self.equity_at == 0


@dataclass(frozen=True, slots=True)
class ResultSummary:
    """What :meth:`ResultStore.summary` returns: the summary and the size of each table."""

    session_id: str
    hash: str
    status: str
    summary: str  # JSON object
    orders: int
    fills: int
    equity: int
    written_at: datetime


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One stored order, fill or equity point: its position (0, 1, ...) and JSON line."""

    seq: int
    body: str


@dataclass(frozen=True, slots=True)
class Purged:
    """What :meth:`SessionStore.purge` and :meth:`SessionStore.reclaim` removed.

    ``sessions`` were purged (gone from every read); the other counts are stored rows
    deleted with them. A backend that removes rows only by whole partitions
    (QuestDB) reports them under ``partitions`` (``table/partition`` names) and
    ``bytes`` (their size on disk) when :meth:`~SessionStore.reclaim` drops them.
    """

    sessions: int = 0
    events: int = 0
    trades: int = 0
    orderbook: int = 0
    gaps: int = 0
    results: int = 0  # result summaries, orders, fills and equity points
    partitions: tuple[str, ...] = ()
    bytes: int = 0

    def __add__(self, other: Purged) -> Purged:
        return Purged(
            self.sessions + other.sessions,
            self.events + other.events,
            self.trades + other.trades,
            self.orderbook + other.orderbook,
            self.gaps + other.gaps,
            self.results + other.results,
            self.partitions + other.partitions,
            self.bytes + other.bytes,
        )


ResultTable = Literal["orders", "fills", "equity"]
RESULT_TABLES: Final[tuple[ResultTable, ...]] = ("orders", "fills", "equity")


class SessionStore(abc.ABC):
    """Sessions, their transition history and their owner leases.

    **Leases.** A non-terminal session's lease is its own stored lease (set when
    it is started, claimed or renewed one by one) or, if later and if its owner's
    last :meth:`renew_instance` listed it in ``progress``, that owner's *instance
    lease*: an instance renews every session it runs with one write per
    heartbeat, and a session it owns but does not run (a create whose launch
    failed) is left to its own lease. A session whose own lease is None has no
    lease at all, whatever its owner's instance lease: that is how an owner
    releases one session (:meth:`renew_lease` with None). Every method that
    returns a session returns this effective lease in ``lease_expires_at``, and
    every ``lease_expired_before`` check and :meth:`find_expired` use it.

    **Progress.** While a session is non-terminal, has a lease and is listed by
    its owner's last :meth:`renew_instance`, its stats are the ones published
    there; otherwise the stored ones. A terminal session's stats are the stored
    ones.
    """

    @abc.abstractmethod
    async def create_session(
        self, session: Session, *, actor: str, start_lease_until: datetime | None = None
    ) -> Session:
        """Store a new session and its creation event; return the stored session.

        ``session.status`` must be ``pending`` and ``session.version`` 1; the event
        has ``from_status=None``, ``to_status=pending``, reason ``created``.
        If ``session.idempotency_key`` is set and a session with that key already
        exists (deleted or not), nothing is written and *that* session is returned.
        A session with the same id (and no matching key) raises
        :class:`~ticktape.errors.SessionConflict`: a create never overwrites.
        On return the session is durable and visible to every reader.

        With ``start_lease_until`` (the owner starts the session at once), the
        session's ``pending`` → ``running`` transition (reason ``started`` by
        ``actor``, the lease until ``start_lease_until``, ``started_at`` set) is
        written in the same atomic write as its creation: both events are recorded,
        no reader ever sees the one without the other, and the ``running`` session
        (version 2) is returned. Not applied to an existing session returned for
        its idempotency key.
        """

    @abc.abstractmethod
    async def get_session(self, session_id: str) -> Session:
        """The session with this id, including soft-deleted ones.

        Raises :class:`~ticktape.errors.SessionNotFound` if no session has this id
        (never a made-up state).
        """

    @abc.abstractmethod
    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        """Sessions matching ``query``, newest first (``created_at`` desc, then ``id`` desc).

        At most ``query.limit`` sessions. ``next_cursor`` is an opaque string that,
        passed back as ``query.cursor`` with the same filters, continues strictly
        after the last returned session; it is None when there are no more.
        Soft-deleted sessions are left out unless ``include_deleted``. A malformed
        cursor, or a ``limit`` outside 1..``MAX_LIST_LIMIT``, raises
        :class:`~ticktape.errors.ValidationError`.
        """

    @abc.abstractmethod
    async def count_sessions(self, query: SessionQuery) -> int:
        """How many sessions match ``query``'s filters (``limit``/``cursor`` ignored)."""

    @abc.abstractmethod
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
        """Move a session to ``to_status`` if, and only if, it is still at ``expected_version``.

        Compare-and-set: of two concurrent calls with the same expected version at
        most one succeeds. On success the version is incremented, ``started_at``
        is set when entering ``running`` (if unset), ``ended_at`` when entering a
        terminal status, ``reason`` is set to ``reason``, ``owner``/``lease``/``stats``
        are replaced when given, and an event (from, to, actor, reason, detail, time)
        is recorded. Returns the updated session.

        Raises :class:`SessionNotFound` for an unknown id,
        :class:`InvalidTransition` if the stored status cannot move to ``to_status``
        (checked first: a terminal session never changes), and
        :class:`TransitionRace` if the version differs. On any error nothing changed.

        With ``lease_expired_before``, the move also requires the stored lease to
        have expired before that time (no lease counts as expired); otherwise it is
        a :class:`TransitionRace`. The reconciler uses it so that an owner that
        renewed its lease in the meantime (which does not change the version) is
        never reaped.

        With ``seal`` (from :meth:`TickStore.seal`, and ``stats`` made from its
        counts), the transition also closes the current owner's tenure at the seal:
        from then on ticks that owner's writes store late — after passing the
        fencing check but landing after the seal — are never counted, read or
        positioned, so the stats stay equal to the stored rows (invariant 7).
        Every transition to a terminal status of a session that ran carries one.

        With ``note``, the history gets that note (an event from and to the status the
        session is leaving, by ``actor``, as :meth:`add_event` records it) just before
        the transition's event, in the same atomic step: both or neither. The runtime
        records a runner's own tally so, with its terminal transition (one write).

        ``read``: the session as the caller just read it (a shutdown's
        :meth:`find_owned`), passed explicitly so that a backend whose transition must
        read the session before it writes may start from it instead. It changes no
        answer: a backend uses it only if it is at ``expected_version`` and carries the
        backend's own record of that read (:attr:`Session.stored_row`), never under
        ``lease_expired_before`` (a lease may be renewed without a new record), and a
        record made stale since fails the write's own check and the session is read
        again. A backend that reads inside its atomic step (SQLite, memory) ignores it.
        """

    @abc.abstractmethod
    async def renew_lease(
        self,
        session_id: str,
        *,
        owner: str,
        lease_expires_at: datetime | None,
        stats: Stats | None = None,
    ) -> Session:
        """Extend the session's own lease (and update its stats), one session at a time.

        The runtime's heartbeat uses :meth:`renew_instance` instead (one write for all
        of an instance's sessions); this is for a release and for tests.

        Succeeds only if the session is in a non-terminal status and its owner is
        ``owner``; otherwise raises :class:`~ticktape.errors.LeaseLost` (or
        :class:`SessionNotFound` for an unknown id) and changes nothing. Does not
        change the version. Returns the session as stored after the renewal, so the
        owner sees e.g. a ``stopping`` requested elsewhere.

        ``lease_expires_at`` is stored as given, even when it is earlier than the
        stored lease (the effective lease is still the later of it and the owner's
        instance lease). None *releases* the session (hands it over on shutdown):
        it has no lease any more, its owner's instance lease no longer covers it,
        :meth:`find_expired` returns it and another instance may :meth:`claim` it
        at once.
        """

    @abc.abstractmethod
    async def renew_instance(
        self, owner: str, *, lease_expires_at: datetime, progress: Mapping[str, Stats]
    ) -> list[Session]:
        """Heartbeat of an instance: renew the lease of every session ``owner`` owns, in
        one write whatever their number, and publish their progress.

        Stores ``owner``'s instance lease as ``lease_expires_at`` (replacing the
        previous one, even if later) and ``progress`` (session id → stats, replacing
        the whole previous map): the sessions listed there are the ones the instance
        lease covers. Does not change any session's version or history.
        Returns the non-terminal sessions whose owner is exactly ``owner`` after the
        renewal, as :meth:`get_session` would: a session ``owner`` runs that is
        missing has been finalised or claimed (its runner must stop writing); one
        that is ``stopping`` was asked to stop, possibly elsewhere.

        Every store write of a heartbeat is this one call: its cost does not grow
        with the number of sessions (``tests/conformance`` counts it).
        """

    @abc.abstractmethod
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
        """Take over a non-terminal session whose owner is gone: new owner and lease, same status.

        Compare-and-set, like :meth:`transition`: succeeds only if the session is
        still at ``expected_version`` and, when ``lease_expired_before`` is given,
        its stored lease expired before that time (no lease counts as expired).
        Of concurrent claims — or a claim and a transition — made with the same
        expected version, at most one succeeds, so two instances never both own it.

        On success ``owner`` and ``lease_expires_at`` are replaced and the version is
        incremented; status, reason, stats, ``started_at`` and ``ended_at`` are
        kept. An event is recorded with ``from_status`` = ``to_status`` = the
        current status, ``actor``, ``reason``, ``detail`` and the time. Returns the
        updated session. From then on the previous owner's :meth:`renew_lease`
        and :meth:`TickStore.write` calls raise :class:`~ticktape.errors.LeaseLost`,
        and with ``seal`` the previous tenure is closed as in :meth:`transition`:
        the new owner's recording continues after the sealed ticks only.

        Raises :class:`SessionNotFound` for an unknown id,
        :class:`~ticktape.errors.InvalidTransition` if the session is terminal
        (checked first, whatever the version), and :class:`TransitionRace` if the
        version differs or the lease has not expired. On any error nothing changed.
        """

    @abc.abstractmethod
    async def add_event(
        self,
        session_id: str,
        *,
        actor: str,
        reason: str,
        detail: str | None = None,
        owner: str | None = None,
    ) -> SessionEvent:
        """Record a note in the session's history without changing its state.

        The event's ``from_status`` and ``to_status`` are both the current status.
        Raises :class:`SessionNotFound` for an unknown id. With ``owner``, the note is
        recorded only while the session is non-terminal and owned by ``owner``, in the
        same atomic step (else :class:`LeaseLost`): a runner that lost its lease never
        adds a note after the session was reaped or claimed.
        """

    @abc.abstractmethod
    async def list_events(self, session_id: str) -> list[SessionEvent]:
        """The session's history, oldest first (``seq`` 1, 2, ...).

        The first event is the creation. Raises :class:`SessionNotFound` for an unknown id.
        """

    @abc.abstractmethod
    async def mark_deleted(self, session_id: str) -> Session:
        """Soft delete: hide a terminal session from listings; idempotent.

        Raises :class:`SessionNotFound` for an unknown id and
        :class:`~ticktape.errors.SessionConflict` if the session is not terminal.
        """

    @abc.abstractmethod
    async def find_finished(
        self, ended_before: datetime, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Session]:
        """Terminal sessions (soft-deleted ones too) that ended before ``ended_before``: what
        retention (``ticktape gc``) may purge. Oldest end first, then by id; at most
        ``limit``; with ``after`` (the ``(ended_at, id)`` of the last one returned) only
        those strictly after it. A purged session is never returned."""

    @abc.abstractmethod
    async def purge(self, session_ids: Sequence[str], *, ended_before: datetime) -> Purged:
        """Remove each of ``session_ids`` that is terminal and ended before ``ended_before``,
        with its history, ticks, gaps and results; return what was removed.

        The check and the removal are one compare-and-set per session: a session that
        is not terminal, ended later, is unknown or is already purged is skipped and
        nothing of it changes (a terminal session never changes again, so no claim,
        resume or transition can race with its purge). Idempotent.

        Afterwards the session is :class:`~ticktape.errors.SessionNotFound` on every
        read and is in no list, count, change feed, :meth:`find_expired` or
        :meth:`find_finished`. Rows are deleted at once where the backend can delete
        (SQLite, memory; in bounded transactions, so a long purge never holds the
        writer for long: heartbeats go first). QuestDB cannot delete rows: its
        sessions are purged by a tombstone row, and their rows go when
        :meth:`reclaim` drops the partitions that hold nothing else.
        """

    async def reclaim(self, ended_before: datetime) -> Purged:
        """Free the space purged sessions leave behind, where :meth:`purge` could not.

        QuestDB drops every partition, older than ``ended_before``, of the tick, gap,
        result and session-log tables whose rows all belong to purged sessions; a
        partition that also holds a session that is kept is kept whole. This default
        is for backends whose :meth:`purge` deletes the rows itself: nothing to do.
        """
        return Purged()

    @abc.abstractmethod
    async def find_expired(self, now: datetime) -> list[Session]:
        """Non-terminal sessions whose effective lease expired before ``now`` (or that have
        no lease)."""

    async def scan_leases(self, now: datetime) -> LeaseScan:
        """The reconciler's one read per pass (:class:`LeaseScan`): the sessions
        :meth:`find_expired` returns, and when the next lease of the others expires.
        A backend reads the full session only of the expired ones (the pass costs
        O(expired) parsing, not O(active)). This default knows no next expiry."""
        return LeaseScan(await self.find_expired(now))

    @abc.abstractmethod
    async def find_owned(self, owner_prefix: str) -> list[Session]:
        """Non-terminal sessions whose owner starts with ``owner_prefix``."""

    @abc.abstractmethod
    async def list_changed(self, since: str | None, *, limit: int = MAX_CHANGES) -> ChangePage:
        """Sessions whose stored state changed after position ``since``, oldest change first.

        ``since=None`` asks for the current position only: no sessions, and a
        ``cursor`` from which every later change will be returned. Otherwise each
        changed session is returned once, at its current state (several changes of
        one session may show as one), with the cursor to pass next time; at most
        ``limit`` sessions, the rest on the next call. Every change of a session's
        stored state counts — creation, transition, claim, a session's own lease
        renewal, soft delete — made by any instance. An instance's heartbeat
        (:meth:`renew_instance`) changes no session's stored state and is not in
        the feed: running sessions' progress is read with :meth:`get_session`.
        A change is never missed; a session may be returned again without having
        changed (a backend whose positions are timestamps from several clocks
        re-reads a short window, so that a change committed late is not skipped).
        A cursor is opaque: pass back only what this method returned.
        """


class TickStore(abc.ABC):
    """Recorded market data, tagged with the session that recorded it."""

    @abc.abstractmethod
    async def write(self, batches: list[TickBatch], *, owner: str) -> WriteResult:
        """Store batches of trades and order-book snapshots; return what was new.

        Fencing: the write is accepted only while every batch's session is
        non-terminal and owned by ``owner``; otherwise it raises
        :class:`~ticktape.errors.LeaseLost` (a stale owner's late writes are rejected).
        Where the check cannot share a transaction with the rows (QuestDB), a write
        that passed it just before a :meth:`seal` and lands after it is stored but
        fenced: no count, read or position ever includes it.
        Idempotent per tick: a trade is identified by (session, symbol, trade_id),
        a snapshot by (session, symbol, ts); storing one again changes nothing and
        is not counted. A feed never changes a trade's timestamp, so a retried or
        replayed trade comes again with the same ts; a backend whose deduplication
        must include the timestamp (QuestDB) may keep a trade id stored again at
        *another* ts as a second row, and declares so (the conformance capability
        ``trade_identity_without_ts``). On return the rows are durable (acknowledged); they are
        visible after :meth:`wait_visible`. On error, nothing of *this* call may be
        assumed stored (callers retry the same batches, which is safe).
        """

    async def write_sessions(
        self, writes: Sequence[list[TickBatch]], *, owner: str
    ) -> list[WriteResult | Exception]:
        """Store several sessions' batches at once; one answer per item of ``writes``.

        Each item is one session's batches (all of the same session) and is answered,
        in order, exactly as :meth:`write` would answer it alone: a
        :class:`WriteResult`, or the error that call would have raised — fencing,
        idempotency and durability are per item. A stale session gets
        :class:`~ticktape.errors.LeaseLost` for itself only and none of its rows are
        stored; the other items are stored. A failure of the store itself (unavailable,
        busy, timed out) answers every item it touched with that error (nothing of
        those items may be assumed stored, a retry is safe). Errors are answers, not
        raised: the call raises only for a failure of the whole call before any item
        was tried. A backend submits every item at once to the write grouping it
        already has (one transaction or one send for the lot where it fits); this
        default asks :meth:`write` item by item.
        """
        answers: list[WriteResult | Exception] = []
        for batches in writes:
            try:
                answers.append(await self.write(batches, owner=owner))
            except Exception as exc:
                answers.append(exc)
        return answers

    @abc.abstractmethod
    async def wait_visible(self, timeout_s: float, *, committed_by: datetime | None = None) -> None:
        """Return once every write acknowledged so far is visible to every reader — or,
        given ``committed_by`` (a past time), every write committed by then.

        A backend that applies writes later (QuestDB's WAL) waits for what it had
        committed as of a state it read at or after ``committed_by`` — the earliest such
        state it noted (:meth:`note_committed`), else one read now — rather than for
        everything committed since, which other writers keep moving. Raises
        :class:`~ticktape.errors.TicksNotVisible` if that does not happen within
        ``timeout_s``, or :class:`~ticktape.errors.StoreError` if it cannot happen
        without an operator (a suspended QuestDB table).
        """

    async def note_committed(self) -> None:
        """Note what has been committed now, for a later :meth:`wait_visible` whose
        ``committed_by`` is at or before now. Nothing to note where an acknowledged
        write is visible at once (the default)."""
        return None

    @abc.abstractmethod
    async def count(self, session_id: str) -> TickCounts:
        """Visible trades and order-book snapshots stored for the session (0 if none)."""

    async def seal(self, session_id: str, *, acknowledged: bool = False) -> Seal:
        """Count the session's ticks for a transition that ends its owner's tenure.

        Counts what is visible, as :meth:`count` does, at one instant per tick
        table, and returns the counts with the fence that makes them final once
        the seal is passed to :meth:`SessionStore.transition` or
        :meth:`SessionStore.claim`: rows of this tenure that become visible later
        are never counted or read. Call :meth:`wait_visible` first to include
        every write acknowledged so far. A seal that no transition uses changes
        nothing.

        ``acknowledged``: the caller is the tenure's owner, every tick write of the
        tenure was acknowledged (none failed, timed out or is still in flight) and
        :meth:`wait_visible` returned after the last. A backend whose one write can
        land in part (QuestDB: one request's tables commit on their own) then leaves
        out its check for such a write; with False (a reaper's or claimant's seal, an
        owner whose write failed) it always checks.

        This default is for backends that fence tick writes in the session's own
        transaction (nothing can land late): the counts, and no fence.
        """
        return Seal(await self.count(session_id))

    def expect_seals(self, sessions: int, within_s: float) -> None:
        """A hint before many sessions end together (an instance's shutdown): about
        ``sessions`` :meth:`seal` calls follow within ``within_s`` seconds. A backend
        whose seals of sessions ending together share their reads (QuestDB) may hold
        the first ones back, up to then, so that they share one read; it changes no
        count. This default ignores it."""
        return

    def seals_due_within(self, within_s: float) -> None:
        """The seals announced by :meth:`expect_seals` and not made yet follow within
        ``within_s`` seconds from now instead (a shutdown whose stop requests are recorded:
        its runs drain from then on). This default ignores it."""
        return

    def seal_not_coming(self) -> None:
        """One of the seals announced by :meth:`expect_seals` will not come: its run
        ended without one (it lost its lease, was reaped or claimed meanwhile, or was
        cancelled). A backend holding seals back for the announced ones stops waiting
        for it. This default ignores it."""
        return

    def seals_done(self) -> None:
        """The end of :meth:`expect_seals`' stop: the sessions it announced ended (or
        the shutdown's grace ran out). A backend may log what the stop cost it; this
        default does nothing."""
        return

    @abc.abstractmethod
    async def position(self, session_id: str) -> TickPosition:
        """Where the session's visible ticks end (see :class:`TickPosition`).

        ``last_ts`` is the newest ``ts`` over its trades and snapshots, every
        symbol together; ``last_trade_ids`` has one entry per symbol with at least
        one trade: its highest ``trade_id``. An unknown session, or one without
        ticks, gives ``TickPosition()`` (no error).
        """

    @abc.abstractmethod
    async def read_trades(self, query: TickQuery) -> list[Trade]:
        """Trades of the session in ``query``'s range, oldest first (ts, then trade_id, then
        symbol: a total order, so ``query.after`` pages through every row exactly once)."""

    @abc.abstractmethod
    async def read_orderbook(self, query: TickQuery) -> list[BookSnapshot]:
        """Order-book snapshots in ``query``'s range, oldest first (ts, then symbol), after
        ``query.after`` when given."""

    @abc.abstractmethod
    async def read_times(self, session_id: str, symbol: str, data_type: DataType) -> StreamTimes:
        """Exchange and receive times (µs) of one stream's visible rows, in arrival order
        (trades by trade id, snapshots by time); a row stored without a receive time has
        -1. Every row of the stream: for the quality report, not for paging."""

    @abc.abstractmethod
    async def write_gaps(self, session_id: str, gaps: list[Gap], *, owner: str) -> None:
        """Store gaps of the session's recording (:class:`~ticktape.feeds.contract.Gap`).

        Fenced like :meth:`write`: accepted only while the session is non-terminal and
        owned by ``owner``, else :class:`~ticktape.errors.LeaseLost` and nothing stored.
        Idempotent: a gap is identified by (session, symbol, data type, start, cause);
        storing it again changes nothing. On return the rows are durable and visible.
        """

    @abc.abstractmethod
    async def read_gaps(self, session_id: str) -> list[Gap]:
        """The session's gaps, oldest first (start, then symbol, data type, cause); [] if none."""

    @abc.abstractmethod
    async def read_window(
        self,
        session_id: str,
        start_us: int,
        end_us: int,
        symbols: tuple[str, ...] | None = None,
    ) -> list[TickBatch]:
        """Every visible tick of the session with ``start_us <= ts < end_us``, columnar.

        The replay path: a reader walks a session in consecutive windows and never
        holds more than one window's ticks (``ticktape.runners.replay``). Returns at
        most one :class:`TradeBatch` (ordered by ts, then trade id) and one
        :class:`BookBatch` (ordered by ts) per symbol, symbols in sorted order, only
        of ``symbols`` when given; values exactly as stored (``read_trades`` /
        ``read_orderbook`` return the same ticks as rows). Snapshots of one symbol
        stored with fewer levels than the deepest in the window are padded with NaN
        prices and zero quantities. Batches carry ``seq`` 0. An unknown session, or
        an empty window, gives ``[]``.
        """

    @abc.abstractmethod
    async def count_window(
        self,
        session_id: str,
        start_us: int,
        end_us: int,
        symbols: tuple[str, ...] | None = None,
    ) -> TickCounts:
        """Visible trades and order-book snapshots with ``start_us <= ts < end_us``, only
        of ``symbols`` when given: the ticks :meth:`read_window` would return over that
        range (a narrowed replay's total). An unknown session gives zeros."""

    async def span(self, session_id: str) -> tuple[int, int] | None:
        """Exchange times (us) of the session's oldest and newest visible tick, or None."""
        first = [
            *(t.ts for t in await self.read_trades(TickQuery(session_id, limit=1))),
            *(b.ts for b in await self.read_orderbook(TickQuery(session_id, limit=1))),
        ]
        last = (await self.position(session_id)).last_ts
        if not first or last is None:
            return None
        return _us(min(first)), _us(last)

    @abc.abstractmethod
    async def trade_span(self, session_id: str, symbol: str) -> tuple[datetime, datetime] | None:
        """The ``ts`` of the symbol's first and last visible trade in the session, or
        None if it has none (an unknown session too)."""

    @abc.abstractmethod
    async def trade_buckets(self, query: TickQuery, width_us: int) -> list[TradeBucket]:
        """The trades in ``query``'s range (``query.symbol`` is required) summed into
        buckets of ``width_us`` microseconds, oldest first, at most ``query.limit``.

        Buckets are aligned to the Unix epoch (each ``start`` is a multiple of
        ``width_us`` after 1970-01-01T00:00Z) and ``width_us`` must divide a day
        (86 400 000 000), so that a backend sampling by calendar days (QuestDB's
        ``SAMPLE BY``) draws the same edges. Only buckets with trades are returned.
        The buckets agree with :meth:`read_trades` over the same range: counts,
        extremes, quantities; ``open``/``close`` are the first/last trade by ``ts``
        (between trades with the very same ``ts`` a backend may pick either).
        Raises :class:`~ticktape.errors.ValidationError` for a missing symbol or a
        width that does not divide a day.
        """


class WriteHealth:
    """Whether a store's writes work: its last failure, logged once per cause and counted,
    reported until a write succeeds again (and at least ``hold_s``: writes that fail
    between ones that work keep the store failing, not flapping)."""

    def __init__(self, name: str, hold_s: float = FAILURE_HOLD_S) -> None:
        self.name = name
        self.hold_s = hold_s
        self.failures = 0
        self._failure: tuple[str, float] | None = None
        self._failed_since_success = False
        self._lines = LogThrottle(FAILURE_LOG_EVERY_S)  # once per cause and interval

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        message = str(exc) or type(exc).__name__
        now = time.monotonic()
        if self._lines.event(key=message, now=now) is not None:
            log.error("%s writes are failing: %s", self.name, message)
        self._failure = (message, now)
        self._failed_since_success = True

    def succeeded(self) -> None:
        if self._failure is not None and self._failed_since_success:
            log.info("%s writes work again (after: %s)", self.name, self._failure[0])
        self._failed_since_success = False

    def mark(self) -> tuple[int, tuple[str, float] | None]:
        """This health as it is now: what :meth:`forgive` compares and restores."""
        return self.failures, self._failure

    def forgive(
        self,
        before: tuple[int, tuple[str, float] | None],
        after: tuple[int, tuple[str, float] | None],
        errors: int,
    ) -> None:
        """Forget the failures of one call that its immediate retry fixed (the store
        boundary's, ``store/retrying.py``): with ``before`` marked as the call began,
        ``after`` as its last failed attempt ended and ``errors`` its failed attempts,
        the reported failure goes back to what it was at ``before`` — if a use has
        worked since, nothing failed after ``after`` and no more failures came in
        between than the call's own. Still counted in :attr:`failures` and logged."""
        if (
            not self._failed_since_success
            and self.failures == after[0]
            and self.failures - before[0] <= errors
        ):
            self._failure = before[1]

    @property
    def failure(self) -> str | None:
        if self._failure is None:
            return None
        message, at = self._failure
        if self._failed_since_success or time.monotonic() - at < self.hold_s:
            return message
        return None


async def bounded_write(future: asyncio.Future[T], timeout_s: float, what: str) -> T:
    """Await a queued write's answer for at most ``timeout_s``; past it the write fails as
    :class:`~ticktape.errors.WriteTimedOut` (503 ``store_unavailable``) and ``future`` is
    cancelled, so a write that has not started yet never runs (one under way may still
    complete: callers' writes are idempotent or compare-and-set, so a retry cannot apply
    it twice)."""
    try:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns an answer that
        # reaches the loop in the turn its caller is cancelled and drops the cancel.
        async with asyncio.timeout(timeout_s):
            return await future
    except TimeoutError:
        raise WriteTimedOut(
            f"{what}: the store did not finish the write within {timeout_s:g}s "
            "(limit TICKTAPE_STORE_TIMEOUT_S)"
        ) from None


async def gather_answers(
    futures: Sequence[asyncio.Future[T]], timeout_s: float | None, what: str
) -> list[T | Exception]:
    """Each queued write's answer, in order: its result or its error (a
    :meth:`TickStore.write_sessions` answer). Past ``timeout_s`` the futures not
    answered yet are cancelled and answered with :class:`~ticktape.errors.WriteTimedOut`,
    as :func:`bounded_write` does for one."""
    if futures:
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.wait(futures)
        except TimeoutError:
            for future in futures:  # a write not started yet never runs
                future.cancel()
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
    answers: list[T | Exception] = []
    for future in futures:
        if future.cancelled():
            answers.append(
                WriteTimedOut(
                    f"{what}: the store did not finish the write within {timeout_s}s "
                    "(limit TICKTAPE_STORE_WRITE_TIMEOUT_S)"
                )
            )
            continue
        exc = future.exception()
        if exc is None:
            answers.append(future.result())
        elif isinstance(exc, Exception):
            answers.append(exc)
        else:
            raise exc
    return answers


class ResultStore(abc.ABC):
    """Results of backtest and paper sessions: orders, fills, equity curve, summary."""

    @abc.abstractmethod
    async def write(self, session_id: str, results: StoredResults, *, owner: str) -> None:
        """Replace the session's results with ``results`` (everything written before goes).

        Fenced like :meth:`TickStore.write`: accepted only while the session is
        non-terminal and owned by ``owner``, otherwise
        :class:`~ticktape.errors.LeaseLost` and nothing changes. A reader sees the
        previous results or these, never a mix. On return they are durable and
        visible to every reader.
        """

    @abc.abstractmethod
    async def append(self, session_id: str, part: ResultPart, *, owner: str) -> None:
        """Add ``part``'s rows to the session's results and make them visible with it.

        Fenced like :meth:`write`. A part of a run other than the stored one (``run``)
        must start it (every ``*_at`` 0) and replaces everything stored before; a part
        of the stored run must continue its rows exactly (``*_at`` = the rows stored),
        else :class:`~ticktape.errors.ValidationError` and nothing changes. The
        summary then has the part's status, summary and hash and the rows' counts.
        Readers see whole parts only: rows are returned only below the summary's
        counts, so a part that failed half-way is never shown (its retry stores the
        same rows again, idempotently). On return they are durable and visible.
        """

    @abc.abstractmethod
    async def summary(self, session_id: str) -> ResultSummary | None:
        """The session's stored results summary, or None if it has none (status
        :data:`PARTIAL_RESULTS` while a run is still appending, or if it never ended)."""

    @abc.abstractmethod
    async def rows(
        self,
        session_id: str,
        table: ResultTable,
        *,
        after: int = -1,
        limit: int = DEFAULT_DATA_LIMIT,
    ) -> list[ResultRow]:
        """Rows of ``table`` with ``seq > after``, in ``seq`` order, at most ``limit``.

        ``limit`` outside 1..``MAX_DATA_LIMIT`` raises
        :class:`~ticktape.errors.ValidationError`. No results: ``[]``.
        """


class Store(abc.ABC):
    """A session store, a tick store and a result store over one database, opened by URL."""

    url: str
    sessions: SessionStore
    ticks: TickStore
    #: A write, or a read, not finished after this long fails as unavailable (set from
    #: the settings by whoever opens the store; see config.STORE_TIMEOUT_S).
    timeout_s: float = STORE_TIMEOUT_S
    results: ResultStore

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema (idempotent, safe on every start)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    @property
    def write_failure(self) -> str | None:
        """Why the store's writes are failing now (the last error), or None if they work.

        Backends that see their own write path fail (SQLite's writer) report it here
        until a write succeeds again; the readiness check and /metrics read it.
        """
        return None

    @property
    def write_failures(self) -> int:
        """How many times the store's write path has failed since it was opened."""
        return 0

    @property
    def write_health(self) -> WriteHealth | None:
        """The :class:`WriteHealth` behind :attr:`write_failure`, for the store boundary
        to forgive a failure its retry fixed at once; None where the backend keeps its
        own (SQLite's writer) or none."""
        return None

    @property
    def symbol_misses(self) -> dict[tuple[str, str], int]:
        """Session ids a by-id read of the backend did not find at first, by (table,
        outcome), ever: ``rechecked`` (read again another way) and ``confirmed`` (found
        then: the first read missed stored rows). Only QuestDB counts them: its session
        log's lookups (``LogLookups``, table ``session_log``) and its seals' tick counts
        (tables ``trades``, ``orderbook``; docs/questdb.md); empty elsewhere."""
        return {}

    def disk_usage_bytes(self) -> int | None:
        """Bytes the store's files take on this machine, or None if it cannot tell
        (a remote server): what ``TICKTAPE_DISK_BUDGET_MB`` is checked against."""
        return None

    async def check_ready(self) -> None:
        """Raise a :class:`~ticktape.errors.StoreError` unless the store can serve now.

        The default reads one session (a round trip to the database). Backends that
        know their write path failed (:attr:`write_failure`) also try a write.
        """
        await self.sessions.list_sessions(SessionQuery(limit=1))

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
