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
so only a row that lands later than that after its timestamp costs a full read.

Why nothing is missed, for a row stamped ``t`` that commits at ``c`` (the scan's
queries in order: the newest timestamp; when the bound moves, the count at the new
bound ``w'``; the count at the current bound ``w``, checked; the window ``ts > w``):

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

#: How far the window's bound trails the newest timestamp (between this and twice
#: this): a row that commits later than this after its timestamp costs a full read.
LEASE_SCAN_OVERLAP_S = 10.0
#: The whole session log is read again at least this often (see the module doc).
LEASE_SCAN_FULL_EVERY_S = 600.0
_ACTIVE = ("pending", "running", "stopping")
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)

Query = Callable[[str, tuple[Any, ...] | list[Any], str], Awaitable[list[tuple[Any, ...]]]]
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
    one a scan did)."""

    def __init__(
        self,
        query: Query,
        *,
        columns: tuple[str, ...] = LEASE_COLUMNS,
        overlap_s: float = LEASE_SCAN_OVERLAP_S,
        full_every_s: float = LEASE_SCAN_FULL_EVERY_S,
    ) -> None:
        """``query`` runs the reads, unless :meth:`rows` is given one of its own."""
        self._default_query = query
        self._query = query
        self._columns = ", ".join(columns)
        self._id = columns.index("id")
        self._status = columns.index("status")
        self.overlap = timedelta(seconds=overlap_s)
        self.full_every_s = full_every_s
        self._known: dict[str, tuple[Any, ...]] = {}
        self._bound: datetime | None = None  # None: read the whole log next
        self._below = 0  # rows at or before the bound when it was set
        self._full_at = 0.0
        self._lock = asyncio.Lock()
        self.full_reads = 0
        self.window_reads = 0

    async def leases(self) -> Leases:
        """Every non-terminal session's (owner, own lease), as of this read (kept with
        :data:`LEASE_COLUMNS`)."""
        return {sid: (row[1], _utc(row[2])) for sid, row in (await self.rows()).items()}

    async def rows(self, query: Query | None = None) -> dict[str, tuple[Any, ...]]:
        """Every non-terminal session's newest row (its ``columns``), as of this read;
        ``query`` runs this read's queries (a connection the caller holds)."""
        async with self._lock:
            self._query = query or self._default_query
            bound = self._bound  # this scan's window starts here, even if the bound moves
            due = time.monotonic() - self._full_at >= self.full_every_s
            moved = None if bound is None or due else await self._checked_bound(bound)
            if bound is None or moved is None:
                await self._read_all()
            else:
                await self._read_window(bound)
                # only now: a scan that failed before this point is done again from `bound`
                self._bound, self._below = moved
            return dict(self._known)

    def forget(self) -> None:
        """Read the whole log next time (``reclaim`` dropped partitions)."""
        self._bound = None

    async def _count_to(self, bound: datetime) -> int:
        rows = await self._query(
            "SELECT count() FROM tt_session_log WHERE ts <= %s", (bound,), "scan leases"
        )
        return int(rows[0][0])

    async def _newest(self) -> datetime:
        top = await self._query("SELECT max(ts) FROM tt_session_log", (), "scan leases")
        return _utc(top[0][0]) or _BEGINNING if top else _BEGINNING

    async def _checked_bound(self, bound: datetime) -> tuple[datetime, int] | None:
        """The bound for the next scan and the count of rows at or before it — moved if
        the current one trails the newest row by over twice the overlap — or None if a
        row landed at or before the current bound since it was set."""
        newest = await self._newest()
        moved, below_moved = bound, self._below
        if newest - bound > 2 * self.overlap:
            moved = newest - self.overlap
            below_moved = await self._count_to(moved)  # before the check below
        if await self._count_to(bound) != self._below:
            return None
        return moved, below_moved

    async def _read_all(self) -> None:
        self._full_at = time.monotonic()
        bound = max(await self._newest() - self.overlap, _BEGINNING)
        below = await self._count_to(bound)  # before the read: a row landing after it shows
        rows = await self._query(
            f"SELECT * FROM (SELECT {self._columns} FROM tt_session_log LATEST ON ts "
            f"PARTITION BY id) WHERE status IN {_ACTIVE!r}",
            (),
            "scan leases",
        )
        self._known = {str(row[self._id]): row for row in rows}
        self._bound, self._below = bound, below
        self.full_reads += 1

    async def _read_window(self, bound: datetime) -> None:
        """The rows past ``bound`` (checked: nothing landed before it unread)."""
        rows = await self._query(
            f"SELECT {self._columns} FROM tt_session_log WHERE ts > %s "
            "LATEST ON ts PARTITION BY id",
            (bound,),
            "scan leases",
        )
        for row in rows:
            if str(row[self._status]) in _ACTIVE:
                self._known[str(row[self._id])] = row
            else:
                self._known.pop(str(row[self._id]), None)
        self.window_reads += 1
