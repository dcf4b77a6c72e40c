"""The TickStore contract (``ticktape.store.base``), clause by clause, on every backend."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from tests.conftest import CAPABILITIES
from ticktape.domain import Session, SessionStatus
from ticktape.errors import LeaseLost, ValidationError
from ticktape.store import Store
from ticktape.store.base import MAX_DATA_LIMIT, TickQuery, WriteResult
from ticktape.ticks import BookBatch, BookSnapshot, TickBatch, TickCounts, Trade, TradeBatch

Run = Callable[[Coroutine[Any, Any, Any]], Any]
StartSession = Callable[..., Session]

BASE_US = 1_709_294_400_000_000  # 2024-03-01T12:00:00Z
OWNER = "owner-1"


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def trades(
    session_id: str,
    symbol: str = "BTC_USDT",
    *,
    n: int = 50,
    first_id: int = 1,
    start_us: int = BASE_US,
    step_us: int = 1000,
    seed: int = 0,
) -> TradeBatch:
    """``n`` trades with ids ``first_id...``, one every ``step_us``; awkward float64 values."""
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return TradeBatch(
        session_id=session_id,
        symbol=symbol,
        ts_us=start_us + (ids - first_id) * step_us,
        trade_id=ids,
        price=rng.uniform(1.0, 70_000.0, n) + 1e-9,
        qty=rng.exponential(0.3, n),
        side=rng.choice(np.array([1, -1], dtype=np.int8), n),
    )


def books(
    session_id: str,
    symbol: str = "BTC_USDT",
    *,
    n: int = 10,
    depth: int = 5,
    start_us: int = BASE_US,
    step_us: int = 5000,
    seed: int = 1,
) -> BookBatch:
    """``n`` snapshots of ``depth`` levels, best first."""
    rng = np.random.default_rng(seed)
    mid = rng.uniform(100.0, 70_000.0, (n, 1))
    offsets = np.cumsum(rng.uniform(0.01, 1.0, (n, depth)), axis=1)
    return BookBatch(
        session_id=session_id,
        symbol=symbol,
        ts_us=start_us + np.arange(n, dtype=np.int64) * step_us,
        bid_price=mid - offsets,
        bid_qty=rng.exponential(2.0, (n, depth)),
        ask_price=mid + offsets,
        ask_qty=rng.exponential(2.0, (n, depth)),
    )


def _as_trades(batch: TradeBatch) -> list[Trade]:
    return [
        Trade(batch.symbol, _dt(ts), tid, px, qty, "buy" if side == 1 else "sell")
        for ts, tid, px, qty, side in zip(
            batch.ts_us.tolist(),
            batch.trade_id.tolist(),
            batch.price.tolist(),
            batch.qty.tolist(),
            batch.side.tolist(),
            strict=True,
        )
    ]


def _as_snapshots(batch: BookBatch) -> list[BookSnapshot]:
    return [
        BookSnapshot(
            batch.symbol,
            _dt(ts),
            tuple(zip(batch.bid_price[i].tolist(), batch.bid_qty[i].tolist(), strict=True)),
            tuple(zip(batch.ask_price[i].tolist(), batch.ask_qty[i].tolist(), strict=True)),
        )
        for i, ts in enumerate(batch.ts_us.tolist())
    ]


def _write(store: Store, run: Run, batches: list[TickBatch], owner: str = OWNER) -> TickCounts:
    result: WriteResult = run(store.ticks.write(batches, owner=owner))
    return result.counts


def _sent(batches: list[TickBatch]) -> TickCounts:
    return TickCounts(
        sum(len(b) for b in batches if isinstance(b, TradeBatch)),
        sum(len(b) for b in batches if isinstance(b, BookBatch)),
    )


def _write_new(
    store: Store, run: Run, backend: str, batches: list[TickBatch], new: TickCounts
) -> None:
    """Write, and check what write() reports as each backend promises: the rows that were
    new where it can tell (``exact_write_counts``), the rows sent where it cannot (QuestDB:
    ILP does not say which rows DEDUP merged). What is *stored* is checked by the caller
    with ``_count``, on every backend."""
    reported = _write(store, run, batches)
    if "exact_write_counts" in CAPABILITIES[backend]:
        assert reported == new
    else:
        assert reported == _sent(batches)


def _count(store: Store, run: Run, session_id: str) -> TickCounts:
    run(store.ticks.wait_visible(10.0))
    counts: TickCounts = run(store.ticks.count(session_id))
    return counts


def _read_trades(store: Store, run: Run, session_id: str, **kw: Any) -> list[Trade]:
    run(store.ticks.wait_visible(10.0))
    rows: list[Trade] = run(store.ticks.read_trades(TickQuery(session_id, **kw)))
    return rows


def _read_books(store: Store, run: Run, session_id: str, **kw: Any) -> list[BookSnapshot]:
    run(store.ticks.wait_visible(10.0))
    rows: list[BookSnapshot] = run(store.ticks.read_orderbook(TickQuery(session_id, **kw)))
    return rows


def _transition(store: Store, run: Run, session: Session, to: SessionStatus, **kw: Any) -> Session:
    moved: Session = run(
        store.sessions.transition(
            session.id,
            expected_version=session.version,
            to_status=to,
            actor="test",
            reason="test",
            **kw,
        )
    )
    return moved


# --------------------------------------------------------------------------- write / count


def test_write_returns_the_new_rows_and_count_agrees(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session()
    counts = _write(store, run, [trades(s.id, n=50), books(s.id, n=10, depth=5)])
    assert counts == TickCounts(trades=50, orderbook=10)
    # count() is snapshots, not levels (10 snapshots x 5 levels x 2 sides).
    assert _count(store, run, s.id) == TickCounts(trades=50, orderbook=10)


def test_replaying_the_same_batches_stores_nothing_new(
    store: Store, run: Run, running_session: StartSession, backend: str
) -> None:
    s = running_session()
    batches: list[TickBatch] = [
        trades(s.id),
        books(s.id),
        trades(s.id, "ETH_USDT"),
        books(s.id, "ETH_USDT"),
    ]
    _write_new(store, run, backend, batches, TickCounts(100, 20))
    _write_new(store, run, backend, batches, TickCounts(0, 0))
    _write_new(store, run, backend, batches[::-1], TickCounts(0, 0))
    assert _count(store, run, s.id) == TickCounts(100, 20)


def test_a_replay_does_not_change_stored_rows(
    store: Store, run: Run, running_session: StartSession, backend: str
) -> None:
    s = running_session()
    _write(store, run, [trades(s.id, seed=1), books(s.id, seed=1)])
    # Same identities, other values: still one row per identity, on every backend.
    _write_new(store, run, backend, [trades(s.id, seed=2), books(s.id, seed=2)], TickCounts(0, 0))
    assert _count(store, run, s.id) == TickCounts(50, 10)
    # Which values stay: the first write's, or (QuestDB's DEDUP UPSERT) the last one's.
    kept = 1 if "first_write_wins" in CAPABILITIES[backend] else 2
    assert _read_trades(store, run, s.id) == _as_trades(trades(s.id, seed=kept))
    assert _read_books(store, run, s.id) == _as_snapshots(books(s.id, seed=kept))


def test_replays_and_overlaps_never_duplicate_stored_rows(
    store: Store, run: Run, running_session: StartSession
) -> None:
    """What every backend keeps, whatever its write() reports: a tick is stored once."""
    s = running_session()
    batches: list[TickBatch] = [trades(s.id), books(s.id), trades(s.id, "ETH_USDT")]
    _write(store, run, batches)
    _write(store, run, batches)
    _write(
        store,
        run,
        [
            trades(s.id, n=20, first_id=41, start_us=BASE_US + 40 * 1000),  # a replay: same ts
            books(s.id, n=10, start_us=BASE_US + 5000 * 7),
        ],
    )
    assert _count(store, run, s.id) == TickCounts(100 + 10, 17)


def test_partial_overlap_counts_only_new_rows(
    store: Store, run: Run, running_session: StartSession, backend: str
) -> None:
    s = running_session()
    _write(store, run, [trades(s.id, n=50, first_id=1), books(s.id, n=10)])
    overlap: list[TickBatch] = [
        trades(s.id, n=20, first_id=41, start_us=BASE_US + 40 * 1000),  # ids 41..60: 10 new
        books(s.id, n=10, start_us=BASE_US + 5000 * 7),
    ]  # 7 new
    _write_new(store, run, backend, overlap, TickCounts(10, 7))
    assert _count(store, run, s.id) == TickCounts(60, 17)


def test_duplicates_within_one_call_are_stored_once(
    store: Store, run: Run, running_session: StartSession, backend: str
) -> None:
    s = running_session()
    twice: list[TickBatch] = [trades(s.id), trades(s.id), books(s.id), books(s.id)]
    _write_new(store, run, backend, twice, TickCounts(50, 10))
    assert _count(store, run, s.id) == TickCounts(50, 10)


@pytest.mark.requires("trade_identity_without_ts")
def test_a_trade_id_stored_again_at_another_time_is_the_same_trade(
    store: Store, run: Run, running_session: StartSession
) -> None:
    """The contract's identity is (session, symbol, trade_id), whatever the timestamp."""
    s = running_session()
    _write(store, run, [trades(s.id, n=50)])
    assert _write(store, run, [trades(s.id, n=50, start_us=BASE_US + 7)]) == TickCounts(0, 0)
    assert _count(store, run, s.id) == TickCounts(50, 0)


def test_same_trade_id_in_another_symbol_or_session_is_another_trade(
    store: Store, run: Run, running_session: StartSession
) -> None:
    a, b = running_session(), running_session()
    batches: list[TickBatch] = [
        trades(a.id, "BTC_USDT"),
        trades(a.id, "ETH_USDT"),
        trades(b.id, "BTC_USDT"),
        books(a.id, "BTC_USDT"),
        books(a.id, "ETH_USDT"),
        books(b.id, "BTC_USDT"),
    ]
    assert _write(store, run, batches) == TickCounts(150, 30)
    assert _count(store, run, a.id) == TickCounts(100, 20)
    assert _count(store, run, b.id) == TickCounts(50, 10)


def test_empty_writes_store_nothing(store: Store, run: Run, running_session: StartSession) -> None:
    s = running_session()
    assert _write(store, run, []) == TickCounts(0, 0)
    assert _write(store, run, [trades(s.id, n=0), books(s.id, n=0)]) == TickCounts(0, 0)
    assert _count(store, run, s.id) == TickCounts(0, 0)


def test_concurrent_overlapping_writes_count_each_row_once(
    store: Store, run: Run, running_session: StartSession, backend: str
) -> None:
    s = running_session()
    calls: list[list[TickBatch]] = [
        [
            trades(s.id, n=50, first_id=1 + 10 * k, start_us=BASE_US + 10_000 * k),
            books(s.id, n=10, start_us=BASE_US + 5000 * k),
        ]
        for k in range(6)
    ]

    async def write_all() -> list[WriteResult]:
        return list(await asyncio.gather(*(store.ticks.write(c, owner=OWNER) for c in calls)))

    total = sum((r.counts for r in run(write_all())), TickCounts())
    if "exact_write_counts" in CAPABILITIES[backend]:
        assert total == TickCounts(trades=100, orderbook=15)
    else:  # rows sent
        assert total == sum((_sent(c) for c in calls), TickCounts())
    assert _count(store, run, s.id) == TickCounts(trades=100, orderbook=15)


def test_written_rows_are_visible_to_another_handle_after_wait_visible(
    store: Store, other_handle: Store, run: Run, running_session: StartSession
) -> None:
    other = other_handle
    s = running_session()
    batch = trades(s.id)
    _write(store, run, [batch, books(s.id)])
    run(store.ticks.wait_visible(10.0))
    assert run(other.ticks.count(s.id)) == TickCounts(50, 10)
    assert run(other.ticks.read_trades(TickQuery(s.id))) == _as_trades(batch)


def test_count_of_an_unknown_session_is_zero(store: Store, run: Run) -> None:
    assert _count(store, run, "00000000-0000-4000-8000-000000000000") == TickCounts(0, 0)


def test_count_of_a_session_without_ticks_is_zero(
    store: Store, run: Run, running_session: StartSession
) -> None:
    assert _count(store, run, running_session().id) == TickCounts(0, 0)


def test_wait_visible_returns(store: Store, run: Run, running_session: StartSession) -> None:
    assert run(store.ticks.wait_visible(5.0)) is None
    s = running_session()
    _write(store, run, [trades(s.id)])
    assert run(store.ticks.wait_visible(5.0)) is None
    assert run(store.ticks.count(s.id)) == TickCounts(50, 0)


# --------------------------------------------------------------------------- fencing


def _assert_nothing_stored(store: Store, run: Run, *session_ids: str) -> None:
    for sid in session_ids:
        assert _count(store, run, sid) == TickCounts(0, 0)
        assert _read_trades(store, run, sid) == []
        assert _read_books(store, run, sid) == []


def test_write_for_a_session_owned_by_another_owner_raises_lease_lost(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner="owner-2")
    with pytest.raises(LeaseLost) as info:
        _write(store, run, [trades(s.id), books(s.id)], owner=OWNER)
    assert (info.value.session_id, info.value.owner) == (s.id, OWNER)
    _assert_nothing_stored(store, run, s.id)


@pytest.mark.parametrize("owner", ["owner-1x", "owner-", "OWNER-1", ""])
def test_fencing_compares_the_whole_owner(
    store: Store, run: Run, running_session: StartSession, owner: str
) -> None:
    s = running_session(owner=OWNER)
    with pytest.raises(LeaseLost):
        _write(store, run, [trades(s.id)], owner=owner)
    _assert_nothing_stored(store, run, s.id)


@pytest.mark.parametrize(
    "terminal", [SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.STOPPED]
)
def test_write_for_a_terminal_session_raises_lease_lost(
    store: Store, run: Run, running_session: StartSession, terminal: SessionStatus
) -> None:
    # The owner field is left set: only the status rejects this late write.
    s = running_session()
    if terminal is SessionStatus.STOPPED:
        s = _transition(store, run, s, SessionStatus.STOPPING)
    s = _transition(store, run, s, terminal)
    assert s.owner == OWNER
    with pytest.raises(LeaseLost):
        _write(store, run, [trades(s.id), books(s.id)])
    _assert_nothing_stored(store, run, s.id)


def test_write_for_an_unowned_pending_session_raises_lease_lost(
    store: Store, run: Run, make_session: Callable[..., Session]
) -> None:
    s = run(store.sessions.create_session(make_session(), actor="test"))
    with pytest.raises(LeaseLost):
        _write(store, run, [trades(s.id)])
    _assert_nothing_stored(store, run, s.id)


def test_write_for_an_unknown_session_raises_lease_lost(store: Store, run: Run) -> None:
    sid = "00000000-0000-4000-8000-000000000001"
    with pytest.raises(LeaseLost):
        _write(store, run, [trades(sid)])
    _assert_nothing_stored(store, run, sid)


def test_writes_are_accepted_while_stopping(
    store: Store, run: Run, running_session: StartSession
) -> None:
    # The final flush happens between "stopping" and "stopped" (invariant 7).
    s = _transition(store, run, running_session(), SessionStatus.STOPPING)
    assert _write(store, run, [trades(s.id), books(s.id)]) == TickCounts(50, 10)


def test_a_new_owner_fences_the_old_one_out(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    _write(store, run, [trades(s.id, n=10)])
    _transition(store, run, s, SessionStatus.STOPPING, owner="owner-2")
    with pytest.raises(LeaseLost):
        _write(store, run, [trades(s.id, n=10, first_id=11)], owner=OWNER)
    assert _write(store, run, [trades(s.id, n=10, first_id=21)], owner="owner-2") == (
        TickCounts(10, 0)
    )
    assert sorted(t.trade_id for t in _read_trades(store, run, s.id)) == [
        *range(1, 11),
        *range(21, 31),
    ]


def test_concurrent_writes_of_many_sessions_are_fenced_and_answered_each_alone(
    store: Store, run: Run, running_session: StartSession, backend: str
) -> None:
    """Writes of many sessions in flight at once (SQLite coalesces them into one
    transaction): the one whose session was taken over gets LeaseLost and stores
    nothing; every other is stored and answered with its own rows."""
    sessions = [running_session(owner=OWNER) for _ in range(8)]
    taken = sessions[3]
    _transition(store, run, taken, SessionStatus.STOPPING, owner="owner-2")
    calls = [[trades(s.id, n=20 + k), books(s.id, n=5)] for k, s in enumerate(sessions)]
    raw = getattr(store, "inner", store).ticks  # under the retrying handle
    rounds_before = getattr(raw, "rounds", 0)

    async def write_all() -> list[WriteResult | BaseException]:
        return list(
            await asyncio.gather(
                *(store.ticks.write(c, owner=OWNER) for c in calls), return_exceptions=True
            )
        )

    outcomes = run(write_all())
    for k, (s, outcome) in enumerate(zip(sessions, outcomes, strict=True)):
        if s is taken:
            assert isinstance(outcome, LeaseLost) and outcome.session_id == s.id
            _assert_nothing_stored(store, run, s.id)
            continue
        assert isinstance(outcome, WriteResult), outcome
        if "exact_write_counts" in CAPABILITIES[backend]:
            assert outcome.counts == TickCounts(20 + k, 5)
        assert _count(store, run, s.id) == TickCounts(20 + k, 5)
    if backend == "sqlite":  # all eight went in one transaction, fencing per session
        assert getattr(raw, "rounds", 0) - rounds_before == 1


def test_a_replay_among_new_writes_of_other_sessions_counts_only_its_new_rows(
    store: Store, run: Run, running_session: StartSession, backend: str
) -> None:
    """Writes in flight at once, one of them a replay of rows already stored (SQLite
    inserts a round's rows together and, when some row was there already, again one
    request at a time): each is answered with exactly its own new rows."""
    sessions = [running_session(owner=OWNER) for _ in range(4)]
    replayed = [trades(sessions[0].id, n=30), books(sessions[0].id, n=5)]
    run(store.ticks.write(replayed, owner=OWNER))
    calls = [replayed] + [
        [trades(s.id, n=10 + k), books(s.id, n=3)] for k, s in enumerate(sessions[1:])
    ]

    async def write_all() -> list[WriteResult]:
        return list(await asyncio.gather(*(store.ticks.write(c, owner=OWNER) for c in calls)))

    outcomes = run(write_all())
    if "exact_write_counts" in CAPABILITIES[backend]:
        assert outcomes[0].counts == TickCounts()
        for k, outcome in enumerate(outcomes[1:]):
            assert outcome.counts == TickCounts(10 + k, 3)
    assert _count(store, run, sessions[0].id) == TickCounts(30, 5)
    for k, s in enumerate(sessions[1:]):
        assert _count(store, run, s.id) == TickCounts(10 + k, 3)


@pytest.mark.parametrize("valid_first", [True, False], ids=["valid-first", "invalid-first"])
@pytest.mark.parametrize("why", ["other-owner", "terminal", "unknown"])
def test_a_call_mixing_a_valid_and_an_invalid_session_stores_nothing(
    store: Store, run: Run, running_session: StartSession, valid_first: bool, why: str
) -> None:
    good = running_session(owner=OWNER)
    if why == "other-owner":
        bad_id = running_session(owner="owner-2").id
    elif why == "terminal":
        bad_id = _transition(store, run, running_session(owner=OWNER), SessionStatus.FAILED).id
    else:
        bad_id = "00000000-0000-4000-8000-000000000002"
    good_batches: list[TickBatch] = [trades(good.id), books(good.id)]
    bad_batches: list[TickBatch] = [trades(bad_id), books(bad_id)]
    batches = good_batches + bad_batches if valid_first else bad_batches + good_batches
    with pytest.raises(LeaseLost) as info:
        _write(store, run, batches)
    assert info.value.session_id == bad_id
    _assert_nothing_stored(store, run, good.id, bad_id)
    # The caller can still write what it owns.
    assert _write(store, run, good_batches) == TickCounts(50, 10)


# --------------------------------------------------------------------------- read_trades


@pytest.fixture
def two_symbols(
    store: Store, run: Run, running_session: StartSession
) -> tuple[Session, list[Trade]]:
    """A session with interleaved BTC/ETH trades (some sharing a µs), written out of order."""
    s = running_session()
    btc = trades(s.id, "BTC_USDT", n=40, first_id=1, step_us=1000, seed=3)
    eth = trades(
        s.id, "ETH_USDT", n=40, first_id=1_000, start_us=BASE_US + 500, step_us=1000, seed=4
    )
    # Several BTC trades in the same microsecond, ordered by trade id.
    burst = TradeBatch(
        s.id,
        "BTC_USDT",
        np.full(5, BASE_US + 100_000, dtype=np.int64),
        np.arange(100, 105, dtype=np.int64),
        np.linspace(1.5, 2.5, 5),
        np.full(5, 0.25),
        np.array([1, -1, 1, -1, 1], dtype=np.int8),
    )
    _write(store, run, [eth, burst, btc])
    other = running_session()
    _write(store, run, [trades(other.id, "BTC_USDT", n=30, seed=9)])  # must never show up
    everything = _as_trades(btc) + _as_trades(eth) + _as_trades(burst)
    everything.sort(key=lambda t: (t.ts, t.trade_id))
    return s, everything


def test_read_trades_oldest_first_by_ts_then_trade_id(
    store: Store, run: Run, two_symbols: tuple[Session, list[Trade]]
) -> None:
    s, expected = two_symbols
    got = _read_trades(store, run, s.id)
    assert got == expected  # every field round-trips exactly, float64 included
    assert [(t.ts, t.trade_id) for t in got] == sorted((t.ts, t.trade_id) for t in got)


def test_read_trades_symbol_filter(
    store: Store, run: Run, two_symbols: tuple[Session, list[Trade]]
) -> None:
    s, expected = two_symbols
    for symbol in ("BTC_USDT", "ETH_USDT"):
        got = _read_trades(store, run, s.id, symbol=symbol)
        assert got == [t for t in expected if t.symbol == symbol]
    assert _read_trades(store, run, s.id, symbol="BTC") == []
    assert _read_trades(store, run, s.id, symbol="XRP_USDT") == []


def test_read_trades_range_is_start_inclusive_end_exclusive(
    store: Store, run: Run, two_symbols: tuple[Session, list[Trade]]
) -> None:
    s, expected = two_symbols
    start, end = expected[10].ts, expected[30].ts
    got = _read_trades(store, run, s.id, start=start, end=end)
    assert got == [t for t in expected if start <= t.ts < end]
    assert got[0].ts == start and got[-1].ts < end
    assert _read_trades(store, run, s.id, start=start) == [t for t in expected if t.ts >= start]
    assert _read_trades(store, run, s.id, end=end) == [t for t in expected if t.ts < end]
    assert _read_trades(store, run, s.id, start=end, end=end) == []


def test_read_trades_range_with_symbol_and_limit(
    store: Store, run: Run, two_symbols: tuple[Session, list[Trade]]
) -> None:
    s, expected = two_symbols
    start = expected[5].ts
    eth_after = [t for t in expected if t.symbol == "ETH_USDT" and t.ts >= start]
    assert (
        _read_trades(store, run, s.id, symbol="ETH_USDT", start=start, limit=7) == (eth_after[:7])
    )


@pytest.mark.parametrize("limit", [1, 7, 44, 85, 86, 1000])
def test_read_trades_limit_keeps_the_oldest(
    store: Store, run: Run, two_symbols: tuple[Session, list[Trade]], limit: int
) -> None:
    s, expected = two_symbols
    assert len(expected) == 85
    assert _read_trades(store, run, s.id, limit=limit) == expected[:limit]


def test_read_trades_of_an_unknown_session_is_empty(store: Store, run: Run) -> None:
    assert _read_trades(store, run, "00000000-0000-4000-8000-000000000003") == []


def test_read_trades_accepts_aware_datetimes_in_any_zone(
    store: Store, run: Run, two_symbols: tuple[Session, list[Trade]]
) -> None:
    from datetime import timezone

    s, expected = two_symbols
    start = expected[20].ts.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert _read_trades(store, run, s.id, start=start) == [
        t for t in expected if t.ts >= expected[20].ts
    ]


# --------------------------------------------------------------------------- read_orderbook


@pytest.fixture
def book_session(
    store: Store, run: Run, running_session: StartSession
) -> tuple[Session, list[BookSnapshot]]:
    """BTC and ETH snapshots of different depths; some share a timestamp across symbols."""
    s = running_session()
    btc = books(s.id, "BTC_USDT", n=12, depth=5, step_us=5000, seed=5)
    eth = books(s.id, "ETH_USDT", n=12, depth=20, step_us=2500, seed=6)  # every 2nd ts shared
    special = BookBatch(
        s.id,
        "SOL_USDT",
        np.array([BASE_US + 7], dtype=np.int64),
        bid_price=np.array([[0.1 + 0.2, 1e-300]]),
        bid_qty=np.array([[5e-324, 1.7976931348623157e308]]),
        ask_price=np.array([[np.nextafter(0.3, 1.0), 123456.78901234567]]),
        ask_qty=np.array([[1 / 3, 2 / 3]]),
    )
    _write(store, run, [eth, special, btc])
    other = running_session()
    _write(store, run, [books(other.id, "BTC_USDT", n=5, seed=9)])  # must never show up
    everything = _as_snapshots(btc) + _as_snapshots(eth) + _as_snapshots(special)
    everything.sort(key=lambda b: (b.ts, b.symbol))
    return s, everything


def test_read_orderbook_round_trips_every_level_exactly(
    store: Store, run: Run, book_session: tuple[Session, list[BookSnapshot]]
) -> None:
    s, expected = book_session
    got = _read_books(store, run, s.id)
    assert got == expected
    assert {len(b.bids) for b in got if b.symbol == "ETH_USDT"} == {20}
    assert {len(b.asks) for b in got if b.symbol == "BTC_USDT"} == {5}
    assert all(type(p) is float and type(q) is float for b in got for p, q in b.bids + b.asks)


def test_read_orderbook_oldest_first_then_symbol(
    store: Store, run: Run, book_session: tuple[Session, list[BookSnapshot]]
) -> None:
    s, _ = book_session
    got = _read_books(store, run, s.id)
    keys = [(b.ts, b.symbol) for b in got]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert any(a.ts == b.ts for a, b in itertools.pairwise(got))  # ties were exercised


def test_read_orderbook_symbol_range_and_limit(
    store: Store, run: Run, book_session: tuple[Session, list[BookSnapshot]]
) -> None:
    s, expected = book_session
    start, end = expected[4].ts, expected[20].ts
    assert _read_books(store, run, s.id, symbol="ETH_USDT") == [
        b for b in expected if b.symbol == "ETH_USDT"
    ]
    assert _read_books(store, run, s.id, start=start, end=end) == [
        b for b in expected if start <= b.ts < end
    ]
    assert _read_books(store, run, s.id, limit=3) == expected[:3]
    assert (
        _read_books(store, run, s.id, symbol="BTC_USDT", start=start, limit=2)
        == [b for b in expected if b.symbol == "BTC_USDT" and b.ts >= start][:2]
    )


def test_read_orderbook_of_an_unknown_session_is_empty(store: Store, run: Run) -> None:
    assert _read_books(store, run, "00000000-0000-4000-8000-000000000004") == []


@pytest.mark.parametrize("limit", [0, -1, MAX_DATA_LIMIT + 1])
@pytest.mark.parametrize("read", ["read_trades", "read_orderbook"])
def test_a_tick_read_limit_outside_1_to_max_is_a_validation_error(
    store: Store, run: Run, running_session: StartSession, read: str, limit: int
) -> None:
    """Every backend validates the page size the same way, before touching its data."""
    session = running_session()
    with pytest.raises(ValidationError) as caught:
        run(getattr(store.ticks, read)(TickQuery(session.id, limit=limit)))
    assert caught.value.field == "limit"
    assert run(getattr(store.ticks, read)(TickQuery(session.id, limit=MAX_DATA_LIMIT))) == []
