"""Tenures and fences: how the QuestDB backend keeps a stale owner's late ticks out.

SQLite checks a tick writer's ownership in the transaction that inserts its
rows, so a reaped owner can store nothing. QuestDB cannot: ticks go in over ILP,
which has no transaction shared with the session log, so an owner that passed
its ownership check and was then paused (SIGSTOP, a stall) can land one batch
*after* it was reaped and counted. The rows cannot be refused, so they are
fenced instead:

- A **tenure** is one owner's time with a session, numbered by the session's
  version when that owner took it (start or claim). The session log carries the
  current tenure number, and every tick row carries the tenure its writer checked
  (column ``tenure``) plus its batch ``seq`` (the feed block number, stored in
  order within a tenure; see :mod:`ticktape.ticks`). The tenure is part of the
  DEDUP keys, so a stale owner's late row never replaces the new owner's row with
  the same key.
- **Sealing** a tenure (``TickStore.seal``, written by the transition or claim
  that ends it) records per tick table the last batch it counted. From then on
  every count, read and position leaves out rows of that tenure beyond the
  fence — precisely the rows that landed after the count. If the tenure's last
  ILP send had landed in some tick tables and not all when counted (one request's
  tables commit on their own), the seal cuts every table before that send's first
  batch, so trades and books of the blocks kept agree (``_ticks.py``, ``QuestDBTickStore._cuts``).

Gap rows (``tt_gaps``) are written over PG wire after the same kind of check, so
a paused owner can land a gap row late too. Each gap row carries its writer's
tenure and a write sequence (``write_seq``, increasing within the writing
process); a seal also records the tenure's last gap ``write_seq``, and gap reads
leave out rows of a sealed tenure past it. Fences sealed by a build without
this (three numbers) keep every gap row of their tenure.

A tenure that was never sealed (a terminal transition of a session that never
ran) keeps all its rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ticktape.errors import StoreError

NO_BATCH = -1  # fence of a table where the tenure stored nothing


@dataclass(frozen=True, slots=True)
class Fence:
    """The end of one tenure: the last batch seq counted in each tick table."""

    tenure: int
    trades: int = NO_BATCH
    orderbook: int = NO_BATCH
    gaps: int | None = NO_BATCH  # last gap write_seq; None: sealed before gaps were fenced

    def numbers(self) -> list[int]:
        head = [self.tenure, self.trades, self.orderbook]
        return head if self.gaps is None else [*head, self.gaps]

    def dump(self) -> str:
        return json.dumps(self.numbers())

    @classmethod
    def load(cls, text: str) -> Fence:
        try:
            numbers = json.loads(text)
            if len(numbers) == 3:  # sealed by a build that did not fence gap rows
                tenure, trades, orderbook = numbers
                return cls(int(tenure), int(trades), int(orderbook), None)
            tenure, trades, orderbook, gaps = numbers
            return cls(int(tenure), int(trades), int(orderbook), int(gaps))
        except (ValueError, TypeError) as exc:
            raise StoreError(f"malformed QuestDB tick fence {text!r}") from exc

    def last(self, table: str) -> int | None:
        if table == "gaps":
            return self.gaps
        return self.orderbook if table == "orderbook" else self.trades


@dataclass(frozen=True, slots=True)
class Tenure:
    """A session's current tenure number (0: never owned) and the fences of its closed
    tenures."""

    number: int = 0
    fences: tuple[Fence, ...] = ()

    @classmethod
    def parse(cls, number: Any, fences: Any) -> Tenure:
        """From the session log's ``tenure`` and ``fences`` columns (NULL: never owned)."""
        closed = tuple(Fence.load(json.dumps(f)) for f in json.loads(fences)) if fences else ()
        return cls(0 if number is None else int(number), closed)

    def dump_fences(self) -> str | None:
        if not self.fences:
            return None
        return json.dumps([f.numbers() for f in self.fences])

    def sealed(self, fence: Fence) -> Tenure | None:
        """This tenure closed at ``fence``; None if the fence belongs to another tenure."""
        if fence.tenure != self.number:
            return None
        kept = tuple(f for f in self.fences if f.tenure != fence.tenure)
        return Tenure(self.number, (*kept, fence))

    def opened(self, number: int) -> Tenure:
        return Tenure(number, self.fences)

    def excluded(self, table: str) -> tuple[str, list[object]]:
        """SQL (`` AND NOT (...)``, or empty) leaving out late rows of ``table``
        (``trades``, ``orderbook`` or ``gaps``), with its parameters."""
        fences = [f for f in self.fences if f.last(table) is not None]
        if not fences:
            return "", []
        seq = "write_seq" if table == "gaps" else "batch_seq"
        terms = " OR ".join(f"(tenure = %s AND {seq} > %s)" for _ in fences)
        params: list[object] = []
        for f in fences:
            params.extend([f.tenure, f.last(table)])
        return f" AND NOT ({terms})", params


def excluded_many(tenures: dict[str, Tenure], table: str) -> tuple[str, list[object]]:
    """:meth:`Tenure.excluded` for a query over several sessions (``session_id`` of
    each row): each session's late rows of ``table`` left out by its own fences."""
    seq = "write_seq" if table == "gaps" else "batch_seq"
    terms: list[str] = []
    params: list[object] = []
    for session_id, tenure in sorted(tenures.items()):
        for f in tenure.fences:
            last = f.last(table)
            if last is None:
                continue
            terms.append(f"(session_id = %s AND tenure = %s AND {seq} > %s)")
            params.extend([session_id, f.tenure, last])
    if not terms:
        return "", []
    return f" AND NOT ({' OR '.join(terms)})", params


def with_late_rows(
    rows: Sequence[Sequence[Any]], tenures: dict[str, Tenure], table: str, last_at: int
) -> list[str]:
    """The sessions of ``rows`` that have rows of ``table`` past one of their fences.

    ``rows`` come from a query over several sessions *without* their fences, grouped by
    session and tenure: ``session_id`` first, ``tenure`` second, and at ``last_at`` the
    largest ``batch_seq`` (``write_seq`` for gaps) of the group's rows. A fenced tenure
    has late rows exactly when that largest number is past its fence, so every other
    session's rows are already what its fences keep, and only these few (a stale owner's
    late writes) need the query again with :func:`excluded_many`."""
    late: set[str] = set()
    for row in rows:
        sid, number, biggest = str(row[0]), row[1], row[last_at]
        if biggest is None or sid not in tenures:
            continue
        for fence in tenures[sid].fences:
            last = fence.last(table)
            if fence.tenure == number and last is not None and int(biggest) > last:
                late.add(sid)
    return sorted(late)
