"""The strategies package's public names are pinned: changing them is a decision."""

from __future__ import annotations

import ticktape.strategies as strategies

PUBLIC = {
    "BUY",
    "BacktestSpec",
    "PaperSpec",
    "validate_backtest",
    "validate_paper",
    "DEFAULT_CALL_BUDGET_S",
    "DEFAULT_FEES",
    "DEFAULT_INITIAL_CASH",
    "DEFAULT_LATENCY_MS",
    "ENTRY_POINT_GROUP",
    "SELL",
    "BookTick",
    "Chunk",
    "ColumnarStrategy",
    "Context",
    "EquityPoint",
    "Fill",
    "InvalidParams",
    "LiveSource",
    "MergedChunk",
    "NoParams",
    "Order",
    "OrderStatus",
    "OrderType",
    "Pacer",
    "ResultBatch",
    "RunResult",
    "SimConfig",
    "Strategy",
    "StrategyFailed",
    "StrategyParams",
    "StrategyRegistry",
    "StrategySpec",
    "TradeTick",
    "UnknownStrategy",
    "canonical_floats",
    "canonical_ints",
    "canonical_line",
    "default_registry",
    "merge_chunk",
    "results_hash",
    "run_backtest",
    "summarize",
}


def test_the_public_names_are_exactly_these() -> None:
    assert set(strategies.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(strategies, name) is not None
