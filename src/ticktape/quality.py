"""Data quality of one recorded stream (a symbol and data type), from its rows and gaps.

Pure computation, no I/O: the numbers the quality report shows per symbol and
data type — rows, first and last exchange time, rate, gaps (count, total and
longest duration, messages known lost), disconnects and sequence breaks,
out-of-order rows, receive latency (local receive time minus exchange time)
percentiles, coverage: the share of the session's wall time not inside a gap —
and, from the session's ``feed_counts`` notes (:func:`feed_totals`), duplicates
dropped per symbol and malformed messages per kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ticktape.domain import DataType, Reason, SessionEvent
from ticktape.ticks import FeedCounts, Gap, GapCause, Int64Array

RECONNECT_CAUSES = (GapCause.DISCONNECT, GapCause.STALE)


@dataclass(frozen=True)
class StreamQuality:
    symbol: str
    data_type: DataType
    rows: int
    first_ts_us: int | None
    last_ts_us: int | None
    rate_per_s: float  # rows per second of the session's wall time
    gaps: tuple[Gap, ...]
    gap_total_s: float  # union of the gaps within the session's window
    gap_longest_s: float
    lost_known: int  # messages the exchange's sequence numbers say are missing
    reconnects: int  # gaps caused by a disconnect or a stall
    sequence_breaks: int
    out_of_order: int  # rows older than the row before them
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    coverage_pct: float  # share of the window outside every gap
    duplicates_dropped: int = 0  # trades the feed dropped as already seen (stored notes)

    def to_dict(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "data_type": self.data_type.value,
            "rows": self.rows,
            "first_ts_us": self.first_ts_us,
            "last_ts_us": self.last_ts_us,
            "rate_per_s": self.rate_per_s,
            "gaps": {
                "count": len(self.gaps),
                "total_s": self.gap_total_s,
                "longest_s": self.gap_longest_s,
                "lost_known": self.lost_known,
                "rows": [
                    {
                        "start_us": g.start_us,
                        "end_us": g.end_us,
                        "cause": g.cause.value,
                        "lost": g.lost,
                        "detail": g.detail,
                    }
                    for g in self.gaps
                ],
            },
            "reconnects": self.reconnects,
            "sequence_breaks": self.sequence_breaks,
            "out_of_order": self.out_of_order,
            "latency_ms": {
                "p50": self.latency_p50_ms,
                "p99": self.latency_p99_ms,
                "max": self.latency_max_ms,
            },
            "coverage_pct": self.coverage_pct,
            "duplicates_dropped": self.duplicates_dropped,
        }


def feed_totals(events: Iterable[SessionEvent]) -> tuple[dict[str, int], dict[str, int]]:
    """Duplicates dropped per symbol and malformed messages per kind, over the session's
    ``feed_counts`` notes: the newest note of each run (its counts are cumulative),
    summed over the runs (a resumed session has one per owner)."""
    newest: dict[str, FeedCounts] = {}
    for event in events:  # oldest first: a later note of a run replaces an earlier one
        if event.reason == Reason.FEED_COUNTS:
            counts = FeedCounts.load(event.detail)
            if counts is not None:
                newest[counts.run] = counts
    duplicates: dict[str, int] = {}
    malformed: dict[str, int] = {}
    for counts in newest.values():
        for symbol, n in counts.duplicates.items():
            duplicates[symbol] = duplicates.get(symbol, 0) + n
        for kind, n in counts.malformed.items():
            malformed[kind] = malformed.get(kind, 0) + n
    return duplicates, dict(sorted(malformed.items()))


def _union_s(gaps: Sequence[Gap], start_us: int, end_us: int) -> float:
    """Seconds of ``[start_us, end_us]`` covered by at least one gap."""
    spans = sorted(
        (max(g.start_us, start_us), min(g.end_us, end_us))
        for g in gaps
        if g.end_us > start_us and g.start_us < end_us
    )
    total = 0
    cur_start = cur_end = None
    for s, e in spans:
        if cur_end is None or s > cur_end:
            if cur_end is not None and cur_start is not None:
                total += cur_end - cur_start
            cur_start, cur_end = s, e
        else:
            cur_end = max(cur_end, e)
    if cur_end is not None and cur_start is not None:
        total += cur_end - cur_start
    return total / 1e6


def stream_quality(
    symbol: str,
    data_type: DataType,
    ts_us: Int64Array,
    recv_us: Int64Array,
    gaps: Sequence[Gap],
    window: tuple[int, int],
    duplicates: int = 0,
) -> StreamQuality:
    """The quality of one stream; ``window`` is the session's (start, end) in µs;
    ``duplicates``: rows the feed dropped as already seen (:func:`feed_totals`)."""
    start_us, end_us = window
    if end_us < start_us:
        raise ValueError("the window ends before it starts")
    mine = tuple(
        sorted(
            (g for g in gaps if g.symbol == symbol and g.data_type is data_type),
            key=lambda g: (g.start_us, g.end_us),
        )
    )
    n = int(ts_us.shape[0])
    wall_s = (end_us - start_us) / 1e6
    gap_total = _union_s(mine, start_us, end_us)
    known = recv_us >= 0  # a row stored without its receive time (-1) has no latency
    latency = (recv_us[known] - ts_us[known]) / 1000.0 if n else np.empty(0)
    m = int(latency.shape[0])
    return StreamQuality(
        symbol=symbol,
        data_type=data_type,
        rows=n,
        first_ts_us=int(ts_us.min()) if n else None,
        last_ts_us=int(ts_us.max()) if n else None,
        rate_per_s=n / wall_s if wall_s > 0 else 0.0,
        gaps=mine,
        gap_total_s=gap_total,
        gap_longest_s=max((g.duration_s for g in mine), default=0.0),
        lost_known=sum(g.lost or 0 for g in mine),
        reconnects=sum(1 for g in mine if g.cause in RECONNECT_CAUSES),
        sequence_breaks=sum(1 for g in mine if g.cause is GapCause.SEQUENCE_BREAK),
        out_of_order=int(np.count_nonzero(np.diff(ts_us) < 0)) if n > 1 else 0,
        latency_p50_ms=float(np.percentile(latency, 50)) if m else None,
        latency_p99_ms=float(np.percentile(latency, 99)) if m else None,
        latency_max_ms=float(latency.max()) if m else None,
        coverage_pct=100.0 * (1 - gap_total / wall_s) if wall_s > 0 else 100.0,
        duplicates_dropped=duplicates,
    )
