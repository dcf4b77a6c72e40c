"""Per-stream quality figures from rows and gaps."""

from __future__ import annotations

import numpy as np
import pytest

from ticktape.domain import DataType
from ticktape.feeds.contract import Gap, GapCause
from ticktape.quality import stream_quality

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
