"""Per-stream quality figures from rows and gaps."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from ticktape.domain import DataType, Reason, SessionEvent, SessionStatus
from ticktape.feeds.contract import Gap, GapCause
from ticktape.quality import feed_totals, stream_quality
from ticktape.ticks import FeedCounts

T = DataType.TRADES
S = 1_000_000  # one second in µs


def test_figures_from_rows_and_gaps() -> None:
    ts = np.array([0, 1 * S, 2 * S, 1 * S + 500, 8 * S], dtype=np.int64)  # one out of order
    recv = ts + np.array([1000, 2000, 3000, 4000, 100_000], dtype=np.int64)
    gaps = [
        Gap("A", T, 2 * S, 4 * S, GapCause.DISCONNECT, lost=5),
        Gap("A", T, 3 * S, 6 * S, GapCause.SEQUENCE_BREAK, lost=2),  # overlaps the first
        Gap("A", DataType.ORDERBOOK, 0, 9 * S, GapCause.STALE),  # another stream
        Gap("B", T, 0, 9 * S, GapCause.STALE),  # another symbol
    ]
    q = stream_quality("A", T, ts, recv, gaps, (0, 10 * S))
    assert (q.rows, q.first_ts_us, q.last_ts_us) == (5, 0, 8 * S)
    assert q.rate_per_s == pytest.approx(0.5)
    assert len(q.gaps) == 2
    assert q.gap_total_s == pytest.approx(4.0)  # [2 s, 6 s]: overlaps counted once
    assert q.gap_longest_s == pytest.approx(3.0)
    assert (q.lost_known, q.reconnects, q.sequence_breaks, q.out_of_order) == (7, 1, 1, 1)
    assert q.latency_p50_ms == pytest.approx(3.0)
    assert q.latency_max_ms == pytest.approx(100.0)
    assert q.coverage_pct == pytest.approx(60.0)
    d = q.to_dict()
    assert d["gaps"]["count"] == 2  # type: ignore[index]


def test_gaps_are_clipped_to_the_window_and_an_empty_stream_has_no_latency() -> None:
    empty = np.empty(0, dtype=np.int64)
    gap = Gap("A", T, -5 * S, 1 * S, GapCause.DISCONNECT)
    q = stream_quality("A", T, empty, empty, [gap], (0, 4 * S))
    assert (q.rows, q.first_ts_us, q.latency_p50_ms) == (0, None, None)
    assert q.coverage_pct == pytest.approx(75.0)


def test_a_window_ending_before_it_starts_is_refused() -> None:
    empty = np.empty(0, dtype=np.int64)
    with pytest.raises(ValueError, match="ends before"):
        stream_quality("A", T, empty, empty, [], (5, 1))


def _note(seq: int, reason: str, detail: str | None) -> SessionEvent:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    running = SessionStatus.RUNNING
    return SessionEvent("s", seq, at, running, running, "owner", reason, detail)


def test_feed_totals_take_each_runs_newest_note_and_sum_the_runs() -> None:
    """Counts are cumulative per run (a later note replaces an earlier one of its run);
    a resumed session's runs add up; other notes and unreadable details are ignored."""
    first_a = FeedCounts("run-1", {"BTC": 2}, {"invalid JSON": 1})
    first_b = FeedCounts("run-1", {"BTC": 5, "ETH": 1}, {"invalid JSON": 3})
    second = FeedCounts("run-2", {"BTC": 4}, {"not an object": 2})
    events = [
        _note(1, Reason.FEED_COUNTS, first_a.dump()),
        _note(2, Reason.RESUMED, "{}"),
        _note(3, Reason.FEED_COUNTS, first_b.dump()),
        _note(4, Reason.FEED_COUNTS, "not json"),
        _note(5, Reason.FEED_COUNTS, second.dump()),
    ]
    duplicates, malformed = feed_totals(events)
    assert duplicates == {"BTC": 9, "ETH": 1}
    assert malformed == {"invalid JSON": 3, "not an object": 2}
    assert feed_totals([]) == ({}, {})
    assert FeedCounts.load(second.dump()) == second


def test_duplicates_are_reported_on_the_stream() -> None:
    ts = np.array([0, S], dtype=np.int64)
    q = stream_quality("A", T, ts, ts, [], (0, 2 * S), duplicates=3)
    assert q.duplicates_dropped == 3
    assert q.to_dict()["duplicates_dropped"] == 3
