"""Results: the canonical hash, the summary's figures, the replay order, the built-ins' exits."""

from __future__ import annotations

import hashlib
import json

import pytest

from ticktape.errors import ValidationError
from ticktape.strategies import (
    BUY,
    SELL,
    EquityPoint,
    Fill,
    SimConfig,
    canonical_line,
    default_registry,
    merge_chunk,
    results_hash,
    run_backtest,
    summarize,
)

from .strategy_data import SYMBOLS, T0, Scripted, books, sim_blocks, trades


def test_the_results_hash_is_sha256_of_the_tables_hashes() -> None:
    orders = [{"b": 1.0, "a": -0.0, "c": None, "s": "x"}]
    fills = [{"price": 0.1, "qty": 3}, {"price": 2.5, "qty": 1}]
    o = hashlib.sha256(b'{"a":0.0,"b":1.0,"c":null,"s":"x"}\n').hexdigest()
    f = hashlib.sha256(b'{"price":0.1,"qty":3}\n{"price":2.5,"qty":1}\n').hexdigest()
    expected = hashlib.sha256(f"orders\n{o}\nfills\n{f}\n".encode()).hexdigest()
    assert results_hash(orders, fills) == expected
    assert results_hash(orders, []) != results_hash([], orders)
    empty = hashlib.sha256(b"").hexdigest()
    assert (
        results_hash([], [])
        == hashlib.sha256(f"orders\n{empty}\nfills\n{empty}\n".encode()).hexdigest()
    )


def test_the_summary_figures_on_a_hand_computed_round_trip() -> None:
    fills = [
        Fill(1, 1, "X", BUY, 100.0, 2.0, 0.2, "taker", T0 + 1_000_000),
        Fill(2, 2, "X", SELL, 110.0, 1.0, 0.1, "maker", T0 + 2_000_000),
        Fill(3, 3, "X", SELL, 90.0, 1.0, 0.1, "maker", T0 + 3_000_000),
    ]
    equity = [
        EquityPoint(T0, 1000.0, 1000.0, 0.0),
        EquityPoint(T0 + 1_000_000, 1100.0, 0.0, 0.0),
        EquityPoint(T0 + 2_000_000, 990.0, 0.0, 0.0),
        EquityPoint(T0 + 4_000_000, 1000.0 - 0.4, 0.0, 0.0),
    ]
    s = summarize(fills, equity, 1000.0, T0, T0 + 4_000_000, 1_000_000)
    assert s["pnl"] == pytest.approx(-0.4)
    assert s["return"] == pytest.approx(-0.0004)
    assert s["fees"] == pytest.approx(0.4)
    assert s["turnover"] == pytest.approx(400.0)
    assert s["trade_count"] == 3
    assert s["win_rate"] == 0.5  # +10 - 0.1 won, -10 - 0.1 lost
    assert s["max_position"] == 2.0
    assert s["exposure_time"] == pytest.approx(0.5)  # open from 1 s to 3 s of 4 s
    assert s["max_drawdown"] == pytest.approx(110.0 / 1100.0)
    assert s["sharpe"] is not None and s["sortino"] is not None


def test_ticks_are_merged_by_time_then_symbol_then_trades_before_books() -> None:
    chunk = [
        books("B", [(5, [(1.0, 1.0)], [(2.0, 1.0)])]),
        trades("B", [(5, 1.5, 1.0, 1)]),
        books("A", [(5, [(1.0, 1.0)], [(2.0, 1.0)]), (9, [(1.0, 1.0)], [(2.0, 1.0)])]),
        trades("A", [(1, 1.5, 1.0, 1), (5, 1.5, 1.0, 1), (5, 1.6, 1.0, -1)]),
    ]
    m = merge_chunk(chunk, ["A", "B"], 1)
    got = list(zip((m.ts_us - T0).tolist(), m.sym.tolist(), m.kind.tolist(), strict=True))
    assert got == [(1, 0, 0), (5, 0, 0), (5, 0, 0), (5, 0, 1), (5, 1, 0), (5, 1, 1), (9, 0, 1)]
    assert m.trade_price[m.row[1]] == 1.5 and m.trade_price[m.row[2]] == 1.6  # recorded order


def test_chunks_that_go_back_in_time_are_refused() -> None:
    first = [trades("A", [(10, 1.0, 1.0, 1)])]
    second = [trades("A", [(5, 1.0, 1.0, 1)])]
    with pytest.raises(ValidationError, match="overlap"):
        run_backtest(Scripted({}), [first, second], ["A"])


def _pump_tape(after_peak: list[float]) -> list:  # type: ignore[type-arg]
    """1 s of quiet trades at 100, then a surge to 103 on volume, then ``after_peak``."""
    rows = [(i * 10_000, 100.0, 0.1, 1) for i in range(100)]  # 1 s, 10 ms apart
    surge = [100.5, 101.0, 102.0, 103.0]
    rows += [(1_000_000 + i * 10_000, p, 5.0, 1) for i, p in enumerate(surge)]
    t = 1_000_000 + len(surge) * 10_000
    rows += [(t + i * 50_000, p, 0.1, -1) for i, p in enumerate(after_peak)]
    quotes = [(ts, [(p - 0.01, 50.0)], [(p + 0.01, 50.0)]) for ts, p, _, _ in rows]
    return [trades("X", rows), books("X", quotes)]


SURGE_END_US = 1_040_000


@pytest.mark.parametrize(
    ("after_peak", "trigger", "rules"),
    [
        ([103.5, 104.0, 106.5], 1, {"take_profit_pct": 3.0, "trailing_pct": 5.0}),
        ([99.0, 98.0], 0, {"stop_loss_pct": 1.0, "trailing_pct": 10.0}),
        ([104.5, 105.5, 104.2, 104.0], 2, {"trailing_pct": 1.0, "stop_loss_pct": 10.0}),
    ],
    ids=["take-profit", "stop-loss", "trailing"],
)
def test_pump_detector_enters_on_a_surge_and_exits_by_its_rule(
    after_peak: list[float], trigger: int, rules: dict[str, float]
) -> None:
    params = {
        "window_s": 0.05,
        "price_change_pct": 1.0,
        "volume_mult": 3.0,
        "take_profit_pct": 50.0,
        **rules,
    }
    strategy = default_registry(entry_points=False).create("pump_detector", params)
    result = run_backtest(strategy, [_pump_tape(after_peak)], ["X"], SimConfig(entry_latency_us=0))
    assert result.status == "completed"
    entry, exit_ = result.orders
    # enters at the trade that makes the last 50 ms rise 1 % on 3x the volume: 101.0
    assert entry.side == BUY and entry.submitted_us == T0 + 1_010_000
    assert exit_.side == SELL and exit_.submitted_us == T0 + SURGE_END_US + trigger * 50_000
    assert exit_.filled_qty == entry.filled_qty == 1.0
    assert result.summary["max_position"] == 1.0


@pytest.mark.parametrize(
    "row",
    [
        {"b": 1.0, "a": 2, "c": None, "d": True, "e": False},
        {"price": 0.1 + 0.2, "qty": 1e-7, "big": 1e22, "neg": -3.5, "s": 'q"u\u00e9'},
        {"x": 123456789.123456789, "y": -1, "z": ""},
    ],
)
def test_canonical_lines_are_sorted_key_json_with_one_zero(row: dict[str, object]) -> None:
    expected = json.dumps(row, sort_keys=True, separators=(",", ":"))
    assert canonical_line(row) == expected
    assert canonical_line({"z": -0.0}) == '{"z":0.0}'
    with pytest.raises(ValueError, match="non-finite"):
        canonical_line({"z": float("nan")})


def test_market_maker_keeps_its_inventory_within_the_limit_counting_orders_in_flight() -> None:
    strategy = default_registry(entry_points=False).create(
        "market_maker", {"qty": 0.2, "max_inventory": 0.5, "half_spread_bps": 0.5}
    )
    result = run_backtest(strategy, sim_blocks(10), SYMBOLS, SimConfig(partial_passive_fills=True))
    assert result.status == "completed"
    assert len(result.fills) > 20
    assert {f.liquidity for f in result.fills} == {"maker"}  # post-only: never takes
    assert result.summary["max_position"] <= 0.5 + 1e-9  # type: ignore[operator]


def test_orders_and_fills_write_their_canonical_lines_like_their_dicts() -> None:
    registry = default_registry(entry_points=False)
    runs = [
        run_backtest(registry.create("market_maker"), sim_blocks(6), SYMBOLS),
        run_backtest(registry.create("sma_cross", {"fast": 3, "slow": 9}), sim_blocks(2), SYMBOLS),
    ]
    for result in runs:
        assert result.orders and result.fills
        for row in [*result.orders, *result.fills]:
            assert row.canonical() == canonical_line(row.to_dict())
        dicts = results_hash(
            [o.to_dict() for o in result.orders], [f.to_dict() for f in result.fills]
        )
        assert result.hash == dicts
