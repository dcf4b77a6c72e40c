"""Retention: purge finished sessions past a retention, with all their data.

``ticktape gc --older-than 30d`` and the server setting ``TICKTAPE_RETENTION``
run :func:`collect_garbage`: it pages through the sessions that ended before the
cutoff (:meth:`SessionStore.find_finished`), purges them in bounded batches
(:meth:`SessionStore.purge`, a compare-and-set per session that never touches a
session that is not terminal) and then frees what the backend could not delete
at once (:meth:`SessionStore.reclaim`: QuestDB's partitions). Idempotent: a second
run finds nothing. A dry run only lists what a run would purge. docs/operations.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ticktape.config import GC_INTERVAL_S, parse_retention
from ticktape.domain import Session, utcnow
from ticktape.errors import StoreError
from ticktape.store.base import Purged, Store

log = logging.getLogger(__name__)

GC_BATCH = 200  # sessions found and purged per round
__all__ = ["GcProgress", "GcReport", "collect_garbage", "describe", "keep_retention"]
__all__ += ["parse_retention"]


@dataclass(frozen=True)
class GcProgress:
    """After each batch: sessions looked at so far, and what is removed so far."""

    found: int
    purged: Purged


@dataclass
class GcReport:
    """What a run purged (or, a dry run, would purge)."""

    cutoff: datetime
    dry_run: bool
    sessions: list[Session] = field(default_factory=list)  # found past the retention
    purged: Purged = field(default_factory=Purged)
    #: found but not purged: another run purged it first (or it no longer qualified)
    skipped: int = 0

    @property
    def trades(self) -> int:
        """Trades of the found sessions, by their stored counts (equal to their rows)."""
        return sum(s.stats.trades for s in self.sessions)

    @property
    def orderbook(self) -> int:
        return sum(s.stats.orderbook for s in self.sessions)


async def collect_garbage(
    store: Store,
    older_than: timedelta,
    *,
    dry_run: bool = False,
    batch: int = GC_BATCH,
    progress: Callable[[GcProgress], None] | None = None,
    now: datetime | None = None,
) -> GcReport:
    """Purge every session that ended more than ``older_than`` before ``now``."""
    if older_than <= timedelta(0):
        raise ValueError("the retention must be longer than zero")
    report = GcReport((now or utcnow()) - older_than, dry_run)
    after: tuple[datetime, str] | None = None
    while True:
        found = await store.sessions.find_finished(report.cutoff, limit=batch, after=after)
        if not found:
            break
        last = found[-1]
        assert last.ended_at is not None  # a finished session has ended
        after = (last.ended_at, last.id)
        report.sessions.extend(found)
        if not dry_run:
            got = await store.sessions.purge([s.id for s in found], ended_before=report.cutoff)
            report.purged += got
            report.skipped += len(found) - got.sessions
        if progress is not None:
            progress(GcProgress(len(report.sessions), report.purged))
    if not dry_run:
        report.purged += await store.sessions.reclaim(report.cutoff)
    return report


async def keep_retention(
    store: Store, older_than: timedelta, interval_s: float = GC_INTERVAL_S
) -> None:
    """Run :func:`collect_garbage` now and every ``interval_s`` (a server's setting); a
    failed run is logged and tried again next time."""
    while True:
        try:
            report = await collect_garbage(store, older_than)
        except StoreError as exc:
            log.warning("retention: gc failed, will try again: %s", exc)
        else:
            if report.purged.sessions or report.purged.partitions:
                log.info(
                    "retention: purged %d sessions ended before %s (%s)",
                    report.purged.sessions,
                    report.cutoff.isoformat(),
                    describe(report.purged),
                )
        await asyncio.sleep(interval_s)


def describe(purged: Purged) -> str:
    """One line of what was removed."""
    parts = [
        f"{purged.events} events",
        f"{purged.trades} trades",
        f"{purged.orderbook} order-book rows",
        f"{purged.gaps} gaps",
        f"{purged.results} result rows",
    ]
    if purged.partitions:
        parts.append(f"{len(purged.partitions)} partitions, {purged.bytes} bytes")
    return ", ".join(parts)
