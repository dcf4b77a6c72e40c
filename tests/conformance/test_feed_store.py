"""The feed clauses of the TickStore contract, on every backend: gap rows
(``write_gaps`` / ``read_gaps``) and each tick's receive time (``read_times``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from tests.conformance.test_tick_store import books, trades
from ticktape.domain import DataType, Session, SessionStatus
from ticktape.errors import LeaseLost
from ticktape.feeds.contract import Gap, GapCause
from ticktape.store import Store
from ticktape.store.base import TickQuery
from ticktape.store.rules import to_us

Run = Callable[[Coroutine[Any, Any, Any]], Any]
StartSession = Callable[..., Session]

BASE_US = 1_709_294_400_000_000
OWNER = "owner-1"

GAPS = [
    Gap("ETH_USDT", DataType.ORDERBOOK, BASE_US + 5_000, BASE_US + 9_000, GapCause.RESYNC),
    Gap("BTC_USDT", DataType.TRADES, BASE_US, BASE_US + 2_500_001, GapCause.DISCONNECT, 17, "x"),
    Gap("BTC_USDT", DataType.TRADES, BASE_US + 5_000, BASE_US + 6_000, GapCause.SEQUENCE_BREAK, 0),
    Gap("BTC_USDT", DataType.ORDERBOOK, BASE_US, BASE_US + 2_000, GapCause.STALE, None, "quiet"),
]


def _ordered(gaps: list[Gap]) -> list[Gap]:
    return sorted(gaps, key=lambda g: (g.start_us, g.symbol, g.data_type.value, g.cause.value))


def test_gaps_round_trip_oldest_first_with_every_field(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    assert run(store.ticks.read_gaps(s.id)) == []
    run(store.ticks.write_gaps(s.id, GAPS, owner=OWNER))
    assert run(store.ticks.read_gaps(s.id)) == _ordered(GAPS)


def test_gaps_are_idempotent_and_per_session(
    store: Store, run: Run, running_session: StartSession
) -> None:
    a = running_session(owner=OWNER)
    b = running_session(owner=OWNER)
    run(store.ticks.write_gaps(a.id, GAPS[:2], owner=OWNER))
    run(store.ticks.write_gaps(a.id, GAPS, owner=OWNER))  # a retried write, and more
    run(store.ticks.write_gaps(b.id, GAPS[3:], owner=OWNER))
    assert run(store.ticks.read_gaps(a.id)) == _ordered(GAPS)
    assert run(store.ticks.read_gaps(b.id)) == GAPS[3:]
    assert run(store.ticks.read_gaps("00000000-0000-4000-8000-000000000009")) == []


def test_an_empty_gap_write_is_a_no_op(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    run(store.ticks.write_gaps(s.id, [], owner=OWNER))
    assert run(store.ticks.read_gaps(s.id)) == []


@pytest.mark.parametrize("why", ["other-owner", "terminal", "unknown"])
def test_gap_writes_are_fenced_like_tick_writes(
    store: Store, run: Run, running_session: StartSession, why: str
) -> None:
    if why == "unknown":
        sid = "00000000-0000-4000-8000-000000000003"
    elif why == "other-owner":
        sid = running_session(owner="owner-2").id
    else:
        s = running_session(owner=OWNER)
        sid = run(
            store.sessions.transition(
                s.id,
                expected_version=s.version,
                to_status=SessionStatus.FAILED,
                actor="test",
                reason="test",
            )
        ).id
    with pytest.raises(LeaseLost):
        run(store.ticks.write_gaps(sid, GAPS, owner=OWNER))
    assert run(store.ticks.read_gaps(sid)) == []


def test_receive_times_are_kept_per_row_in_arrival_order(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    t = trades(s.id, n=30)
    # Arrival order is trade-id order; exchange times may go back (an out-of-order trade).
    ts = t.ts_us.copy()
    ts[10] = ts[9] - 500
    recv = ts + np.arange(30, dtype=np.int64) * 7 + 1_000
    with_recv = dataclasses.replace(t, ts_us=ts, recv_us=recv)
    older = trades(s.id, "ETH_USDT", n=5)  # a row stored without receive times
    b = books(s.id, n=6)
    b_recv = dataclasses.replace(b, recv_us=b.ts_us + 250)
    run(store.ticks.write([with_recv, older, b_recv], owner=OWNER))
    run(store.ticks.wait_visible(10.0))
    got = run(store.ticks.read_times(s.id, "BTC_USDT", DataType.TRADES))
    assert got.ts_us.tolist() == ts.tolist()
    assert got.recv_us.tolist() == recv.tolist()
    eth = run(store.ticks.read_times(s.id, "ETH_USDT", DataType.TRADES))
    assert eth.ts_us.tolist() == older.ts_us.tolist()
    assert eth.recv_us.tolist() == [-1] * 5
    book = run(store.ticks.read_times(s.id, "BTC_USDT", DataType.ORDERBOOK))
    assert book.ts_us.tolist() == b.ts_us.tolist()
    assert book.recv_us.tolist() == (b.ts_us + 250).tolist()
    none = run(store.ticks.read_times(s.id, "XRP_USDT", DataType.ORDERBOOK))
    assert none.ts_us.tolist() == none.recv_us.tolist() == []
    # the data reads (routes, export) carry each row's receive time too; None without one
    rows = run(store.ticks.read_trades(TickQuery(s.id, symbol="BTC_USDT", limit=100)))
    by_id = dict(zip(with_recv.trade_id.tolist(), recv.tolist(), strict=True))
    assert len(rows) == 30
    assert [_key_us(r.recv) for r in rows if r.recv is not None] == [
        by_id[r.trade_id] for r in rows
    ]
    eth_rows = run(store.ticks.read_trades(TickQuery(s.id, symbol="ETH_USDT", limit=100)))
    assert [r.recv for r in eth_rows] == [None] * 5
    snaps = run(store.ticks.read_orderbook(TickQuery(s.id, symbol="BTC_USDT", limit=100)))
    assert [_key_us(r.recv) for r in snaps if r.recv is not None] == (b.ts_us + 250).tolist()


def _key_us(ts: datetime) -> int:
    return to_us(ts)


def test_trades_page_through_with_after_exactly_once_even_on_ties(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    # Two symbols with the same ids at the same times, and a burst in one microsecond.
    a = trades(s.id, "BTC_USDT", n=40, step_us=1000, seed=3)
    b = trades(s.id, "ETH_USDT", n=40, step_us=1000, seed=4)
    burst = dataclasses.replace(
        trades(s.id, "SOL_USDT", n=9, first_id=7, seed=5), ts_us=np.full(9, BASE_US + 3000)
    )
    run(store.ticks.write([a, b, burst], owner=OWNER))
    run(store.ticks.wait_visible(10.0))
    everything = run(store.ticks.read_trades(TickQuery(s.id, limit=1000)))
    assert len(everything) == 89
    keys = [(_key_us(t.ts), t.trade_id, t.symbol) for t in everything]
    assert keys == sorted(keys)  # a total order: ts, trade id, symbol
    pages: list[Any] = []
    after = None
    while True:
        page = run(store.ticks.read_trades(TickQuery(s.id, limit=7, after=after)))
        pages += page
        if len(page) < 7:
            break
        last = page[-1]
        after = (_key_us(last.ts), last.trade_id, last.symbol)
    assert pages == everything
    # ``after`` combines with the other filters.
    eth = run(store.ticks.read_trades(TickQuery(s.id, symbol="ETH_USDT", limit=1000)))
    k = eth[9]
    rest = run(
        store.ticks.read_trades(
            TickQuery(s.id, symbol="ETH_USDT", after=(_key_us(k.ts), k.trade_id, k.symbol))
        )
    )
    assert rest == eth[10:]


def test_snapshots_page_through_with_after_exactly_once(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    x = books(s.id, "BTC_USDT", n=12, step_us=5000, seed=5)
    y = books(s.id, "ETH_USDT", n=12, step_us=2500, seed=6)  # every 2nd time shared
    run(store.ticks.write([x, y], owner=OWNER))
    run(store.ticks.wait_visible(10.0))
    everything = run(store.ticks.read_orderbook(TickQuery(s.id, limit=1000)))
    assert len(everything) == 24
    pages: list[Any] = []
    after = None
    while True:
        page = run(store.ticks.read_orderbook(TickQuery(s.id, limit=5, after=after)))
        pages += page
        if len(page) < 5:
            break
        after = (_key_us(page[-1].ts), 0, page[-1].symbol)
    assert pages == everything
