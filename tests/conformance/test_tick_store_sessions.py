"""``TickStore.write_sessions`` (``ticktape.store.base``): many sessions' writes in one
call, one answer per session, on every backend — through the store handle the runtime
uses (the retry layer over the backend)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from tests.conformance.test_tick_store import (
    OWNER,
    _count,
    _read_trades,
    _transition,
    books,
    trades,
)
from tests.conftest import CAPABILITIES
from ticktape.domain import Session, SessionStatus
from ticktape.errors import LeaseLost
from ticktape.store import Store
from ticktape.store.base import WriteResult
from ticktape.ticks import TickBatch, TickCounts

Run = Callable[[Coroutine[Any, Any, Any]], Any]
StartSession = Callable[..., Session]
UNKNOWN = "00000000-0000-4000-8000-000000000003"


def _write_sessions(
    store: Store, run: Run, writes: list[list[TickBatch]], owner: str = OWNER
) -> list[WriteResult | Exception]:
    answers: list[WriteResult | Exception] = run(store.ticks.write_sessions(writes, owner=owner))
    return answers


def test_owned_stale_terminal_and_unknown_sessions_are_answered_each_alone(
    store: Store, run: Run, running_session: StartSession, backend: str
) -> None:
    owned = [running_session(owner=OWNER) for _ in range(3)]
    other = running_session(owner="owner-2")
    ended = _transition(store, run, running_session(owner=OWNER), SessionStatus.FAILED)
    writes: list[list[TickBatch]] = [
        [trades(owned[0].id, n=20), books(owned[0].id, n=4)],
        [trades(other.id, n=7)],
        [trades(owned[1].id, n=21), books(owned[1].id, n=5)],
        [trades(ended.id, n=8), books(ended.id, n=2)],
        [trades(UNKNOWN, n=9)],
        [trades(owned[2].id, n=22), books(owned[2].id, n=6)],
    ]
    answers = _write_sessions(store, run, writes)
    assert len(answers) == len(writes)
    for k, s in ((0, owned[0]), (2, owned[1]), (5, owned[2])):
        answer = answers[k]
        assert isinstance(answer, WriteResult), answer
        expected = TickCounts(20 + k // 2, 4 + k // 2)
        if "exact_write_counts" in CAPABILITIES[backend]:
            assert answer.counts == expected
        assert _count(store, run, s.id) == expected  # counts equal the rows
    for k, sid in ((1, other.id), (3, ended.id), (4, UNKNOWN)):
        answer = answers[k]
        assert isinstance(answer, LeaseLost), answer
        assert (answer.session_id, answer.owner) == (sid, OWNER)
        assert _count(store, run, sid) == TickCounts(0, 0)
        assert _read_trades(store, run, sid) == []


def test_a_replayed_session_counts_only_its_new_rows_and_stores_each_tick_once(
    store: Store, run: Run, running_session: StartSession, backend: str
) -> None:
    a, b = running_session(owner=OWNER), running_session(owner=OWNER)
    first: list[list[TickBatch]] = [[trades(a.id, n=30), books(a.id, n=5)], [trades(b.id, n=10)]]
    assert all(isinstance(x, WriteResult) for x in _write_sessions(store, run, first))
    again: list[list[TickBatch]] = [
        [trades(a.id, n=30), books(a.id, n=5)],  # a replay: nothing new
        [trades(b.id, n=15)],  # overlaps: 5 new
    ]
    answers = _write_sessions(store, run, again)
    assert all(isinstance(x, WriteResult) for x in answers), answers
    if "exact_write_counts" in CAPABILITIES[backend]:
        assert [x.counts for x in answers if isinstance(x, WriteResult)] == [
            TickCounts(0, 0),
            TickCounts(5, 0),
        ]
    assert _count(store, run, a.id) == TickCounts(30, 5)
    assert _count(store, run, b.id) == TickCounts(15, 0)
    assert [t.trade_id for t in _read_trades(store, run, b.id)] == list(range(1, 16))


def test_no_writes_and_empty_writes_are_answered(
    store: Store, run: Run, running_session: StartSession
) -> None:
    assert _write_sessions(store, run, []) == []
    s = running_session(owner=OWNER)
    answers = _write_sessions(store, run, [[], [trades(s.id, n=3)]])
    assert len(answers) == 2 and all(isinstance(x, WriteResult) for x in answers)
    assert _count(store, run, s.id) == TickCounts(3, 0)
