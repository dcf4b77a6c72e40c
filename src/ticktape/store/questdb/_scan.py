"""The active sessions the reconciler scans, read from the session log's recent rows.

A pass of the reconciler needs the id, owner and own lease of every non-terminal
session (``QuestDBSessionStore.scan_leases``). Read with ``LATEST ON`` over the whole
session log that costs O(every session ever stored), finished ones included. Here the
whole log is read once; after that each scan reads only the rows stamped after a
*bound* ``w`` (``WHERE ts > w``, an interval search on the designated timestamp) and
applies them to the set it keeps: a session whose newest row there is non-terminal is
added or updated, one that ended (or was purged) is dropped. A session's rows have
increasing timestamps, so if any of its rows is past ``w`` its newest row is.

A row may commit after a scan with a timestamp at or before that scan's bound (a
commit that lagged its timestamp, a writer's clock behind): the window would never
show it. Such a row changes ``count() WHERE ts <= w``, which QuestDB answers from
partition metadata in constant time, and a non-WAL commit is visible at once. So
each scan first counts the rows at or before its bound and compares that with the
count taken when the bound was set; if they differ the scan reads the whole log
again. The bound trails the newest timestamp by between ``overlap`` and twice that,
so only a row that lands later than that after its timestamp costs a full read. Once
the log has been quiet for the overlap (its newest row stamped at least that long
before this process's clock), the bound moves up to the newest row itself: any row
stamped at or before it that commits later has lagged its timestamp by more than the
overlap, the same promise. Without that, a burst followed by quiet (a bulk import, a
thousand sessions ending at once) would stay in every window until the next write:
each heartbeat and each ``?status=running`` list read the burst's last seconds again
(docs/benchmarks.md, "Stop 30 — lead"). Clocks of writers and readers that differ by
less than the overlap do not change this.

A scan is one round trip: its statements go together in a pipeline and run in
order. Why nothing is missed, for a row stamped ``t`` that commits at ``c`` (the
scan's statements in order: when the bound moves, the count at the new bound ``w'``
— chosen from the newest timestamp the previous scan read, so known before this
one starts; the count at the current bound ``w``, checked; the window ``ts > w``;
the newest timestamp, for the next scan's ``w'``):

- ``t > w``, committed before the window query: read by it.
- ``t > w'``, committed after it: read by the next window (its bound is ``w'``).
- ``w < t <= w'``, committed after the count at ``w'``: the next scan's count at
  ``w'`` differs from it, so the next scan reads the whole log.
- ``t <= w``, committed after the count at ``w`` was set: this scan's count at ``w``
  differs, or (committed after that count) the next scan's count at ``w'`` (``>= w``)
  differs from the one taken before it landed.

Counts that differ for another reason (a partition dropped by ``reclaim``) only cost
a full read; a drop and a late row between the same two scans cancel out in the
count, which is why ``reclaim`` on this process asks for a full read and, on another
process, the full read every ``full_every_s`` bounds how long such a row stays
unseen.

The set is only an index of where to look: ``scan_leases`` reads the full newest
row of every session it finds expired again and decides on that, so a stale entry
can cost a read, never a wrong reap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ticktape.domain import utcnow

#: How far the window's bound trails the newest timestamp (between this and twice
#: this): a row that commits later than this after its timestamp costs a full read.
LEASE_SCAN_OVERLAP_S = 10.0
#: The whole session log is read again at least this often (see the module doc).
LEASE_SCAN_FULL_EVERY_S = 600.0
#: The overlap of the index a heartbeat lists its sessions from: each heartbeat reads
#: the whole rows of the window (every session that changed in the last 2-4 s), so it
#: is kept short; a row that commits later than this after its timestamp costs a full
#: read, as above.
HEARTBEAT_SCAN_OVERLAP_S = 2.0
_ACTIVE = ("pending", "running", "stopping")
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)

Statement = tuple[str, tuple[Any, ...] | list[Any]]
#: Runs statements in order in one round trip (a pipeline on one connection) and
#: answers each one's rows: ``queries(statements, what)``.
Queries = Callable[[list[Statement], str], Awaitable[list[list[tuple[Any, ...]]]]]
#: session id → (owner, own lease expiry) of a non-terminal session
Leases = dict[str, tuple[str | None, datetime | None]]
#: What the reconciler's scan reads of each session (``Leases``); ``id``, ``status`` and
#: ``owner`` are in every column list the set is kept with.
LEASE_COLUMNS = ("id", "owner", "lease_expires_at", "status", "ts")


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


class ActiveSessions:
    """The newest rows of the non-terminal sessions, in ``columns`` (see the module doc).

    The reconciler keeps the ids, owners and own leases (:data:`LEASE_COLUMNS`,
    :meth:`leases`); an instance's heartbeat keeps whole rows, to list the sessions it
    owns (``QuestDBSessionStore.renew_instance``). ``overlap_s`` and ``full_every_s``
    default to the constants above; a test shrinks them to show what each one covers.
    ``full_reads`` and ``window_reads`` count the reads of each kind (a test checks which
    one a scan did), ``shared_reads`` the calls answered by another call's read."""

    def __init__(
        self,
        queries: Queries,
        *,
        columns: tuple[str, ...] = LEASE_COLUMNS,
        overlap_s: float = LEASE_SCAN_OVERLAP_S,
        full_every_s: float = LEASE_SCAN_FULL_EVERY_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``queries`` runs the reads, unless :meth:`rows` is given one of its own;
        ``clock`` tells when the log has been quiet for the overlap (a test moves it)."""
        self.clock = clock
        self._default_queries = queries
        self._queries = queries
        self._columns = ", ".join(columns)
        self._id = columns.index("id")
        self._status = columns.index("status")
        self.overlap = timedelta(seconds=overlap_s)
        self.full_every_s = full_every_s
        self._known: dict[str, tuple[Any, ...]] = {}
        self._bound: datetime | None = None  # None: read the whole log next
        self._below = 0  # rows at or before the bound when it was set
        # where the next scan moves the bound to (None: it stays), from the newest row
        # the last scan saw: chosen before the scan, so that its count goes first
        self._next: datetime | None = None
        self._full_at = 0.0
        self._lock = asyncio.Lock()
        self._begun = 0  # reads begun so far, each numbered by this count as it begins
        self._done = 0  # the number of the last read that completed
        self.full_reads = 0
        self.window_reads = 0
        self.shared_reads = 0  # calls answered by a read that began after they did
        self.window_rows = 0  # rows the last window read returned (active and ended)

    async def leases(self) -> Leases:
        """Every non-terminal session's (owner, own lease), as of this read (kept with
        :data:`LEASE_COLUMNS`)."""
        return {sid: (row[1], _utc(row[2])) for sid, row in (await self.rows()).items()}

    async def rows(self, queries: Queries | None = None) -> dict[str, tuple[Any, ...]]:
        """Every non-terminal session's newest row (its ``columns``), as of this read;
        ``queries`` runs this read's queries (a connection the caller holds). A read is
        one round trip, two when it reads the whole log. Calls that arrive while a read
        is under way wait for it and then share one read: each one's answer comes from
        a read that began after the call did (a read under way when a call arrives may
        have missed a row committed just before the call; the next one cannot)."""
        arrived = self._begun
        async with self._lock:
            if self._done > arrived:
                # a read that began after this call did has completed: it saw every row
                # committed before this call, so its answer is this call's too (the
                # calls that queued behind one read share the next one)
                self.shared_reads += 1
                return dict(self._known)
            self._begun += 1
            number = self._begun
            self._queries = queries or self._default_queries
            bound = self._bound  # this scan's window starts here, even if the bound moves
            due = time.monotonic() - self._full_at >= self.full_every_s
            if bound is None or due or not await self._read_window(bound):
                await self._read_all()
            self._done = number
            return dict(self._known)

    def forget(self) -> None:
        """Read the whole log next time (``reclaim`` dropped partitions)."""
        self._bound = None

    @staticmethod
    def _count_to(bound: datetime) -> Statement:
        return "SELECT count() FROM tt_session_log WHERE ts <= %s", (bound,)

    _NEWEST: Statement = ("SELECT max(ts) FROM tt_session_log", ())

    def _plan_next(self, newest_rows: list[tuple[Any, ...]]) -> None:
        """The bound the next scan moves to: the newest row itself if the log has been
        quiet for the overlap and the bound trails it; else, if the bound trails the
        newest row by over twice the overlap, the overlap before it."""
        newest = (_utc(newest_rows[0][0]) or _BEGINNING) if newest_rows else _BEGINNING
        bound = self._bound
        assert bound is not None
        if newest <= self.clock() - self.overlap:
            self._next = newest if newest > bound else None
        else:
            self._next = newest - self.overlap if newest - bound > 2 * self.overlap else None

    async def _read_all(self) -> None:
        self._full_at = time.monotonic()
        [newest] = await self._queries([self._NEWEST], "scan leases")
        top = (_utc(newest[0][0]) or _BEGINNING) if newest else _BEGINNING
        bound = max(top - self.overlap, _BEGINNING)
        # the count before the read: a row landing after it shows in the next count
        counted, rows = await self._queries(
            [
                self._count_to(bound),
                (
                    f"SELECT * FROM (SELECT {self._columns} FROM tt_session_log LATEST ON ts "
                    f"PARTITION BY id) WHERE status IN {_ACTIVE!r}",
                    (),
                ),
            ],
            "scan leases",
        )
        self._known = {str(row[self._id]): row for row in rows}
        self._bound, self._below = bound, int(counted[0][0])
        self._next = None
        self.full_reads += 1

    async def _read_window(self, bound: datetime) -> bool:
        """The rows past ``bound``, applied; False (nothing applied) if a row landed at or
        before it since it was set. One round trip, in this order: the count at the bound
        the scan moves to (before the check and the window: a row landing behind it
        later changes it), the count at ``bound`` (checked), the window, the newest
        row's timestamp (which decides where the next scan moves the bound)."""
        moved = self._next
        statements = [] if moved is None else [self._count_to(moved)]
        statements += [
            self._count_to(bound),
            # the window's active sessions in full, then the ids of those that ended there
            # (a busy log's window holds mostly ended ones: their rows are not sent); a
            # session that starts or ends between the two is in the next window too
            (
                f"SELECT * FROM (SELECT {self._columns} FROM tt_session_log WHERE ts > %s "
                f"LATEST ON ts PARTITION BY id) WHERE status IN {_ACTIVE!r}",
                (bound,),
            ),
            (
                "SELECT id FROM (SELECT id, status, ts FROM tt_session_log WHERE ts > %s "
                f"LATEST ON ts PARTITION BY id) WHERE status NOT IN {_ACTIVE!r}",
                (bound,),
            ),
            self._NEWEST,
        ]
        answers = await self._queries(statements, "scan leases")
        below_moved = None if moved is None else int(answers.pop(0)[0][0])
        counted, active, ended, newest = answers
        if int(counted[0][0]) != self._below:
            return False
        for row in active:
            self._known[str(row[self._id])] = row
        for (sid,) in ended:
            self._known.pop(str(sid), None)
        self.window_rows = len(active) + len(ended)
        # only now: a scan that failed before this point is done again from `bound`
        if moved is not None and below_moved is not None:
            self._bound, self._below = moved, below_moved
        self._plan_next(newest)
        self.window_reads += 1
        return True
