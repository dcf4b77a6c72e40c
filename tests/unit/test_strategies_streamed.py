"""A streamed run hands out exactly the rows an unstreamed run keeps, with the same
hash and summary, however small its batches."""

from __future__ import annotations

import pytest

from ticktape.strategies import (
    ResultBatch,
    RunResult,
    SimConfig,
    default_registry,
    run_backtest,
)

from .strategy_data import SYMBOLS, sim_blocks

REGISTRY = default_registry(entry_points=False)
CONFIG = SimConfig(equity_interval_us=20_000)
CASES = [
    ("sma_cross", "columnar", {"fast": 5, "slow": 30, "size": 3.0}),
    ("sma_cross", "event", {"fast": 5, "slow": 30, "size": 3.0}),
    ("market_maker", "event", {}),
]


def _lines(result: RunResult) -> tuple[list[str], list[str], list[str]]:
    return result.order_lines(), result.fill_lines(), result.equity_lines()


@pytest.mark.parametrize(("name", "form", "params"), CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("flush_rows", [1, 7, 1_000])
def test_a_streamed_run_hands_out_the_rows_an_unstreamed_run_keeps(
    name: str, form: str, params: dict[str, object], flush_rows: int
) -> None:
    blocks = sim_blocks(8)
    kept = run_backtest(REGISTRY.create(name, params, form=form), blocks, SYMBOLS, CONFIG)  # type: ignore[arg-type]
    batches: list[ResultBatch] = []
    streamed = run_backtest(
        REGISTRY.create(name, params, form=form),  # type: ignore[arg-type]
        blocks,
        SYMBOLS,
        CONFIG,
        sink=batches.append,
        flush_rows=flush_rows,
    )
    orders, fills, equity = _lines(kept)
    assert orders, "the strategy should have traded on this data"
    assert [line for b in batches for line in b.orders] == orders
    assert [line for b in batches for line in b.fills] == fills
    assert [line for b in batches for line in b.equity] == equity
    if flush_rows < 1_000:
        assert len(batches) > 2  # really handed out as it ran
    assert streamed.hash == kept.hash
    assert streamed.summary == kept.summary
    assert streamed.counts == kept.counts == (len(orders), len(fills), len(equity))
    with pytest.raises(RuntimeError, match="streamed"):
        _ = streamed.fills  # nothing kept


def test_a_stopped_streamed_run_has_handed_out_everything_up_to_the_stop() -> None:
    import threading

    stop = threading.Event()
    blocks = sim_blocks(8)
    batches: list[ResultBatch] = []

    def source():  # type: ignore[no-untyped-def]
        for i, block in enumerate(blocks):
            if i == 4:
                stop.set()
            yield block

    strategy = REGISTRY.create("sma_cross", {"fast": 5, "slow": 30}, form="columnar")
    result = run_backtest(
        strategy, source(), SYMBOLS, CONFIG, stop=stop, sink=batches.append, flush_rows=5
    )
    assert result.status == "stopped"
    handed = sum(len(b.orders) for b in batches), sum(len(b.fills) for b in batches)
    assert handed == result.counts[:2] and handed[0] > 0
