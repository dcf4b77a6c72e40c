"""Backtest and paper requests are validated, strategy and parameters included; the seed counts."""

from __future__ import annotations

import pytest

from ticktape.errors import ValidationError
from ticktape.strategies import (
    BUY,
    SELL,
    Context,
    InvalidParams,
    Strategy,
    StrategyParams,
    TradeTick,
    UnknownStrategy,
    default_registry,
    run_backtest,
    validate_backtest,
    validate_paper,
)

from .strategy_data import SYMBOLS, sim_blocks

REGISTRY = default_registry(entry_points=False)


def test_a_backtest_request_becomes_a_spec_and_a_sim_config() -> None:
    spec = validate_backtest(
        {
            "source_session": "abc",
            "strategy": "sma_cross",
            "params": {"fast": 3, "slow": 9},
            "latency_ms": 5,
            "fees": {"sim": [0.0, 0.001]},
            "speed": 100,
            "seed": 7,
        },
        REGISTRY,
    )
    config = spec.sim_config("sim")
    assert (config.entry_latency_us, config.cancel_latency_us) == (5000, 5000)
    assert config.taker_fee == 0.001 and config.maker_fee == 0.0
    assert spec.speed == 100 and spec.seed == 7 and spec.symbols is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"strategy": "sma_cross"}, "source_session"),
        ({"source_session": "a", "strategy": "sma_cross", "speed": -1}, "speed"),
        ({"source_session": "a", "strategy": "sma_cross", "latency_ms": "soon"}, "latency_ms"),
        ({"source_session": "a", "strategy": "sma_cross", "fees": {"sim": [5, 5]}}, None),
        ({"source_session": "a", "strategy": "sma_cross", "symbols": []}, "symbols"),
        ({"source_session": "a", "strategy": "sma_cross", "tip": 1}, "tip"),
        (
            {
                "source_session": "a",
                "strategy": "sma_cross",
                "start": "2024-01-02T00:00:00Z",
                "end": "2024-01-01T00:00:00Z",
            },
            None,
        ),
    ],
)
def test_bad_backtest_requests_name_the_field(body: dict[str, object], field: str | None) -> None:
    with pytest.raises(ValidationError) as err:
        validate_backtest(body, REGISTRY)
    assert err.value.field == field


def test_unknown_strategies_and_bad_parameters_are_refused_before_anything_starts() -> None:
    with pytest.raises(UnknownStrategy):
        validate_paper({"symbols": ["BTC_USDT"], "strategy": "nope"}, REGISTRY)
    with pytest.raises(InvalidParams):
        validate_paper(
            {"symbols": ["BTC_USDT"], "strategy": "market_maker", "params": {"qty": 0}}, REGISTRY
        )
    spec = validate_paper({"symbols": ["BTC_USDT"], "strategy": "market_maker"}, REGISTRY)
    assert spec.exchange == "sim" and spec.duration_s is None


class Coin(Strategy):
    """Trades at random: its rng is the run's seed."""

    def on_trade(self, ctx: Context, trade: TradeTick) -> None:
        if self.rng.random() < 0.01:
            ctx.submit_market(trade.symbol, BUY if self.rng.random() < 0.5 else SELL, 0.1)


def test_the_seed_drives_the_strategy_rng_and_so_the_results() -> None:
    blocks = sim_blocks(4)
    a = run_backtest(Coin(StrategyParams()), blocks, SYMBOLS, seed=1)
    b = run_backtest(Coin(StrategyParams()), blocks, SYMBOLS, seed=1)
    c = run_backtest(Coin(StrategyParams()), blocks, SYMBOLS, seed=2)
    assert a.fills and a.hash == b.hash
    assert c.hash != a.hash
