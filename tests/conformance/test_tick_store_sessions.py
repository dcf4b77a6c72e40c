"""``TickStore.write_sessions`` (``ticktape.store.base``): many sessions' writes in one
call, one answer per session, on every backend; and the retry layer over it
(``store/retrying.py``, with ``FaultyStore`` between): only the failed sessions are
tried again, within the policy's attempts."""

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
from ticktape.config import RetryPolicy
from ticktape.domain import Session, SessionStatus
from ticktape.errors import LeaseLost, StoreBusy, StoreUnavailable
from ticktape.store import RetryingStore, Store
from ticktape.store.base import WriteResult
from ticktape.testing import FaultyStore
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


# --------------------------------------------------------------------------- retries


def _faulty(store: Store, attempts: int = 3) -> tuple[RetryingStore, FaultyStore]:
    """The retry layer (quick backoff) over fault injection over the backend."""
    faulty = FaultyStore(store.inner if isinstance(store, RetryingStore) else store)
    policy = RetryPolicy(store_attempts=attempts, store_base_s=0.001, store_max_s=0.002)
    return RetryingStore(faulty, policy), faulty


def test_a_transient_failure_is_retried_for_the_failed_sessions_only(
    store: Store, run: Run, running_session: StartSession
) -> None:
    sessions = [running_session(owner=OWNER) for _ in range(3)]
    busy = sessions[1]
    retrying, faulty = _faulty(store)
    faulty.fail(
        "write",
        times=2,
        when=lambda batches, **_: batches[0].session_id == busy.id,
        error=StoreBusy("injected: busy"),
    )
    calls = faulty.delay("write_sessions", 0.0, times=None)  # counts the calls and their items
    writes: list[list[TickBatch]] = [[trades(s.id, n=10 + k)] for k, s in enumerate(sessions)]
    answers: list[WriteResult | Exception] = run(retrying.ticks.write_sessions(writes, owner=OWNER))
    assert all(isinstance(a, WriteResult) for a in answers), answers
    # the first call carried every session; each retry only the one that failed
    assert [[b[0].session_id for b in c["writes"]] for c in calls.calls] == [
        [s.id for s in sessions],
        [busy.id],
        [busy.id],
    ]
    for k, s in enumerate(sessions):
        assert _count(store, run, s.id) == TickCounts(10 + k, 0)
    details = [e.detail or "" for e in run(store.sessions.list_events(busy.id))]
    assert any("write: succeeded after 2 transient error(s)" in d for d in details), details


def test_retries_are_bounded_and_a_refusal_is_not_retried(
    store: Store, run: Run, running_session: StartSession
) -> None:
    owned, down = running_session(owner=OWNER), running_session(owner=OWNER)
    stale = running_session(owner="owner-2")
    retrying, faulty = _faulty(store, attempts=3)
    faulty.fail(
        "write",
        times=None,
        when=lambda batches, **_: batches[0].session_id == down.id,
        error=StoreUnavailable("injected: down"),
    )
    calls = faulty.delay("write_sessions", 0.0, times=None)
    writes: list[list[TickBatch]] = [[trades(s.id, n=5)] for s in (owned, down, stale)]
    answers = run(retrying.ticks.write_sessions(writes, owner=OWNER))
    assert isinstance(answers[0], WriteResult)
    assert isinstance(answers[1], StoreUnavailable)  # given up after the policy's attempts
    assert isinstance(answers[2], LeaseLost)  # answered once, never retried
    assert [len(c["writes"]) for c in calls.calls] == [3, 1, 1]
    assert _count(store, run, owned.id) == TickCounts(5, 0)
    assert _count(store, run, down.id) == TickCounts(0, 0)
    assert _count(store, run, stale.id) == TickCounts(0, 0)
