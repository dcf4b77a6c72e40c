"""``CommitMarks``: what QuestDB's tick tables had committed by the times their WAL state
was read; a wait for what was committed by a past time takes the earliest mark read at
or after it (``QuestDBTickStore.wait_visible(committed_by=...)``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ticktape.domain import utcnow
from ticktape.store.questdb import CommitMarks


def test_a_wait_takes_the_earliest_mark_read_at_or_after_its_time() -> None:
    t = utcnow()
    marks = CommitMarks()
    for seconds, txn in ((0.0, 10), (0.5, 12), (1.0, 15)):
        marks.add(t + timedelta(seconds=seconds), {"trades": txn, "orderbook": txn + 1})
    assert marks.as_of(t - timedelta(seconds=1)) == {"trades": 10, "orderbook": 11}
    assert marks.as_of(t) == {"trades": 10, "orderbook": 11}  # read at that very time
    assert marks.as_of(t + timedelta(seconds=0.2)) == {"trades": 12, "orderbook": 13}
    assert marks.as_of(t + timedelta(seconds=1)) == {"trades": 15, "orderbook": 16}
    assert marks.as_of(t + timedelta(seconds=1.1)) is None  # none read since: read one now


def test_marks_are_kept_in_the_order_their_reads_began_and_the_oldest_go_first() -> None:
    t = utcnow()
    marks = CommitMarks(kept=3)
    marks.add(t + timedelta(seconds=2), {"trades": 30})
    marks.add(t + timedelta(seconds=1), {"trades": 20})  # a read that began earlier ended later
    assert marks.as_of(t) == {"trades": 20}
    marks.add(t + timedelta(seconds=3), {"trades": 40})
    marks.add(t + timedelta(seconds=4), {"trades": 50})
    assert len(marks) == 3
    assert marks.as_of(t) == {"trades": 30}  # the oldest (20) is gone: a later one, still safe


def test_a_mark_is_a_copy() -> None:
    committed = {"trades": 1}
    marks = CommitMarks()
    at = utcnow()
    marks.add(at, committed)
    committed["trades"] = 99
    got = marks.as_of(at)
    assert got == {"trades": 1}
    assert got is not None
    got["trades"] = 7
    assert marks.as_of(at) == {"trades": 1}


def test_it_keeps_at_least_one_mark() -> None:
    with pytest.raises(ValueError, match="at least one mark"):
        CommitMarks(kept=0)
