"""The columnar engine's results are the per-event engine's, byte for byte.

The columnar run keeps its orders, fills and equity points as arrays and writes their
canonical lines column by column (orjson for the digits, ``repr`` where ``repr`` uses
an exponent); these tests pin that spelling to ``canonical_line`` and the objects'
own ``canonical()``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ticktape.strategies import (
    RunResult,
    SimConfig,
    canonical_floats,
    canonical_ints,
    canonical_line,
    default_registry,
    run_backtest,
)

from .strategy_data import SYMBOLS, sim_blocks

REGISTRY = default_registry(entry_points=False)


def test_float_spellings_equal_the_canonical_ones() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.random(20_000) * 1e5,
            10 ** rng.uniform(-30, 30, 20_000),
            -(10 ** rng.uniform(-30, 30, 5_000)),
            np.round(rng.random(5_000) * 1000, 2),
            [0.0, -0.0, 1e16, 1e-4, 9.999999999999999e15, 0.0001, 0.00009999999999999999],
            [5e-324, 1.7976931348623157e308, 123456789012345680000.0, 1.0, 100.0, 1e15],
        ]
    )
    expected = [canonical_line({"v": float(v)})[5:-1] for v in values]
    assert canonical_floats(values) == expected
    assert canonical_floats(np.zeros(0)) == []


def test_non_finite_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        canonical_floats(np.array([1.0, np.nan]))


def test_int_spellings() -> None:
    values = np.array([0, -1, 2**62, -(2**62), 1_700_000_000_000_000], np.int64)
    assert canonical_ints(values) == [str(v) for v in values.tolist()]
    assert canonical_ints(np.zeros(0, np.int64)) == []


def _lines(result: RunResult) -> tuple[list[str], list[str], list[str]]:
    return result.order_lines(), result.fill_lines(), result.equity_lines()


@pytest.mark.parametrize("latency_us", [0, 20_000, 400_000])
def test_columnar_lines_equal_the_objects_canonical_lines(latency_us: int) -> None:
    # a long latency leaves orders in flight at the end: they are written as submitted
    config = SimConfig(entry_latency_us=latency_us, equity_interval_us=20_000)
    strategy = REGISTRY.create("sma_cross", {"fast": 5, "slow": 30, "size": 3.0}, form="columnar")
    result = run_backtest(strategy, sim_blocks(6), SYMBOLS, config)
    assert result.columns is not None and result.fills
    statuses = {o.status.value for o in result.orders}
    assert "expired" in statuses  # the book's depth ran out: partly filled orders too
    if latency_us == 400_000:
        assert "submitted" in statuses  # still in flight when the replay ended
    orders, fills, equity = _lines(result)
    assert orders == [o.canonical() for o in result.orders]
    assert orders == [canonical_line(o.to_dict()) for o in result.orders]
    assert fills == [canonical_line(f.to_dict()) for f in result.fills]
    assert equity == [canonical_line(p.to_dict()) for p in result.equity]
    event = run_backtest(
        REGISTRY.create("sma_cross", {"fast": 5, "slow": 30, "size": 3.0}, form="event"),
        sim_blocks(6),
        SYMBOLS,
        config,
    )
    assert _lines(event) == (orders, fills, equity)
    assert event.hash == result.hash and event.summary == result.summary
