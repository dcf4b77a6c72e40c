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
  fence — precisely the rows that landed after the count.

A tenure that was never sealed (a terminal transition of a session that never
ran) keeps all its rows.
"""

from __future__ import annotations

import json
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

    def dump(self) -> str:
        return json.dumps([self.tenure, self.trades, self.orderbook])

    @classmethod
    def load(cls, text: str) -> Fence:
        try:
            tenure, trades, orderbook = json.loads(text)
            return cls(int(tenure), int(trades), int(orderbook))
        except (ValueError, TypeError) as exc:
            raise StoreError(f"malformed QuestDB tick fence {text!r}") from exc

    def last(self, table: str) -> int:
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
        return json.dumps([[f.tenure, f.trades, f.orderbook] for f in self.fences])

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
        (``trades`` or ``orderbook``), with its parameters."""
        if not self.fences:
            return "", []
        terms = " OR ".join("(tenure = %s AND batch_seq > %s)" for _ in self.fences)
        params: list[object] = []
        for f in self.fences:
            params.extend([f.tenure, f.last(table)])
        return f" AND NOT ({terms})", params
