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

**The tick floor.** ``session_id`` has no index, so a count by session reads every row
of the tick tables unless it is bounded on ``ts``, the designated timestamp — and a
tick's ``ts`` is the exchange's time, which nothing bounds by itself. So the session
log keeps, per session, a floor (``tick_floor``, microseconds; :attr:`Tenure.floor`)
that every tick row of the session is at or after: the session is created with its
creation time less :data:`TICK_FLOOR_MARGIN_US`, and a writer about to send a row
older than the floor first lowers it, by a compare-and-set append of its own tenure's
row (``QuestDBSessionStore.lower_tick_floors``), and sends only once that committed.
A floor only ever moves down, so a row stored is at or after every floor read since
its send. Counts, seals and positions add ``AND ts >= floor`` (the smallest of their
sessions'), which QuestDB answers by an interval scan of the rows since. A seal's
fence remembers the floor it counted from, and the transition or claim that writes
the fence refuses (:meth:`Tenure.sealed`: a race, decided again) if the floor was
lowered meanwhile: the owner may have stored older rows the seal did not read.
A session created before the floor existed has none (NULL): its counts read every
row, as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ticktape.errors import StoreError

NO_BATCH = -1  # fence of a table where the tenure stored nothing
#: A session's first tick floor lies this far before its creation: the rows of a feed
#: whose clock trails the creating instance's by less never lower it (one append each).
TICK_FLOOR_MARGIN_US = 60_000_000


@dataclass(frozen=True, slots=True)
class Fence:
    """The end of one tenure: the last batch seq counted in each tick table."""

    tenure: int
    trades: int = NO_BATCH
    orderbook: int = NO_BATCH
    gaps: int | None = NO_BATCH  # last gap write_seq; None: sealed before gaps were fenced
    #: The tick floor the seal counted from (None: unbounded). Carried by the seal to its
    #: transition (:meth:`Tenure.sealed`), never stored in the log's ``fences``.
    floor: int | None = None

    def numbers(self) -> list[int]:
        head = [self.tenure, self.trades, self.orderbook]
        return head if self.gaps is None else [*head, self.gaps]

    def dump(self) -> str:
        """The seal's text (``Seal.fence``): the numbers, with the floor counted from."""
        if self.floor is None:
            return json.dumps(self.numbers())
        return json.dumps({"fence": self.numbers(), "floor": self.floor})

    @classmethod
    def load(cls, text: str) -> Fence:
        try:
            loaded = json.loads(text)
            floor = None
            if isinstance(loaded, dict):
                numbers, floor = loaded["fence"], int(loaded["floor"])
            else:
                numbers = loaded
            if len(numbers) == 3:  # sealed by a build that did not fence gap rows
                tenure, trades, orderbook = numbers
                return cls(int(tenure), int(trades), int(orderbook), None, floor)
            tenure, trades, orderbook, gaps = numbers
            return cls(int(tenure), int(trades), int(orderbook), int(gaps), floor)
        except (ValueError, TypeError, KeyError) as exc:
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
    #: Every tick row of the session has ``ts`` at or after this (µs); None: unknown.
    floor: int | None = None

    @classmethod
    def parse(cls, number: Any, fences: Any, floor: Any = None) -> Tenure:
        """From the session log's ``tenure``, ``fences`` and ``tick_floor`` columns
        (NULL: never owned; no fences; no floor)."""
        closed = tuple(Fence.load(json.dumps(f)) for f in json.loads(fences)) if fences else ()
        return cls(
            0 if number is None else int(number), closed, None if floor is None else int(floor)
        )

    def dump_fences(self) -> str | None:
        if not self.fences:
            return None
        return json.dumps([f.numbers() for f in self.fences])

    def sealed(self, fence: Fence) -> Tenure | None:
        """This tenure closed at ``fence``; None if the fence belongs to another tenure,
        or if the floor was lowered since the seal counted from it (rows older than what
        the seal read may be stored)."""
        if fence.tenure != self.number:
            return None
        if fence.floor is not None and (self.floor is None or self.floor < fence.floor):
            return None
        kept = tuple(f for f in self.fences if f.tenure != fence.tenure)
        return Tenure(self.number, (*kept, replace(fence, floor=None)), self.floor)

    def opened(self, number: int) -> Tenure:
        return Tenure(number, self.fences, self.floor)

    def lowered(self, floor: int) -> Tenure:
        """The floor moved down to ``floor`` (never up)."""
        if self.floor is None or floor >= self.floor:
            return self
        return Tenure(self.number, self.fences, floor)

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
