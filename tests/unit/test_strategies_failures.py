"""A strategy that raises or hangs fails its run as ``strategy_error``; stop keeps results."""

from __future__ import annotations

import threading
import time

import numpy as np

from ticktape.strategies import (
    BUY,
    ColumnarStrategy,
    Context,
    MergedChunk,
    Pacer,
    SimConfig,
    Strategy,
    StrategyParams,
    TradeTick,
    run_backtest,
)

from .strategy_data import SYMBOLS, sim_blocks

BLOCKS = sim_blocks(4)
PARAMS = StrategyParams()


class RaisesAtTrade(Strategy):
    def __init__(self, at: int) -> None:
        super().__init__(PARAMS)
        self.at = at
        self.count = 0

    def on_trade(self, ctx: Context, trade: TradeTick) -> None:
        self.count += 1
        if self.count == 3:
            ctx.submit_market(trade.symbol, BUY, 0.5)
        if self.count == self.at:
            raise RuntimeError("boom in user code")


def test_a_strategy_that_raises_fails_with_its_traceback_and_keeps_what_came_before() -> None:
    result = run_backtest(RaisesAtTrade(at=500), BLOCKS, SYMBOLS)
    assert result.status == "strategy_error"
    assert "on_trade raised" in result.error
    assert "RuntimeError: boom in user code" in result.error
    assert "test_strategies_failures.py" in result.error  # the user's frame is shown
    assert len(result.orders) == 1 and result.fills  # the order from before is kept
    assert 0 < result.ticks < sum(len(b) for block in BLOCKS for b in block)


class Spins(Strategy):
    def on_trade(self, ctx: Context, trade: TradeTick) -> None:
        if trade.ts_us > ctx.symbols.__len__():  # always true: spin forever
            while True:
                pass


def test_a_strategy_that_hangs_in_python_is_interrupted_after_its_budget() -> None:
    started = time.monotonic()
    result = run_backtest(Spins(PARAMS), BLOCKS, SYMBOLS, call_budget_s=0.3)
    assert result.status == "strategy_error"
    assert "did not return within its time budget" in result.error
    assert "while True" in result.error or "Spins" in result.error or "on_trade" in result.error
    assert time.monotonic() - started < 30  # bounded: it did not wait forever


class Blocks(Strategy):
    def __init__(self, release: threading.Event) -> None:
        super().__init__(PARAMS)
        self.release = release

    def on_start(self, ctx: Context) -> None:
        self.release.wait()  # a native wait: cannot be interrupted


def test_a_strategy_blocked_in_native_code_still_fails_its_run_after_the_budget() -> None:
    release = threading.Event()
    try:
        result = run_backtest(Blocks(release), BLOCKS, SYMBOLS, call_budget_s=0.2)
        assert result.status == "strategy_error"
        assert "could not be interrupted" in result.error
        assert result.ticks == 0
    finally:
        release.set()  # the abandoned thread sees the stop flag and ends


class BadTargets(ColumnarStrategy):
    def targets(self, chunk: MergedChunk) -> np.ndarray:  # type: ignore[type-arg]
        return np.zeros(3)


def test_a_columnar_strategy_returning_the_wrong_shape_fails_clearly() -> None:
    result = run_backtest(BadTargets(PARAMS), BLOCKS, SYMBOLS)
    assert result.status == "strategy_error"
    assert "one target per tick" in result.error


class StopsItself(Strategy):
    def __init__(self, stop: threading.Event, after: int) -> None:
        super().__init__(PARAMS)
        self.stop, self.after, self.count = stop, after, 0

    def on_trade(self, ctx: Context, trade: TradeTick) -> None:
        self.count += 1
        if self.count == 2:
            ctx.submit_market(trade.symbol, BUY, 1.0)
        if self.count == self.after:
            self.stop.set()


def test_stop_mid_replay_ends_the_run_as_stopped_with_its_results_so_far() -> None:
    stop = threading.Event()
    blocks = sim_blocks(20)
    total = sum(len(b) for block in blocks for b in block)
    result = run_backtest(StopsItself(stop, after=100), blocks, SYMBOLS, stop=stop)
    assert result.status == "stopped"
    assert 100 <= result.ticks < total
    assert result.fills and result.equity[-1].ts_us == result.last_us
    paced_stop = threading.Event()
    paced = run_backtest(
        StopsItself(paced_stop, after=10), blocks, SYMBOLS, stop=paced_stop, speed=1.0
    )
    assert paced.status == "stopped" and paced.ticks <= 12  # paced: checked at every tick


def test_a_speed_factor_spaces_ticks_by_exchange_time_divided_by_it() -> None:
    blocks = sim_blocks(2, rate_per_s=200.0)  # 20 trades/symbol per block, 5 ms apart
    span_s = (
        max(int(b.ts_us[-1]) for block in blocks for b in block)
        - min(int(b.ts_us[0]) for block in blocks for b in block)
    ) / 1e6
    pacer = Pacer(50.0, record_lateness=True)
    started = time.monotonic()
    result = run_backtest(Strategy(PARAMS), blocks, SYMBOLS, SimConfig(), pacer=pacer)
    assert result.status == "completed"
    assert time.monotonic() - started >= span_s / 50.0 * 0.99
    assert pacer.lateness_s is not None and len(pacer.lateness_s) == result.ticks
