"""QuestDB result store: results of backtest and paper sessions in four non-WAL tables.

Written on a connection of their own (``Connections.results_writer``), so a large
part never holds up the session log's writes.

QuestDB has no DELETE, so "replace" is done by names: a write appends every row
under a fresh ``run`` id, then one summary row naming that run and the writer.
Readers take the newest summary row written by the session's *current* owner and
read the rows of its run only; rows of older runs, or of a half-finished write
(rows without their summary), are never read. Fencing: the writer's ownership is
checked against the session log just before the write (as tick writes are); a
stale owner that passed the check and wrote after a claim wrote under its own
owner token, which is no longer the session's owner, so its results are ignored.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from ticktape.domain import ACTIVE_STATUSES, utcnow
from ticktape.errors import LeaseLost
from ticktape.store.base import (
    DEFAULT_DATA_LIMIT,
    MAX_DATA_LIMIT,
    ResultPart,
    ResultRow,
    ResultStore,
    ResultSummary,
    ResultTable,
    StoredResults,
)
from ticktape.store.questdb._db import ERRORS, Connections, insert_rows
from ticktape.store.rules import check_continues, check_limit


class QuestDBResultStore(ResultStore):
    def __init__(self, connections: Connections) -> None:
        self._db = connections

    async def _session(self, session_id: str) -> tuple[str, str | None] | None:
        what = "read session owner"
        async with self._db.reader(what) as conn:
            rows = await self._db.log_lookups.read(
                self._db, conn, "id, status, owner", [session_id], what
            )
        if not rows:
            return None
        return str(rows[0][1]), None if rows[0][2] is None else str(rows[0][2])

    async def _fence(self, session_id: str, owner: str) -> None:
        """:class:`LeaseLost` unless ``owner`` holds the session's lease and it is active."""
        found = await self._session(session_id)
        active = {s.value for s in ACTIVE_STATUSES}
        if found is None or found[0] not in active or found[1] != owner:
            detail = "unknown session" if found is None else f"status {found[0]}, owner {found[1]}"
            raise LeaseLost(session_id, owner, f"results write rejected ({detail})")

    async def write(self, session_id: str, results: StoredResults, *, owner: str) -> None:
        await self._fence(session_id, owner)
        run = uuid.uuid4().hex
        now = utcnow()
        what = "write results"
        async with self._db.results_writer(what) as conn:
            for table in ("orders", "fills", "equity"):
                lines = getattr(results, table)
                await self._insert_rows(conn, table, session_id, run, 0, lines, now, what)
            counts = (len(results.orders), len(results.fills), len(results.equity))
            await self._insert_summary(conn, session_id, run, owner, results, counts, now, what)

    async def _insert_rows(
        self,
        conn: Any,
        table: str,
        session_id: str,
        run: str,
        at: int,
        lines: list[str],
        now: datetime,
        what: str,
    ) -> None:
        """``lines`` as rows ``at``, ``at`` + 1, … of ``run`` in the results table ``table``."""
        name = self._db.prefixed(f"tt_result_{table}")
        rows = [(session_id, run, n, line, now) for n, line in enumerate(lines, at)]
        with ERRORS.wrap(what):
            await insert_rows(conn, f"INSERT INTO {name} (session_id, run, seq, body, ts)", rows)

    async def _insert_summary(
        self,
        conn: Any,
        session_id: str,
        run: str,
        owner: str,
        results: StoredResults | ResultPart,
        counts: tuple[int, int, int],
        now: datetime,
        what: str,
    ) -> None:
        """The summary row that makes the first ``counts`` rows of ``run`` visible."""
        with ERRORS.wrap(what):
            await conn.execute(
                self._db.prefixed(
                    "INSERT INTO tt_result_summary (session_id, run, owner, hash, status, "
                    "summary, orders, fills, equity, ts) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                ),
                [
                    session_id,
                    run,
                    owner,
                    results.hash,
                    results.status,
                    results.summary,
                    *counts,
                    now,
                ],
            )

    async def append(self, session_id: str, part: ResultPart, *, owner: str) -> None:
        await self._fence(session_id, owner)
        current = await self._current(session_id)
        now = utcnow()
        if current is not None and current[0] == part.run:
            s = current[1]
            if not check_continues(part, s.orders, s.fills, s.equity):
                return  # a retry of the part stored last
            counts = (s.orders, s.fills, s.equity)
            # the newest summary row is the current one: never two at the same instant
            now = max(now, s.written_at + timedelta(microseconds=1))
        else:
            check_continues(part, 0, 0, 0)  # a new run: the older run's rows are not read
            counts = (0, 0, 0)
        what = "append results"
        async with self._db.results_writer(what) as conn:
            for table, at in zip(("orders", "fills", "equity"), counts, strict=True):
                lines = getattr(part, table)
                await self._insert_rows(conn, table, session_id, part.run, at, lines, now, what)
            # rows first, then the summary that makes them visible: a part that fails
            # half-way leaves rows no reader returns (seq at or above the counts)
            reach = (
                counts[0] + len(part.orders),
                counts[1] + len(part.fills),
                counts[2] + len(part.equity),
            )
            await self._insert_summary(conn, session_id, part.run, owner, part, reach, now, what)

    async def _current(self, session_id: str) -> tuple[str, ResultSummary] | None:
        found = await self._session(session_id)
        if found is None or found[1] is None:
            return None
        async with self._db.reader("read results summary") as conn:
            cur = await conn.execute(
                self._db.prefixed(
                    "SELECT run, hash, status, summary, orders, fills, equity, ts "
                    "FROM tt_result_summary WHERE session_id = %s AND owner = %s "
                    "ORDER BY ts DESC LIMIT 1"
                ),
                [session_id, found[1]],
            )
            row = await cur.fetchone()
        if row is None:
            return None
        run, h, status, summary, orders, fills, equity, ts = row
        return str(run), ResultSummary(
            session_id,
            str(h),
            str(status),
            str(summary),
            int(orders),
            int(fills),
            int(equity),
            ts.replace(tzinfo=UTC),
        )

    async def summary(self, session_id: str) -> ResultSummary | None:
        # bounded like every read: a frozen server fails it as a store fault, never hangs it
        current = await self._db.bounded(self._current(session_id), "read results summary")
        return None if current is None else current[1]

    async def rows(
        self,
        session_id: str,
        table: ResultTable,
        *,
        after: int = -1,
        limit: int = DEFAULT_DATA_LIMIT,
    ) -> list[ResultRow]:
        check_limit(limit, MAX_DATA_LIMIT)
        return await self._db.bounded(
            self._rows(session_id, table, after, limit), f"read results {table}"
        )

    async def _rows(
        self, session_id: str, table: ResultTable, after: int, limit: int
    ) -> list[ResultRow]:
        current = await self._current(session_id)
        if current is None:
            return []
        # rows of whole parts only (below the summary's count); DISTINCT: a part retried
        # after a failure half-way stored some rows twice, identically
        count = getattr(current[1], table)
        async with self._db.reader(f"read results {table}") as conn:
            cur = await conn.execute(
                self._db.prefixed(
                    f"SELECT DISTINCT seq, body FROM tt_result_{table} WHERE session_id = %s "
                    "AND run = %s AND seq > %s AND seq < %s ORDER BY seq LIMIT %s"
                ),
                [session_id, current[0], after, count, limit],
            )
            return [ResultRow(int(seq), str(body)) for seq, body in await cur.fetchall()]
