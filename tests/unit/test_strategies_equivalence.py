"""Both strategy forms give identical fills; a run is a pure function of its inputs."""

from __future__ import annotations

import threading

import pytest

from ticktape.feeds.sim import SimExchange
from ticktape.strategies import (
    ColumnarStrategy,
    LiveSource,
    RunResult,
    SimConfig,
    Strategy,
    default_registry,
    run_backtest,
)
from ticktape.ticks import TickBatch

from .strategy_data import SYMBOLS, T0, rechunk, sim_blocks

REGISTRY = default_registry(entry_points=False)
BLOCKS = sim_blocks(12)  # 2 symbols x 12 x 200 trades, and their books (depth 3)
CONFIG = SimConfig(equity_interval_us=20_000)


def sma(form: str, **params: object) -> Strategy | ColumnarStrategy:
    return REGISTRY.create("sma_cross", {"fast": 5, "slow": 30, **params}, form=form)  # type: ignore[arg-type]


def rows(result: RunResult) -> tuple[list[dict[str, object]], ...]:
    return (
        [o.to_dict() for o in result.orders],
        [f.to_dict() for f in result.fills],
        [p.to_dict() for p in result.equity],
    )


@pytest.mark.parametrize(
    "config",
    [
        CONFIG,
        SimConfig(entry_latency_us=0, equity_interval_us=7_000),
        SimConfig(entry_latency_us=1_500, initial_cash=1e4),
    ],
    ids=["latency-20ms", "latency-0", "latency-1.5ms"],
)
def test_sma_cross_per_event_and_columnar_give_identical_orders_fills_and_equity(
    config: SimConfig,
) -> None:
    event = run_backtest(sma("event", size=3.0), BLOCKS, SYMBOLS, config)
    columnar = run_backtest(sma("columnar", size=3.0), BLOCKS, SYMBOLS, config)
    assert event.status == columnar.status == "completed"
    assert len(event.fills) > 50  # it really traded, through more than one book level
    assert any(o.status.value == "expired" for o in event.orders) or len(
        {(f.order_id) for f in event.fills}
    ) < len(event.fills)
    assert rows(event) == rows(columnar)
    assert event.hash == columnar.hash
    assert event.summary == columnar.summary


def test_chunk_boundaries_do_not_change_a_run() -> None:
    whole = run_backtest(sma("event"), BLOCKS, SYMBOLS, CONFIG)
    for window_us in (1_000, 37_000, 10**9):
        for form in ("event", "columnar"):
            again = run_backtest(sma(form), rechunk(BLOCKS, window_us), SYMBOLS, CONFIG)
            assert again.hash == whole.hash, (form, window_us)
            assert rows(again) == rows(whole)


@pytest.mark.parametrize("name", ["market_maker", "pump_detector", "sma_cross"])
def test_the_same_inputs_give_the_same_results_hash(name: str) -> None:
    params = (
        {"window_s": 0.01, "price_change_pct": 0.01, "volume_mult": 1.0}
        if name == "pump_detector"
        else {}
    )
    first = run_backtest(REGISTRY.create(name, params, form="event"), BLOCKS, SYMBOLS, CONFIG)
    second = run_backtest(REGISTRY.create(name, params, form="event"), BLOCKS, SYMBOLS, CONFIG)
    assert first.fills, "the strategy should trade on this data"
    assert first.hash == second.hash
    assert rows(first) == rows(second)
    other = run_backtest(
        REGISTRY.create(name, params, form="event"), sim_blocks(12, seed=8), SYMBOLS, CONFIG
    )
    assert other.hash != first.hash


def test_a_run_over_a_live_feed_is_reproduced_by_a_backtest_of_what_it_saw() -> None:
    # The paper path at the engine's level: a feed thread hands blocks over as they
    # come; the backtest replays the same blocks afterwards.
    source = LiveSource(max_chunks=2)  # small: the feed waits for the strategy
    seen: list[list[TickBatch]] = []

    def feed() -> None:
        ex = SimExchange("paper", SYMBOLS, seed=7, rate_per_s=2000.0, start_us=T0)
        for _ in range(12):
            block = ex.next_block()
            seen.append(block)
            source.put(block)
        source.close()

    producer = threading.Thread(target=feed)
    producer.start()
    try:
        live = run_backtest(REGISTRY.create("market_maker", form="event"), source, SYMBOLS, CONFIG)
    finally:
        producer.join(timeout=30)
    assert not producer.is_alive()
    replayed = run_backtest(REGISTRY.create("market_maker", form="event"), seen, SYMBOLS, CONFIG)
    assert live.status == replayed.status == "completed"
    assert live.fills and live.hash == replayed.hash
    assert rows(live) == rows(replayed)
