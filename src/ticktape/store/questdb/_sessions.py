"""The QuestDB backend: sessions as an append-only log with compare-and-set.

QuestDB has no constraints, ``UPDATE`` on a WAL table is asynchronous, and an
``UPDATE`` on a non-WAL table rewrites whole columns (its cost: docs/questdb.md).
So sessions are kept in ``tt_session_log``, a
non-WAL table where every change — transition, note, lease renewal, soft
delete — appends one row holding the whole session state after it. The current
state is the newest row of the session (``LATEST ON ts PARTITION BY id``).

Compare-and-set: a writer opens a transaction and INSERTs the new row; while the
transaction is open QuestDB refuses every other writer of the table ("table
busy"), so reading the session's newest ``row_seq`` and committing only if it is
still the row the change was computed from is atomic across connections,
processes and instances. A commit on a non-WAL table is visible to every reader
at once: read-your-writes needs nothing more (invariant 2). Events are the rows
whose ``row_kind`` is ``transition`` or ``note``, numbered by ``event_seq``.
See ``docs/questdb.md`` for the design and its measured costs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ticktape.config import (
    DEFAULT_RETRY,
    LOOP_SLICE_S,
    QUESTDB_APPEND_ROUNDS,
    QUESTDB_INSTANCE_INSERT_ROUNDS,
    RetryPolicy,
)
from ticktape.domain import (
    ACTIVE_STATUSES,
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
    TransitionRace,
    ValidationError,
)
from ticktape.slices import LoopSlicer
from ticktape.store.base import (
    MAX_CHANGES,
    MAX_LIST_LIMIT,
    UNCHANGED,
    ChangePage,
    LeaseScan,
    Purged,
    Seal,
    SessionPage,
    SessionQuery,
    SessionStore,
    Store,
    Unchanged,
    WriteHealth,
)
from ticktape.store.questdb._commit import Append, GroupCommitter, keys_sql
from ticktape.store.questdb._db import (
    ERRORS,
    SCHEMA,
    SESSION_LOG_COLUMNS,
    Connections,
    LogLookups,
    QuestDBAddress,
    adopt_idle_timeout,
    check_schema,
    ensure_session_keys,
    ensure_session_symbols,
    ensure_tick_send_columns,
    in_list,
    insert_rows,
    log_params,
)
from ticktape.store.questdb._fence import TICK_FLOOR_MARGIN_US, Fence, Tenure
from ticktape.store.questdb._grouping import Grouper, Waiting
from ticktape.store.questdb._results import QuestDBResultStore
from ticktape.store.questdb._scan import (
    HEARTBEAT_SCAN_OVERLAP_S,
    LEASE_COLUMNS,
    ActiveSessions,
    Statement,
)
from ticktape.store.questdb._ticks import QuestDBTickStore
from ticktape.store.rules import (
    after_position,
    apply_claim,
    apply_start,
    apply_transition,
    check_limit,
    check_note_owner,
    decode_cursor,
    dump_progress,
    effective,
    encode_cursor,
    from_us,
    load_progress,
    matches,
    parse_config,
    parse_data_types,
    parse_symbols,
    to_us,
)

log = logging.getLogger(__name__)

#: An instance row whose lease expired this long ago is taken over by a new instance.
INSTANCE_ROWS_KEPT = timedelta(hours=1)
PARSED_PROGRESS_KEPT = 64  # instances whose parsed progress map is kept (_progress)
CHANGE_OVERLAP_S = 2.0  # list_changed re-reads this much before the newest row it saw
CHANGE_OVERLAP_US = int(CHANGE_OVERLAP_S * 1_000_000)
MAX_BATCHED_READS = 256  # sessions read in one query by _NewestRows, at most
_COLUMNS = tuple(name for name, _ in SESSION_LOG_COLUMNS)
_SELECT = ", ".join(_COLUMNS)
_INSERT = f"INSERT INTO tt_session_log ({_SELECT}) VALUES ({', '.join('%s' for _ in _COLUMNS)})"
_LATEST = f"SELECT {_SELECT} FROM tt_session_log LATEST ON ts PARTITION BY id"
_EVENT_KINDS = "('transition', 'note')"
#: ``row_kind`` of a purged session's last row (a tombstone: QuestDB cannot delete rows).
_PURGED = "purged"
_ROW_KIND = _COLUMNS.index("row_kind")
_OWNER = _COLUMNS.index("owner")
_STATUS = _COLUMNS.index("status")
_CREATED_AT = _COLUMNS.index("created_at")
_ID = _COLUMNS.index("id")
_ROW_SEQ = _COLUMNS.index("row_seq")
_LEASE_STATUS = LEASE_COLUMNS.index("status")
_TERMINAL_SQL = "('stopped', 'completed', 'failed')"
#: Tables whose partitions :meth:`QuestDBSessionStore.reclaim` may drop, with the column
#: naming each row's session. The session log comes last: its partitions go only once
#: they hold no tombstone, so a purged session never comes back.
_RECLAIMED_TABLES = (
    ("tt_trades", "session_id", "trades"),
    ("tt_orderbook", "session_id", "orderbook"),
    ("tt_gaps", "session_id", "gaps"),
    ("tt_result_summary", "session_id", "results"),
    ("tt_result_orders", "session_id", "results"),
    ("tt_result_fills", "session_id", "results"),
    ("tt_result_equity", "session_id", "results"),
    ("tt_session_log", "id", "events"),
)


class _NotPurgeable(Exception):
    """Raised inside a purge's compare-and-set: the session is kept."""


_ONE_US = timedelta(microseconds=1)
#: QuestDB's refusal of a row older than a non-partitioned table's newest.
_OUT_OF_ORDER = "cannot insert rows out of order"
#: An instance's lease expiry and the progress it published, as ``_instances`` reads them.
_Instance = tuple[datetime, dict[str, Stats]]
_OwnerInstance = tuple[str, _Instance | None]


def _utc(value: datetime | None) -> datetime | None:
    """QuestDB answers naive UTC timestamps."""
    return None if value is None else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Row:
    """One row of the session log: the session after it, and what the row records."""

    session: Session
    row_seq: int
    event_seq: int
    row_kind: str
    from_status: SessionStatus | None
    actor: str
    reason: str
    detail: str | None
    ts: datetime
    tenure: Tenure = field(default_factory=Tenure)
    #: The owner's instance lease this row was viewed with (``QuestDBSessionStore._viewed``):
    #: (owner, (lease, progress)), or (owner, None) when the owner has no instance row;
    #: None when none was read. Not part of the stored row.
    owner_instance: _OwnerInstance | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, r: tuple[Any, ...]) -> _Row:
        v = dict(zip(_COLUMNS, r, strict=True))
        session = Session(
            id=str(v["id"]),
            kind=SessionKind(v["kind"]),
            status=SessionStatus(v["status"]),
            symbols=parse_symbols(v["symbols"]),
            exchange=str(v["exchange"]),
            data_types=parse_data_types(v["data_types"]),
            config=parse_config(v["config"]),
            created_at=_utc(v["created_at"]),  # type: ignore[arg-type]
            started_at=_utc(v["started_at"]),
            ended_at=_utc(v["ended_at"]),
            reason=v["reason"],
            stats=Stats(int(v["trades"]), int(v["orderbook"]), int(v["errors"])),
            owner=v["owner"],
            lease_expires_at=_utc(v["lease_expires_at"]),
            version=int(v["version"]),
            deleted=bool(v["deleted"]),
            idempotency_key=v["idempotency_key"],
        )
        return cls(
            session,
            int(v["row_seq"]),
            int(v["event_seq"]),
            str(v["row_kind"]),
            None if v["from_status"] is None else SessionStatus(v["from_status"]),
            str(v["actor"]),
            str(v["event_reason"]),
            v["detail"],
            v["ts"].replace(tzinfo=UTC),
            Tenure.parse(v["tenure"], v["fences"], v["tick_floor"]),
        )

    def values(self) -> tuple[Any, ...]:
        """The row's values in the order of ``SESSION_LOG_COLUMNS``."""
        s = self.session
        by_column: dict[str, Any] = {
            "id": s.id,
            "row_seq": self.row_seq,
            "event_seq": self.event_seq,
            "row_kind": self.row_kind,
            "kind": s.kind.value,
            "status": s.status.value,
            "from_status": None if self.from_status is None else self.from_status.value,
            "symbols": json.dumps(list(s.symbols)),
            "exchange": s.exchange,
            "data_types": json.dumps([d.value for d in s.data_types]),
            "config": json.dumps(s.config.to_dict()),
            "created_at": s.created_at,
            "started_at": s.started_at,
            "ended_at": s.ended_at,
            "reason": s.reason,
            "event_reason": self.reason,
            "detail": self.detail,
            "actor": self.actor,
            "trades": s.stats.trades,
            "orderbook": s.stats.orderbook,
            "errors": s.stats.errors,
            "owner": s.owner,
            "lease_expires_at": s.lease_expires_at,
            "version": s.version,
            "deleted": s.deleted,
            "idempotency_key": s.idempotency_key,
            "ts": self.ts,
            "tenure": self.tenure.number,
            "fences": self.tenure.dump_fences(),
            "tick_floor": self.tenure.floor,
        }
        return tuple(by_column[name] for name in _COLUMNS)

    def event(self) -> SessionEvent:
        return SessionEvent(
            self.session.id,
            self.event_seq,
            self.ts,
            self.from_status,
            self.session.status,
            self.actor,
            self.reason,
            self.detail,
        )

    def next(
        self,
        session: Session,
        *,
        row_kind: str,
        actor: str = "",
        reason: str = "",
        detail: str | None = None,
        event: bool = False,
        seal: Seal | None = None,
        claim: bool = False,
        floor: int | None = None,
    ) -> _Row:
        """The row that follows this one; its ts never goes backwards, whatever the clock.

        ``seal`` closes the current tenure at its fence; a new owner opens a new one, and
        so does every ``claim``: an instance that claims back its own session (its lease ran
        out during a store outage) resumes it in a new tenure, or the rows it writes past
        the fence of the tenure it sealed would never be counted. ``floor`` lowers the
        session's tick floor (``_fence.py``).
        """
        ts = max(utcnow(), self.ts + _ONE_US)
        tenure = self.tenure if floor is None else self.tenure.lowered(floor)
        if seal is not None and seal.fence is not None:
            sealed = tenure.sealed(Fence.load(seal.fence))
            if sealed is None:
                # sealed in an earlier tenure (the session moved on), or counted from a
                # tick floor lowered since (older rows may be stored): decided again
                raise TransitionRace(session.id, self.session.version)
            tenure = sealed
        if session.owner is not None and (claim or session.owner != self.session.owner):
            tenure = tenure.opened(session.version)
        return _Row(
            session,
            self.row_seq + 1,
            self.event_seq + (1 if event else 0),
            row_kind,
            self.session.status if event else None,
            actor or self.actor,
            reason or self.reason,
            detail,
            ts,
            tenure,
        )


def _read_row(
    read: Session | None,
    session_id: str,
    expected_version: int,
    lease_expired_before: datetime | None,
) -> _Row | None:
    """The log row ``read`` was listed from (:meth:`QuestDBSessionStore.find_owned`), as
    a transition's first base, or None (the transition reads the session itself).

    Used only at ``expected_version`` (a status, owner or tenure change moves the
    version, so an older row's transition would be refused anyway) and never under a
    lease condition (an instance renewal does not append to the log: the row's lease
    may be older than the stored one). A row made stale otherwise (a note appended
    since, at the same version) fails the append's check on ``row_seq``, and the next
    round reads."""
    row = None if read is None else read.stored_row
    if (
        not isinstance(row, _Row)
        or row.session.id != session_id
        or row.session.version != expected_version
        or lease_expired_before is not None
    ):
        return None
    return row


async def _pipeline(
    db: Connections, conn: Any, statements: list[Statement]
) -> list[list[tuple[Any, ...]]]:
    """``statements`` sent together on ``conn`` (one wait for the server and the event
    loop, not one per statement), run in order; each one's rows."""
    async with conn.pipeline() as pipeline:
        cursors = [await conn.execute(db.prefixed(sql), params) for sql, params in statements]
        await pipeline.sync()
        return [await cur.fetchall() for cur in cursors]


# One JSON string as json.dumps writes it (ASCII only: "...", escapes inside).
_JSON_STRING_RE = r'"(?:[^"\\]|\\.)*"'


def symbol_pattern(symbol: str) -> str:
    """A regular expression matching a stored ``symbols`` JSON list that holds ``symbol``.

    The whole list is parsed — ``["A", "B"]`` as ``json.dumps`` writes it — so the
    symbol matches one element exactly: never a substring of an element, never a
    run of characters across the ``", "`` between two elements (which a plain
    substring search did: ``?symbol=, `` matched every multi-symbol session).
    """
    literal = "".join(c if c.isalnum() else "\\" + c for c in json.dumps(symbol))
    any_ = _JSON_STRING_RE
    return f"^\\[({any_}, )*{literal}(, {any_})*\\]$"


def _filters(query: SessionQuery) -> tuple[list[str], list[Any]]:
    clauses: list[str] = [f"row_kind != '{_PURGED}'"]
    params: list[Any] = []
    if not query.include_deleted:
        clauses.append("deleted = false")
    if query.statuses:
        clauses.append(f"status IN ({', '.join('%s' for _ in query.statuses)})")
        params.extend(sorted(s.value for s in query.statuses))
    if query.kind is not None:
        clauses.append("kind = %s")
        params.append(query.kind.value)
    if query.symbol is not None:
        clauses.append("symbols ~ %s")
        params.append(symbol_pattern(query.symbol))
    return clauses, params


@dataclass
class _Read(Waiting["_Row | None"]):
    session_id: str


class _NewestRows:
    """Newest-row reads of many sessions, asked for concurrently, served by one query.

    Every read of a session's current state comes here (a get, the read before each
    transition, lease renewals of many sessions at once). Read one by one, that is
    one query (and one more for the owners' instance leases) per read; here the
    reads that queue up while a query runs go together in the next one
    (``WHERE id IN (...) LATEST ON``), and a read never joins a query already under
    way (``_grouping.py``), so it sees every write acknowledged before it was asked.
    """

    def __init__(self, read_many: Callable[[list[str]], Awaitable[dict[str, _Row]]]) -> None:
        self._read_many = read_many
        self._reads: Grouper[_Read] = Grouper(
            self._read_group, lambda queue: MAX_BATCHED_READS, "get sessions"
        )

    async def get(self, session_id: str) -> _Row:
        read = _Read(session_id)
        self._reads.submit(read)
        row = await read.future
        if row is None:
            raise SessionNotFound(session_id)
        return row

    async def _read_group(self, group: list[_Read]) -> None:
        rows = await self._read_many(sorted({read.session_id for read in group}))
        for read in group:
            read.answer(rows.get(read.session_id))


class QuestDBSessionStore(SessionStore):
    """The session log in a non-WAL table: append-only rows, compare-and-set on the newest.

    Testing hooks: :attr:`on_read_many`, if set, is called with the session ids of each
    query that reads the newest rows of several sessions at once (the reads lease
    renewals share, :class:`_NewestRows`) — a test counts the queries a heartbeat
    costs (tests/integration/test_questdb_store.py). The product never sets it.
    :attr:`active_sessions` is what :meth:`scan_leases` reads the active sessions
    through (``_scan.ActiveSessions``), :attr:`heartbeat_sessions` what
    :meth:`renew_instance` lists an instance's sessions from: a test reads their counts
    of full and window reads and may shrink their overlap. :attr:`slice_s` is how much
    of :meth:`renew_instance`'s pass over the owned sessions runs between two yields of
    the event loop (``LoopSlicer``): a test sets 0 to have it yield between every two.
    :attr:`on_log_transaction`, if set, is called on the log thread with the start and
    end (``time.perf_counter()``) of each group commit's attempt, BEGIN to COMMIT or
    ROLLBACK — how long this process holds the log (``bench/shutdown.py``).
    """

    on_read_many: Callable[[list[str]], None] | None = None
    slice_s: float = LOOP_SLICE_S

    @property
    def on_log_transaction(self) -> Callable[[float, float], None] | None:
        return self._committer.on_transaction

    @on_log_transaction.setter
    def on_log_transaction(self, hook: Callable[[float, float], None] | None) -> None:
        self._committer.on_transaction = hook

    def __init__(self, connections: Connections, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._db = connections
        self._committer = GroupCommitter(
            connections,
            _INSERT,
            f"SELECT {_SELECT} FROM tt_session_log",
            retry,
        )
        self._newest = _NewestRows(lambda ids: self._latest_many(ids))
        self.active_sessions = ActiveSessions(self._pipelined)
        # the whole newest rows of the active sessions, kept by the heartbeat's reads on
        # its own connection (renew_instance), with each one parsed while it is unchanged
        self.heartbeat_sessions = ActiveSessions(
            self._pipelined, columns=_COLUMNS, overlap_s=HEARTBEAT_SCAN_OVERLAP_S
        )
        self._owned_parsed: dict[str, tuple[tuple[Any, ...], _Row]] = {}
        # instance token → (its stored progress text, that text parsed): _progress
        self._parsed_progress: dict[str, tuple[str | None, dict[str, Stats]]] = {}

    # ------------------------------------------------------------------ reading

    async def _query(
        self, sql: str, params: tuple[Any, ...] | list[Any], what: str
    ) -> list[tuple[Any, ...]]:
        async def query() -> list[tuple[Any, ...]]:
            async with self._db.reader(what) as conn:
                cur = await conn.execute(self._db.prefixed(sql), params)
                return await cur.fetchall()

        return await self._db.bounded(query(), what)

    async def _pipelined(
        self, statements: list[Statement], what: str
    ) -> list[list[tuple[Any, ...]]]:
        """``statements`` in one round trip on a pooled reader, each one's rows."""

        async def query() -> list[list[tuple[Any, ...]]]:
            async with self._db.reader(what) as conn:
                return await _pipeline(self._db, conn, statements)

        return await self._db.bounded(query(), what)

    async def _instances(self, owners: set[str]) -> dict[str, tuple[datetime, dict[str, Stats]]]:
        """The instance lease and stored progress of each of ``owners`` that has one."""
        if not owners:
            return {}
        marks, params = in_list(sorted(owners))
        rows = await self._query(
            f"SELECT token, expires, progress FROM tt_instances WHERE token IN ({marks})",
            params,
            "read instance leases",
        )
        found: dict[str, tuple[datetime, dict[str, Stats]]] = {}
        for token, expires, progress in rows:
            if expires is not None:
                key = str(token)
                found[key] = (expires.replace(tzinfo=UTC), self._progress(key, progress))
        return found

    def _progress(self, token: str, stored: str | None) -> dict[str, Stats]:
        """``stored`` (an instance's progress map) parsed, or the map parsed last time for
        ``token`` if ``stored`` is the same text: every read of a running session reads
        its owner's whole map (one entry per session it runs), and the map changes once
        per heartbeat, so parsing it on every read made a read's cost grow with the
        number of sessions an instance runs (stop 13's profile: ~13 % of a server's CPU
        at ``bench/lifecycle.py -c 32``). The maps are only read, never changed."""
        cached = self._parsed_progress.get(token)
        if cached is not None and cached[0] == stored:
            return cached[1]
        parsed = load_progress(stored)
        if len(self._parsed_progress) >= PARSED_PROGRESS_KEPT:
            self._parsed_progress.clear()  # instances that went away: rare, start afresh
        self._parsed_progress[token] = (stored, parsed)
        return parsed

    async def _viewed(self, rows: list[_Row]) -> list[_Row]:
        """``rows`` with their sessions as the contract shows them: a non-terminal session
        with a lease of its own is covered by its owner's instance lease and shows the
        progress published for it (``rules.effective``). One query, and none at all
        when every row is terminal or has no lease, or carries its owner's instance lease
        already (:meth:`_change` passes on the one read with the row it changed).
        Each row looked up carries what was found (``_Row.owner_instance``)."""
        owners = {
            r.session.owner
            for r in rows
            if r.session.owner is not None
            and not r.session.is_terminal
            and r.session.lease_expires_at is not None
        }
        known: dict[str, _Instance] = {}
        for r in rows:
            if r.owner_instance is not None and r.owner_instance[0] == r.session.owner:
                owners.discard(r.owner_instance[0])
                if r.owner_instance[1] is not None:
                    known[r.owner_instance[0]] = r.owner_instance[1]
        if not owners:
            return self._view(rows, known)
        found = await self._instances(owners)
        rows = [
            replace(r, owner_instance=(r.session.owner, found.get(r.session.owner)))
            if r.session.owner in owners
            else r
            for r in rows
        ]
        return self._view(rows, {**known, **found})

    @staticmethod
    def _view(
        rows: list[_Row], instances: Mapping[str, tuple[datetime, Mapping[str, Stats]]]
    ) -> list[_Row]:
        """``rows`` as :meth:`_viewed` shows them, given their owners' ``instances``."""
        if not instances:
            return rows
        viewed = []
        for r in rows:
            instance = instances.get(r.session.owner or "")
            if instance is not None:
                lease, progress = instance
                shown = effective(r.session, lease, progress.get(r.session.id))
                if shown is not r.session:
                    r = replace(r, session=shown)
            viewed.append(r)
        return viewed

    async def _latest(self, session_id: str) -> _Row:
        """The session's newest row as the contract shows it, read together with the
        reads other tasks ask for meanwhile (:class:`_NewestRows`): one query for the
        rows and one for their owners' instance leases per group, instead of two per
        read. At 32 concurrent clients the reads queued for the pooled connections
        (a get and ~5 reads per session's transitions) were what made a start's
        p95 ~10 times its p50 (docs/benchmarks.md, stop 13)."""
        return await self._newest.get(session_id)

    async def _latest_many(self, session_ids: list[str]) -> dict[str, _Row]:
        if self.on_read_many is not None:
            self.on_read_many(session_ids)
        what = "get sessions"

        async def query() -> list[tuple[Any, ...]]:
            async with self._db.reader(what) as conn:
                return await self._db.log_lookups.read(self._db, conn, _SELECT, session_ids, what)

        rows = await self._db.bounded(query(), what)
        viewed = await self._viewed([_Row.parse(r) for r in rows if r[_ROW_KIND] != _PURGED])
        return {row.session.id: row for row in viewed}

    async def get_session(self, session_id: str) -> Session:
        return (await self._latest(session_id)).session

    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        check_limit(query.limit, MAX_LIST_LIMIT)
        if query.statuses and query.statuses <= ACTIVE_STATUSES:
            return await self._list_active(query)
        clauses, params = _filters(query)
        if query.cursor is not None:
            created_us, sid = decode_cursor(query.cursor)
            created = from_us(created_us)
            after = ">" if query.oldest_first else "<"
            clauses.append(
                f"(created_at {after} %s OR (created_at = %s AND id::varchar {after} %s))"
            )
            params.extend([created, created, sid])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "ASC" if query.oldest_first else "DESC"
        rows = await self._query(
            f"SELECT * FROM ({_LATEST}) {where} ORDER BY created_at {order}, id::varchar {order} "
            "LIMIT %s",
            [*params, query.limit + 1],
            "list sessions",
        )
        sessions = [
            r.session for r in await self._viewed([_Row.parse(r) for r in rows[: query.limit]])
        ]
        more = len(rows) > query.limit
        return SessionPage(sessions, encode_cursor(sessions[-1]) if more and sessions else None)

    async def _list_active(self, query: SessionQuery) -> SessionPage:
        """:meth:`list_sessions` of active statuses alone (``?status=running``): from the
        index of the non-terminal sessions' newest rows the heartbeat keeps
        (:attr:`heartbeat_sessions`, as :meth:`find_owned`), so it costs O(active
        sessions) and one round trip, not ``LATEST ON`` over every session ever stored
        (docs/benchmarks.md, "Stop 28 — lead"). The rows are ordered and cut at the
        cursor on their raw ``created_at`` and id (the order and cursor of
        ``rules.after_cursor``), and parsed only as far as the page needs."""
        active = await self.heartbeat_sessions.rows()
        wanted = {s.value for s in query.statuses}
        keyed = [
            ((to_us(_utc(v[_CREATED_AT])), str(v[_ID])), v)  # type: ignore[arg-type]
            for v in active.values()
            if str(v[_STATUS]) in wanted
        ]
        if query.cursor is not None:  # on the raw values: the rows before it are not parsed
            cursor = decode_cursor(query.cursor)
            keyed = [
                kv for kv in keyed if after_position(kv[0], cursor, oldest_first=query.oldest_first)
            ]
        keyed.sort(key=lambda kv: kv[0], reverse=not query.oldest_first)
        slicer = LoopSlicer(self.slice_s)
        page: list[_Row] = []
        for _, values in keyed:
            await slicer.next()
            row = _Row.parse(values)
            if matches(row.session, query):
                page.append(row)
                if len(page) > query.limit:
                    break
        sessions = [r.session for r in await self._viewed(page[: query.limit])]
        more = len(page) > query.limit
        return SessionPage(sessions, encode_cursor(sessions[-1]) if more and sessions else None)

    async def count_sessions(self, query: SessionQuery) -> int:
        """Counts the log's newest rows; a count of active statuses alone (the per-store
        limit every start checks: ``SessionService._active_in_store``) is answered from
        the active sessions' index (:class:`ActiveSessions`, read within this call), so
        it does not grow with the history. An active session is never deleted or purged
        (both need a terminal one), so ``include_deleted`` does not change it."""
        if (
            query.statuses
            and query.statuses <= ACTIVE_STATUSES
            and query.kind is None
            and query.symbol is None
        ):
            wanted = {s.value for s in query.statuses}
            active = await self.active_sessions.rows()
            return sum(1 for row in active.values() if str(row[_LEASE_STATUS]) in wanted)
        clauses, params = _filters(query)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._query(
            f"SELECT count() FROM ({_LATEST}) {where}", params, "count sessions"
        )
        return int(rows[0][0])

    async def list_events(self, session_id: str) -> list[SessionEvent]:
        """A session that exists has at least its creation event: none found by the ``id``
        symbol is QuestDB's lookup missing it (``LogLookups``), so they are read again by
        the id's string value."""
        await self._latest(session_id)
        sql = (
            f"SELECT {_SELECT} FROM tt_session_log WHERE {{}} = %s AND row_kind IN "
            f"{_EVENT_KINDS} ORDER BY event_seq"
        )
        lookups = self._db.log_lookups
        rows = lookups.first(await self._query(sql.format("id"), (session_id,), "list events"))
        if not rows:
            rows = await self._query(sql.format("cast(id AS string)"), (session_id,), "list events")
            lookups.found_again([session_id], rows[:1], "list events")
        return [_Row.parse(r).event() for r in rows]

    async def _active(self) -> list[Session]:
        rows = await self._query(
            f"SELECT * FROM ({_LATEST}) WHERE status IN ('pending', 'running', 'stopping')",
            (),
            "find active sessions",
        )
        return [r.session for r in await self._viewed([_Row.parse(r) for r in rows])]

    async def find_finished(
        self, ended_before: datetime, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Session]:
        check_limit(limit, MAX_LIST_LIMIT)
        clause = ""
        params: list[Any] = [ended_before]
        if after is not None:
            clause = "AND (ended_at > %s OR (ended_at = %s AND id::varchar > %s)) "
            params.extend([after[0], after[0], after[1]])
        rows = await self._query(
            f"SELECT * FROM ({_LATEST}) WHERE status IN {_TERMINAL_SQL} "
            f"AND row_kind != '{_PURGED}' AND ended_at < %s {clause}"
            "ORDER BY ended_at, id::varchar LIMIT %s",
            [*params, limit],
            "find finished sessions",
        )
        return [_Row.parse(r).session for r in rows]

    async def purge(self, session_ids: Sequence[str], *, ended_before: datetime) -> Purged:
        """Appends a tombstone per session (compare-and-set, like a transition): from then
        on every read treats the session as unknown. Its rows stay until :meth:`reclaim`
        drops the partitions holding them."""

        def build(current: _Row) -> _Row:
            s = current.session
            if not s.is_terminal or s.ended_at is None or s.ended_at >= ended_before:
                raise _NotPurgeable
            return current.next(
                replace(s, deleted=True), row_kind=_PURGED, actor="gc", reason=_PURGED
            )

        async def one(session_id: str) -> int:
            try:
                await self._change(session_id, build, "purge session")
            except (_NotPurgeable, SessionNotFound):
                return 0
            return 1

        done = await asyncio.gather(*(one(i) for i in dict.fromkeys(session_ids)))
        return Purged(sessions=sum(done))

    async def reclaim(self, ended_before: datetime) -> Purged:
        rows = await self._query(
            f"SELECT id FROM ({_LATEST}) WHERE row_kind = '{_PURGED}'", (), "find purged sessions"
        )
        purged = {str(r[0]) for r in rows}
        if not purged:
            return Purged()
        freed = Purged()
        self.active_sessions.forget()  # a dropped partition changes the rows it counts
        self.heartbeat_sessions.forget()
        for table, column, kind in _RECLAIMED_TABLES:
            for name, rows_in, disk in await self._droppable(table, column, purged, ended_before):
                await self._drop_partition(table, name)
                freed = replace(
                    freed,
                    partitions=(*freed.partitions, f"{self._db.prefixed(table)}/{name}"),
                    bytes=freed.bytes + disk,
                    **{kind: getattr(freed, kind) + rows_in},
                )
        return freed

    async def _droppable(
        self, table: str, column: str, purged: set[str], ended_before: datetime
    ) -> list[tuple[str, int, int]]:
        """(name, rows, bytes) of ``table``'s partitions that end before ``ended_before``
        and hold rows of purged sessions only (the session log's: and no tombstone)."""
        parts = await self._query(
            "SELECT name, minTimestamp, maxTimestamp, numRows, diskSize "
            f"FROM table_partitions('{table}')",
            (),
            "list partitions",
        )
        found = []
        for name, low, high, rows_in, disk in parts:
            if low is None or high is None or high.replace(tzinfo=UTC) >= ended_before:
                continue
            ids = await self._query(
                f"SELECT DISTINCT {column} FROM {table} WHERE ts >= %s AND ts <= %s",
                (low, high),
                "read a partition's sessions",
            )
            if not ids or any(str(i[0]) not in purged for i in ids):
                continue
            if table == "tt_session_log":
                tombstones = await self._query(
                    f"SELECT count() FROM {table} WHERE ts >= %s AND ts <= %s "
                    f"AND row_kind = '{_PURGED}'",
                    (low, high),
                    "read a partition's tombstones",
                )
                if tombstones[0][0]:
                    continue
            found.append((str(name), int(rows_in or 0), int(disk or 0)))
        return found

    async def _drop_partition(self, table: str, name: str) -> None:
        sql = self._db.prefixed(f"ALTER TABLE {table} DROP PARTITION LIST '{name}'")
        if table == "tt_session_log":  # this process's appends hold the same writer
            async with self._db.writer("drop a session-log partition") as conn:
                await conn.execute(sql)
            return
        async with self._db.reader("drop a partition") as conn:
            await conn.execute(sql)

    async def find_expired(self, now: datetime) -> list[Session]:
        return [
            s
            for s in await self._active()
            if s.lease_expires_at is None or s.lease_expires_at < now
        ]

    async def scan_leases(self, now: datetime) -> LeaseScan:
        """Reads the ids, owners and own leases of the active sessions from the log's
        recent rows (:class:`ActiveSessions`: O(rows since the last scan), not
        O(every session stored)) and the instance leases; parses the full rows of the
        expired ones alone (read again: one renewed or ended meanwhile is left out)."""
        leases = await self.active_sessions.leases()
        owners = {str(owner) for owner, lease in leases.values() if owner is not None and lease}
        instances = await self._instances(owners)
        expired: list[str] = []
        next_expiry: datetime | None = None
        for sid, (owner, lease) in leases.items():
            if lease is None:
                expired.append(sid)
                continue
            expiry = lease
            instance = instances.get(str(owner))
            if instance is not None and instance[0] > expiry and sid in instance[1]:
                expiry = instance[0]  # covered by its owner's instance lease (rules.effective)
            if expiry < now:
                expired.append(sid)
            elif next_expiry is None or expiry < next_expiry:
                next_expiry = expiry
        found: list[Session] = []
        for start in range(0, len(expired), MAX_BATCHED_READS):
            rows = await self._latest_many(expired[start : start + MAX_BATCHED_READS])
            found.extend(
                r.session
                for r in rows.values()
                if not r.session.is_terminal
                and (r.session.lease_expires_at is None or r.session.lease_expires_at < now)
            )
        live = frozenset(owner for owner, (lease, _) in instances.items() if lease > now)
        return LeaseScan(found, next_expiry, live)

    async def find_owned(self, owner_prefix: str) -> list[Session]:
        """Listed from the index of the active sessions' newest rows that the heartbeat
        keeps (:attr:`heartbeat_sessions`: the log's recent rows, not ``LATEST ON`` over
        every session ever stored), viewed with their owners' instance leases: one round
        trip, and one query for the instance leases.

        Each session carries the row it was listed from (:attr:`Session.stored_row`):
        given back as a :meth:`transition`'s ``read`` (a shutdown lists its sessions,
        then requests their stops), it is that transition's first compare-and-set's base
        instead of a read of the session (see there). The store keeps nothing of it."""
        active = await self.heartbeat_sessions.rows()
        slicer = LoopSlicer(self.slice_s)
        rows = []
        for values in active.values():
            await slicer.next()
            owner = values[_OWNER]
            if owner is not None and str(owner).startswith(owner_prefix):
                rows.append(_Row.parse(values))
        return [replace(r.session, stored_row=r) for r in await self._viewed(rows)]

    async def list_changed(self, since: str | None, *, limit: int = MAX_CHANGES) -> ChangePage:
        """Positions are row timestamps, written by each instance's clock before its
        commit: each call re-reads :data:`CHANGE_OVERLAP_S` before the newest row seen,
        so a row committed up to that long after its timestamp is still found. A full
        page continues exactly after its last row (cursor ``<us>!``), with no re-read."""
        if since is None:
            rows = await self._query(
                "SELECT max(ts) FROM tt_session_log", (), "read the change position"
            )
            top = rows[0][0] if rows else None
            return ChangePage([], str(to_us(top) if top is not None else 0))
        exact = since.endswith("!")
        try:
            after_us = int(since.removesuffix("!"))
        except ValueError:
            raise ValidationError(f"invalid change cursor {since!r}", field="cursor") from None
        start_us = after_us if exact else after_us - CHANGE_OVERLAP_US
        rows = await self._query(
            f"SELECT * FROM (SELECT {_SELECT} FROM tt_session_log WHERE ts > %s "
            "LATEST ON ts PARTITION BY id) ORDER BY ts LIMIT %s",
            [from_us(start_us), limit],
            "list changed sessions",
        )
        changed = [_Row.parse(r) for r in rows]
        if len(changed) >= limit:
            cursor = f"{to_us(changed[-1].ts) - 1}!"
        else:
            cursor = str(max([after_us, *(to_us(r.ts) for r in changed)]))
        shown = [r for r in changed if r.row_kind != _PURGED]
        return ChangePage([r.session for r in await self._viewed(shown)], cursor)

    # ------------------------------------------------------------------ writing

    async def _append(
        self,
        row: _Row,
        *,
        expect_row_seq: int | None,
        idempotency_key: str | None = None,
        then: tuple[_Row, ...] = (),
    ) -> _Row | None:
        """Append ``row`` iff the session's newest committed row is still ``expect_row_seq``,
        and ``then`` (its next rows) with it.

        Returns ``row`` once committed, None if the expectation failed (nothing
        written) and, with ``idempotency_key``, the first row of an existing session
        with that key. See ``_commit`` for how appends share a transaction.
        """
        answer = await self._committer.append(
            Append(
                row.session.id,
                row.values(),
                expect_row_seq,
                idempotency_key,
                row.ts,
                tuple(r.values() for r in then),
            )
        )
        if answer.appended:
            return row
        if answer.existing is None:
            return None
        return _Row.parse(answer.existing)

    async def _first_with_key(self, key: str) -> _Row | None:
        async def find() -> dict[str, tuple[Any, ...]]:
            async with self._db.reader("find idempotency key") as conn:
                sql, params = keys_sql([key])
                cur = await conn.execute(self._db.prefixed(sql), params)
                return await self._committer.first_rows(conn, await cur.fetchall())

        rows = await self._db.bounded(find(), "find idempotency key")
        return _Row.parse(rows[key]) if key in rows else None

    async def _change(
        self,
        session_id: str,
        build: Callable[[_Row], _Row | tuple[_Row, _Row]],
        what: str,
        known: _Row | None = None,
    ) -> _Row:
        """Read the newest row, build the next one from it (``build`` raises the contract's
        errors; or the next two, appended together), append it; when another writer got
        there first, read again. ``known``: the newest row as the caller read it just
        before (:func:`_read_row`), the first round's instead of a read. Returns the
        (last) row appended."""
        for _ in range(QUESTDB_APPEND_ROUNDS):
            current = known or await self._latest(session_id)
            known = None
            built = build(current)
            rows = (built,) if isinstance(built, _Row) else built
            appended = await self._append(rows[0], expect_row_seq=current.row_seq, then=rows[1:])
            if appended is not None:
                # the owner's instance lease read with ``current`` views the new row too
                # (``_viewed``): read within this call like a second read would be, which
                # cost a query per transition
                return replace(rows[-1], owner_instance=current.owner_instance)
        raise StoreBusy(f"{what}: session {session_id!r} kept changing; try again")

    async def create_session(
        self, session: Session, *, actor: str, start_lease_until: datetime | None = None
    ) -> Session:
        first = _Row(
            session,
            1,
            1,
            "transition",
            None,
            actor,
            "created",
            None,
            session.created_at,
            Tenure(
                session.version if session.owner is not None else 0,
                floor=to_us(session.created_at) - TICK_FLOOR_MARGIN_US,
            ),
        )
        # started at once: its ``running`` row goes in the create's transaction, one log
        # write per start instead of two (the create's, then the runner's transition)
        then: tuple[_Row, ...] = ()
        if start_lease_until is not None:
            running = apply_start(session, lease_expires_at=start_lease_until, now=utcnow())
            then = (
                first.next(
                    running,
                    row_kind="transition",
                    actor=actor,
                    reason=Reason.STARTED,
                    event=True,
                ),
            )
        stored = await self._append(
            first, expect_row_seq=None, idempotency_key=session.idempotency_key, then=then
        )
        if stored is None and session.idempotency_key is not None:
            # another create with this key won the same group commit: answer with it
            stored = await self._first_with_key(session.idempotency_key)
        if stored is None:
            raise SessionConflict(
                f"session {session.id!r} already exists",
                session_id=session.id,
                status=session.status.value,
            )
        if stored is not first:
            return (await self._latest(stored.session.id)).session
        return then[0].session if then else session

    async def append_history(
        self, sessions: Sequence[Session], *, to_status: SessionStatus, reason: str, actor: str
    ) -> None:
        """For tools that build a long history (``bench/capacity.py``), never the product:
        each of ``sessions`` — new ids, pending, never stored — is appended as created and
        then moved to ``to_status``: the rows ``create_session`` and ``transition`` append,
        built by the same code, all in one transaction and without compare-and-set (an id
        nobody has written has nothing to compare). Raises :class:`StoreBusy` while
        another writer holds the log."""
        values: list[Sequence[Any]] = []
        for session in sessions:
            first = _Row(
                session,
                1,
                1,
                "transition",
                None,
                actor,
                "created",
                None,
                session.created_at,
                Tenure(session.version),
            )
            ended = apply_transition(
                session,
                expected_version=session.version,
                to_status=to_status,
                reason=reason,
                now=utcnow(),
                owner=UNCHANGED,
                lease_expires_at=None,
                stats=None,
            )
            last = first.next(ended, row_kind="transition", actor=actor, reason=reason, event=True)
            values += [log_params(first.values()), log_params(last.values())]
        writer = self._db.writer("append history")
        async with writer as conn, conn.transaction():
            await insert_rows(
                conn, self._db.prefixed(f"INSERT INTO tt_session_log ({_SELECT})"), values
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
        def build(current: _Row) -> _Row | tuple[_Row, _Row]:
            new = apply_transition(
                current.session,
                expected_version=expected_version,
                to_status=to_status,
                reason=reason,
                now=utcnow(),
                owner=owner,
                lease_expires_at=lease_expires_at,
                stats=stats,
                lease_expired_before=lease_expired_before,
            )
            # the note's row, then the transition's, in one append: both or neither
            before = current
            if note is not None:
                before = current.next(
                    current.session,
                    row_kind="note",
                    actor=actor,
                    reason=note.reason,
                    detail=note.detail,
                    event=True,
                )
            row = before.next(
                new,
                row_kind="transition",
                actor=actor,
                reason=reason,
                detail=detail,
                event=True,
                seal=seal,
            )
            return row if before is current else (before, row)

        row = await self._change(
            session_id,
            build,
            f"transition to {to_status.value}",
            _read_row(read, session_id, expected_version, lease_expired_before),
        )
        return (await self._viewed([row]))[0].session

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
        def build(current: _Row) -> _Row:
            new = apply_claim(
                current.session,
                expected_version=expected_version,
                owner=owner,
                lease_expires_at=lease_expires_at,
                lease_expired_before=lease_expired_before,
            )
            return current.next(
                new,
                row_kind="note",
                actor=actor,
                reason=reason,
                detail=detail,
                event=True,
                seal=seal,
                claim=True,
            )

        row = await self._change(session_id, build, "claim session")
        return (await self._viewed([row]))[0].session

    async def renew_lease(
        self,
        session_id: str,
        *,
        owner: str,
        lease_expires_at: datetime | None,
        stats: Stats | None = None,
    ) -> Session:
        def build(current: _Row) -> _Row:
            s = current.session
            if s.is_terminal or s.owner != owner:
                raise LeaseLost(session_id, owner, f"status {s.status}, owner {s.owner}")
            new = replace(
                s, lease_expires_at=lease_expires_at, stats=s.stats if stats is None else stats
            )
            return current.next(new, row_kind="lease", actor=owner, reason="lease_renewed")

        row = await self._change(session_id, build, "renew lease")
        return (await self._viewed([row]))[0].session

    async def renew_instance(
        self, owner: str, *, lease_expires_at: datetime, progress: Mapping[str, Stats]
    ) -> list[Session]:
        stored = dump_progress(progress)
        # not the session-log writer: a heartbeat never waits behind a group commit (and
        # never holds one up); the instance row is its owner's alone. Nor a pooled reader:
        # a heartbeat never queues behind reads either (its own connection, lease_writer)
        async with self._db.lease_writer("renew instance lease") as conn:
            cur = await conn.execute(
                self._db.prefixed(
                    "UPDATE tt_instances SET expires = %s, progress = %s WHERE token = %s"
                ),
                (lease_expires_at, stored, owner),
            )
            if cur.rowcount < 1 and not await self._reuse_instance_row(
                conn, owner, lease_expires_at, stored
            ):
                await self._insert_instance_row(conn, owner, lease_expires_at, stored)
            # on the same connection, and viewed with the lease just written instead of
            # reading it back: no step of a heartbeat waits for the pooled readers. The
            # active sessions' newest rows come from the log's recent rows (``_scan``):
            # LATEST ON over the whole log costs O(every session ever stored)

            async def on_lease_connection(
                statements: list[Statement], what: str
            ) -> list[list[tuple[Any, ...]]]:
                return await _pipeline(self._db, conn, statements)

            active = await self.heartbeat_sessions.rows(on_lease_connection)
        # Viewed as _view would (every row is ``owner``'s, so its instance lease is the
        # one just written), one session at a time: building a thousand sessions' views
        # takes tens of milliseconds, so the loop yields every LOOP_SLICE_S of it
        # (``active`` and ``shown`` are this call's own copies).
        shown = dict(progress)
        slicer = LoopSlicer(self.slice_s)  # one for both passes: no slice runs into the next
        owned = []
        for row in await self._parsed_owned(active, owner, slicer):
            owned.append(effective(row.session, lease_expires_at, shown.get(row.session.id)))
            await slicer.next()
        return owned

    async def _parsed_owned(
        self, active: dict[str, tuple[Any, ...]], owner: str, slicer: LoopSlicer
    ) -> list[_Row]:
        """The rows of ``active`` whose owner is ``owner``, parsed; a row still the same
        as at the last heartbeat (the same ``row_seq``: the log is only appended to) is
        not parsed again. Yields the loop every LOOP_SLICE_S (a thousand new sessions
        take tens of milliseconds to parse)."""
        parsed = self._owned_parsed
        found = []
        for sid, values in active.items():
            await slicer.next()
            if values[_OWNER] != owner:
                continue
            kept = parsed.get(sid)
            if kept is None or kept[0][_ROW_SEQ] != values[_ROW_SEQ]:
                kept = (values, _Row.parse(values))
                parsed[sid] = kept
            found.append(kept[1])
        for sid in [sid for sid in parsed if sid not in active]:
            del parsed[sid]
        return found

    async def _insert_instance_row(
        self, conn: Any, owner: str, lease_expires_at: datetime, stored: str
    ) -> None:
        """Add ``owner``'s row, whatever the other rows' ``ts``. ``tt_instances`` is not
        partitioned, and QuestDB refuses a row whose designated timestamp is older than
        the table's newest ("cannot insert rows out of order"), which another instance's
        first row, stamped by its own clock a moment later (or by a clock ahead), may
        be; a row stamped the same as the newest is accepted. So a refused row is written
        again stamped with the newest ``ts`` (read again each round: each refusal means
        another instance's row landed in between), QUESTDB_INSTANCE_INSERT_ROUNDS times
        at most. ``ts`` means nothing else here: the lease is ``expires``. The refusal
        leaves the connection usable (docs/questdb-notes.md)."""
        ts = utcnow()
        insert = self._db.prefixed(
            "INSERT INTO tt_instances (token, expires, progress, ts) VALUES (%s, %s, %s, %s)"
        )
        for round_ in range(QUESTDB_INSTANCE_INSERT_ROUNDS):
            try:
                await conn.execute(insert, (owner, lease_expires_at, stored, ts))
                return
            except psycopg.DatabaseError as exc:
                if _OUT_OF_ORDER not in str(exc) or round_ == QUESTDB_INSTANCE_INSERT_ROUNDS - 1:
                    raise
            row = await (
                await conn.execute(self._db.prefixed("SELECT max(ts) FROM tt_instances"))
            ).fetchone()
            newest = _utc(row[0]) if row else None
            if newest is not None and newest > ts:
                ts = newest

    async def _reuse_instance_row(
        self, conn: Any, owner: str, lease_expires_at: datetime, stored: str
    ) -> bool:
        """Take over the row of an instance whose lease expired over
        :data:`INSTANCE_ROWS_KEPT` ago, instead of adding a row: QuestDB cannot delete
        rows, so this keeps ``tt_instances`` as small as the number of instances alive in
        that time. Dropping a dead row revives nothing (its sessions' own leases are the
        later of the two by then). Compare-and-set on (token, expires): an ``UPDATE`` of a
        non-WAL table is synchronous and counts the rows it matched, so of two instances
        taking the same row one gets it and the other looks further."""
        dead = await (
            await conn.execute(
                self._db.prefixed(
                    "SELECT token, expires FROM tt_instances WHERE expires < %s LIMIT 3"
                ),
                (utcnow() - INSTANCE_ROWS_KEPT,),
            )
        ).fetchall()
        for token, expires in dead:
            cur = await conn.execute(
                self._db.prefixed(
                    "UPDATE tt_instances SET token = %s, expires = %s, progress = %s "
                    "WHERE token = %s AND expires = %s"
                ),
                (owner, lease_expires_at, stored, token, expires),
            )
            if cur.rowcount >= 1:
                return True
        return False

    async def add_event(
        self,
        session_id: str,
        *,
        actor: str,
        reason: str,
        detail: str | None = None,
        owner: str | None = None,
    ) -> SessionEvent:
        def build(current: _Row) -> _Row:
            check_note_owner(current.session, owner)
            return current.next(
                current.session,
                row_kind="note",
                actor=actor,
                reason=reason,
                detail=detail,
                event=True,
            )

        return (await self._change(session_id, build, "add event")).event()

    async def lower_tick_floors(
        self, owner: str, floors: Mapping[str, tuple[int, int]]
    ) -> dict[str, Exception | None]:
        """Lower each session's tick floor (``_fence.py``) to at most the given one before
        its owner sends older rows: ``floors`` maps a session id to (the writer's tenure,
        the floor it needs). A compare-and-set append each (they share group commits), in
        the writer's tenure only. Per session: None once the floor is that low, or the
        error that refuses the write — :class:`LeaseLost` if ``owner`` no longer holds
        that tenure of an active session, a store error otherwise."""

        async def one(session_id: str, tenure: int, floor: int) -> None:
            def build(current: _Row) -> _Row:
                s = current.session
                if s.is_terminal or s.owner != owner or current.tenure.number != tenure:
                    raise LeaseLost(
                        session_id,
                        owner,
                        f"tick floor not lowered (status {s.status}, owner {s.owner}, "
                        f"tenure {current.tenure.number})",
                    )
                return current.next(s, row_kind="floor", actor=owner, floor=floor)

            await self._change(session_id, build, "lower tick floor")

        ids = sorted(floors)
        done = await asyncio.gather(
            *(one(sid, *floors[sid]) for sid in ids), return_exceptions=True
        )
        answers: dict[str, Exception | None] = {}
        for sid, outcome in zip(ids, done, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome
            answers[sid] = outcome if isinstance(outcome, Exception) else None
        return answers

    async def mark_deleted(self, session_id: str) -> Session:
        current = await self._latest(session_id)
        if current.session.deleted:
            return current.session

        def build(current: _Row) -> _Row:
            s = current.session
            if not s.is_terminal:
                raise SessionConflict(
                    f"session {session_id!r} is {s.status}; stop it before deleting",
                    session_id=session_id,
                    status=s.status.value,
                )
            return current.next(replace(s, deleted=True), row_kind="meta", reason="deleted")

        row: _Row = await self._change(session_id, build, "delete session")
        return row.session


class QuestDBStore(Store):
    """Sessions and ticks in one QuestDB. URL: ``questdb://host:8812?ilp=http://host:9000``.

    Testing hook: :attr:`on_connect`, if set, is called with every PG-wire connection
    the store opens (the session-log writer and each pooled reader; the group commit's
    synchronous ``psycopg.Connection`` objects too, called in the thread that uses
    them), so a test can check that none is left open after :meth:`close`.
    :attr:`log_lookups` reads the session log by id for every part of the store and
    counts the rows QuestDB's symbol lookup missed (:class:`LogLookups`; its testing
    hook ``on_lookup``); ``bench/log_visibility.py`` reads its counts.
    """

    def __init__(self, url: str, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        """``retry``'s ``busy_*`` bound the one retry inside this backend (config.RetryPolicy)."""
        self.url = url
        self.address = QuestDBAddress.from_url(url)
        self._db = Connections(self.address)
        self.sessions = QuestDBSessionStore(self._db, retry)
        self.ticks = QuestDBTickStore(self._db, self.sessions.lower_tick_floors)
        self.results = QuestDBResultStore(self._db)

    @property
    def idle_reconnect_s(self) -> float:
        """A PG-wire connection unused this long is replaced before its next use: QuestDB
        closes idle connections (``pg.net.connection.timeout``, 300 s by default).
        ``config.QUESTDB_IDLE_RECONNECT_S`` unless set (a test sets it short), or less when
        the server's timeout is shorter (read at :meth:`open`:
        ``config.QUESTDB_IDLE_RECONNECT_SHARE`` of it)."""
        return self._db.idle_reconnect_s

    @idle_reconnect_s.setter
    def idle_reconnect_s(self, seconds: float) -> None:
        self._db.idle_reconnect_s = seconds

    @property
    def log_lookups(self) -> LogLookups:
        return self._db.log_lookups

    @property
    def on_connect(self) -> Callable[[Any], None] | None:
        return self._db.on_connect

    @on_connect.setter
    def on_connect(self, hook: Callable[[Any], None] | None) -> None:
        self._db.on_connect = hook

    async def open(self) -> None:
        await self._db.open()
        try:
            for ddl in SCHEMA:
                async with self._db.writer("create schema") as conn:
                    with ERRORS.wrap("create schema"):
                        await conn.execute(self._db.prefixed(ddl))
            await check_schema(self._db)
            await adopt_idle_timeout(self._db)
            await ensure_tick_send_columns(self._db)
            await ensure_session_symbols(self._db)
            await ensure_session_keys(self._db)
        except BaseException:
            await self._db.close()
            raise
        await self.ticks.open()  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.ticks.close()  # type: ignore[attr-defined]
        await self._db.close()

    @property
    def timeout_s(self) -> float:
        return self._db.timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        self._db.timeout_s = value

    @property
    def log_transaction_max_s(self) -> float:
        """A session-log transaction still open this long is abandoned
        (``config.QUESTDB_LOG_TRANSACTION_MAX_S`` unless set)."""
        return self._db.log_transaction_max_s

    @log_transaction_max_s.setter
    def log_transaction_max_s(self, seconds: float) -> None:
        self._db.log_transaction_max_s = seconds

    @property
    def write_failure(self) -> str | None:
        return self._db.health.failure

    @property
    def write_failures(self) -> int:
        return self._db.health.failures

    @property
    def write_health(self) -> WriteHealth:
        return self._db.health

    @property
    def symbol_misses(self) -> dict[tuple[str, str], int]:
        return dict(self._db.symbol_misses.counts)

    async def check_ready(self) -> None:
        """A read; and while writes are failing, a use of the write connection (a
        ``SELECT 1`` through it, reconnecting if need be) must work again too."""
        if self._db.health.failure is not None:
            async with self._db.writer("probe the store") as conn:
                await conn.execute("SELECT 1")
            failing = self._db.health.failure  # still within its hold time
            if failing is not None:
                raise StoreUnavailable(f"QuestDB writes failed moments ago ({failing})")
        await super().check_ready()


__all__ = ["QuestDBStore"]
