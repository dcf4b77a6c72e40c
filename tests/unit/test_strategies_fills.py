"""The fill simulator's rules (docs/fills.md), one test per rule, on hand-written ticks."""

from __future__ import annotations

import math

import pytest

from ticktape.strategies import (
    BUY,
    SELL,
    Context,
    OrderStatus,
    RunResult,
    SimConfig,
    run_backtest,
)
from ticktape.ticks import TickBatch

from .strategy_data import Scripted, books, trades

SYM = "BTC_USDT"
MS = 1000  # µs
NO_FEES = {"sim": (0.0, 0.0)}


def run(
    script: dict[int, object], batches: list[TickBatch], **config: object
) -> tuple[RunResult, Scripted]:
    strategy = Scripted(script)
    cfg = SimConfig(**{"fees": NO_FEES, **config})  # type: ignore[arg-type]
    return run_backtest(strategy, [batches], [SYM], cfg), strategy


def fills_of(result: RunResult) -> list[tuple[float, float, str, int]]:
    return [(f.price, f.qty, f.liquidity, f.ts_us - result.first_us) for f in result.fills]  # type: ignore[operator]


BOOK = books(SYM, [(0, [(100.0, 3.0), (99.0, 4.0)], [(101.0, 1.0), (102.0, 2.0), (103.0, 5.0)])])


def test_a_market_order_walks_the_recorded_book_level_by_level() -> None:
    result, _ = run(
        {0: lambda c: c.submit_market(SYM, BUY, 2.5)},
        [BOOK, trades(SYM, [(25 * MS, 100.5, 0.1, 1)])],
    )
    assert fills_of(result) == [(101.0, 1.0, "taker", 20 * MS), (102.0, 1.5, "taker", 20 * MS)]
    order = result.orders[0]
    assert order.status is OrderStatus.FILLED
    assert order.avg_price == pytest.approx((101.0 + 1.5 * 102.0) / 2.5)
    assert order.active_us == order.submitted_us + 20 * MS


def test_a_market_order_larger_than_the_recorded_depth_fills_what_is_there_and_expires() -> None:
    result, _ = run(
        {0: lambda c: c.submit_market(SYM, BUY, 10.0)},
        [BOOK, trades(SYM, [(25 * MS, 100.5, 0.1, 1)])],
    )
    assert [f[:2] for f in fills_of(result)] == [(101.0, 1.0), (102.0, 2.0), (103.0, 5.0)]
    order = result.orders[0]
    assert order.status is OrderStatus.EXPIRED
    assert order.reason == "book depth exhausted"
    assert order.filled_qty == 8.0


def test_a_market_order_before_any_book_is_rejected() -> None:
    result, _ = run(
        {0: lambda c: c.submit_market(SYM, SELL, 1.0)},
        [trades(SYM, [(0, 100.0, 1.0, 1), (30 * MS, 100.0, 1.0, 1)])],
    )
    assert result.fills == []
    assert result.orders[0].status is OrderStatus.REJECTED
    assert result.orders[0].reason == "no book yet"


def test_an_order_reaches_the_book_after_the_entry_latency_in_exchange_time() -> None:
    moved = books(
        SYM, [(10 * MS, [(104.0, 1.0)], [(105.0, 1.0)]), (30 * MS, [(90.0, 1.0)], [(91.0, 1.0)])]
    )
    result, _ = run(
        {0: lambda c: c.submit_market(SYM, BUY, 1.0)},
        [BOOK, moved, trades(SYM, [(25 * MS, 104.5, 0.1, 1)])],
    )
    # submitted at 0, arrives at 20 ms: the book of 10 ms is in force, not those of 0 or 30 ms
    assert fills_of(result) == [(105.0, 1.0, "taker", 20 * MS)]
    zero, _ = run(
        {0: lambda c: c.submit_market(SYM, BUY, 1.0)},
        [BOOK, moved, trades(SYM, [(25 * MS, 104.5, 0.1, 1)])],
        entry_latency_us=0,
    )
    assert fills_of(zero) == [(101.0, 1.0, "taker", 0)]  # due at 0: done before the 10 ms tick


def test_our_fills_never_take_liquidity_out_of_the_recorded_book() -> None:
    result, _ = run(
        {
            0: lambda c: c.submit_market(SYM, BUY, 1.0),
            1: lambda c: c.submit_market(SYM, BUY, 1.0),
        },
        [BOOK, trades(SYM, [(1, 100.5, 0.1, 1), (50 * MS, 100.5, 0.1, 1)])],
    )
    assert [f[:2] for f in fills_of(result)] == [(101.0, 1.0), (101.0, 1.0)]


def test_a_resting_limit_fills_when_a_trade_crosses_its_price_strictly() -> None:
    result, _ = run(
        {0: lambda c: c.submit_limit(SYM, BUY, 2.0, 100.0)},
        [BOOK, trades(SYM, [(30 * MS, 100.0, 50.0, 1), (40 * MS, 99.99, 0.01, -1)])],
        fees={"sim": (0.001, 0.002)},
    )
    # a trade at our price by a buyer does not touch our queue; a print below our bid does
    assert fills_of(result) == [(100.0, 2.0, "maker", 40 * MS)]
    assert result.fills[0].fee == pytest.approx(200.0 * 0.001)
    assert result.orders[0].status is OrderStatus.FILLED


def test_a_resting_limit_fills_at_its_price_once_the_queue_ahead_is_traded_away() -> None:
    tape = trades(
        SYM, [(30 * MS, 100.0, 2.0, -1), (40 * MS, 100.0, 2.0, -1), (50 * MS, 100.0, 1.0, -1)]
    )
    result, _ = run({0: lambda c: c.submit_limit(SYM, BUY, 2.0, 100.0)}, [BOOK, tape])
    # queue ahead 3 (the bid at 100 when placed): 2 → 1 left; 2 → used up, 1 executed (< 2,
    # no partial fills); 1 → 2 executed: filled, all at once
    assert fills_of(result) == [(100.0, 2.0, "maker", 50 * MS)]


def test_partial_passive_fills_when_enabled() -> None:
    tape = trades(
        SYM, [(30 * MS, 100.0, 2.0, -1), (40 * MS, 100.0, 2.0, -1), (50 * MS, 100.0, 1.0, -1)]
    )
    result, _ = run(
        {0: lambda c: c.submit_limit(SYM, BUY, 2.0, 100.0)},
        [BOOK, tape],
        partial_passive_fills=True,
    )
    assert fills_of(result) == [(100.0, 1.0, "maker", 40 * MS), (100.0, 1.0, "maker", 50 * MS)]


def test_the_queue_shrinks_only_with_trades_at_our_price_not_with_book_changes() -> None:
    thinner = books(SYM, [(35 * MS, [(100.0, 0.1)], [(101.0, 1.0)])])
    tape = trades(SYM, [(40 * MS, 100.0, 2.0, -1), (60 * MS, 100.5, 9.0, -1)])
    result, _ = run({0: lambda c: c.submit_limit(SYM, BUY, 1.0, 100.0)}, [BOOK, thinner, tape])
    assert result.fills == []  # 3 ahead when placed; 2 traded; cancellations ahead don't count
    assert result.orders[0].status is OrderStatus.OPEN


def test_a_limit_inside_the_spread_has_no_queue_and_one_beyond_the_depth_an_unknown_one() -> None:
    tape = trades(
        SYM, [(40 * MS, 100.5, 1.0, -1), (50 * MS, 98.0, 1.0, -1), (60 * MS, 97.0, 1.0, -1)]
    )
    result, _ = run(
        {
            0: lambda c: (
                c.submit_limit(SYM, BUY, 1.0, 100.5),
                c.submit_limit(SYM, BUY, 1.0, 98.0),
            ),
        },
        [BOOK, tape],
    )
    # 100.5 (inside the spread): first trade at its price fills it; 98 is below the recorded
    # bids (queue unknown): only the print at 97, strictly through it, fills it
    assert fills_of(result) == [(100.5, 1.0, "maker", 40 * MS), (98.0, 1.0, "maker", 60 * MS)]


def test_post_only_orders_that_would_cross_are_rejected_others_take_up_to_their_price() -> None:
    tape = trades(SYM, [(30 * MS, 102.5, 1.0, 1)])  # above the rest of the bid: no cross
    result, _ = run(
        {
            0: lambda c: (
                c.submit_limit(SYM, BUY, 1.0, 101.0, post_only=True),
                c.submit_limit(SYM, BUY, 4.0, 102.0),
            ),
        },
        [BOOK, tape],
    )
    first, second = result.orders
    assert first.status is OrderStatus.REJECTED
    assert first.reason == "post-only order would cross"
    assert fills_of(result) == [(101.0, 1.0, "taker", 20 * MS), (102.0, 2.0, "taker", 20 * MS)]
    assert second.status is OrderStatus.OPEN and second.remaining == 1.0


def test_a_cancel_takes_effect_after_the_cancel_latency_and_fills_may_come_first() -> None:
    ids: list[int] = []

    def place(c: Context) -> None:
        ids.append(c.submit_limit(SYM, BUY, 1.0, 100.0))

    tape = trades(
        SYM, [(30 * MS, 100.2, 1.0, 1), (40 * MS, 99.0, 1.0, -1), (80 * MS, 99.0, 1.0, -1)]
    )
    # cancel asked at 30 ms arrives at 50 ms: the cross at 40 ms fills the order first
    result, _ = run({0: place, 30 * MS: lambda c: c.cancel(ids[0])}, [BOOK, tape])
    assert fills_of(result) == [(100.0, 1.0, "maker", 40 * MS)]
    ids.clear()
    tape2 = trades(SYM, [(30 * MS, 100.2, 1.0, 1), (60 * MS, 99.0, 1.0, -1)])
    result, _ = run({0: place, 30 * MS: lambda c: c.cancel(ids[0])}, [BOOK, tape2])
    assert result.fills == []
    order = result.orders[0]
    assert order.status is OrderStatus.CANCELLED
    assert (
        order.cancel_requested_us is not None
        and order.done_us == order.cancel_requested_us + 20 * MS
    )


def test_positions_go_short_and_cash_and_fees_add_up() -> None:
    later = books(SYM, [(40 * MS, [(90.0, 5.0)], [(91.0, 5.0)])])
    tape = trades(SYM, [(1, 100.5, 1.0, 1), (50 * MS, 90.5, 1.0, 1), (80 * MS, 90.5, 1.0, 1)])
    result, strategy = run(
        {
            1: lambda c: c.submit_market(SYM, SELL, 2.0),
            50 * MS: lambda c: c.submit_market(SYM, BUY, 2.0),
        },
        [BOOK, later, tape],
        fees={"sim": (0.0, 0.001)},
        initial_cash=1000.0,
    )
    assert [f[:2] for f in fills_of(result)] == [(100.0, 2.0), (91.0, 2.0)]
    fees = 200.0 * 0.001 + 182.0 * 0.001
    assert result.summary["fees"] == pytest.approx(fees)
    assert result.summary["pnl"] == pytest.approx(18.0 - fees)
    assert result.summary["max_position"] == 2.0
    assert len(strategy.fills) == 2  # each fill went to on_fill


def test_fees_come_from_the_exchange_table_with_overrides() -> None:
    assert SimConfig(exchange="sim").taker_fee == 0.0005
    assert SimConfig(exchange="mexc").maker_fee == 0.0
    assert SimConfig(exchange="elsewhere").maker_fee == 0.0002
    assert SimConfig(exchange="mexc", fees={"mexc": (0.1, 0.2)}).taker_fee == 0.2


def test_a_strategy_passing_a_bad_order_fails_its_run() -> None:
    result, _ = run({0: lambda c: c.submit_market(SYM, BUY, -1.0)}, [BOOK])
    assert result.status == "strategy_error"
    assert "order quantity must be a positive number" in result.error
    assert math.isfinite(result.summary["pnl"])  # type: ignore[arg-type]
