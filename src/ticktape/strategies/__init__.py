"""Strategies, the fill simulator they trade against, and the engines that replay ticks.

Public face of the package (pinned by tests/unit/test_strategies_api.py); the
modules behind it are private. Rules of the simulated exchange: docs/fills.md.

- :class:`Strategy` (per event) and :class:`ColumnarStrategy` (target positions per
  chunk of ticks), parameters declared as a :class:`StrategyParams` model;
- :class:`StrategyRegistry` / :func:`default_registry`: built-ins (``sma_cross``,
  ``market_maker``, ``pump_detector``), a directory, the ``ticktape.strategies``
  entry points;
- :func:`run_backtest`: a strategy over an iterator of tick chunks, under a per-call
  time budget, into a :class:`RunResult` (orders, fills, equity, summary, hash).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np

from ticktape.strategies._canonical import canonical_floats, canonical_ints, canonical_line
from ticktape.strategies._columnar import ColumnarEngine
from ticktape.strategies._contract import (
    ColumnarStrategy,
    Context,
    NoParams,
    Strategy,
    StrategyParams,
)
from ticktape.strategies._engine import FLUSH_ROWS, EventEngine, Run
from ticktape.strategies._errors import InvalidParams, StrategyFailed, UnknownStrategy
from ticktape.strategies._guard import DEFAULT_CALL_BUDGET_S, run_guarded
from ticktape.strategies._model import (
    BUY,
    DEFAULT_FEES,
    DEFAULT_INITIAL_CASH,
    DEFAULT_LATENCY_MS,
    SELL,
    BookTick,
    EquityPoint,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    SimConfig,
    TradeTick,
)
from ticktape.strategies._registry import (
    ENTRY_POINT_GROUP,
    StrategyRegistry,
    StrategySpec,
    default_registry,
)
from ticktape.strategies._replay import Chunk, LiveSource, MergedChunk, Pacer, merge_chunk
from ticktape.strategies._results import ResultBatch, RunResult, Sink, results_hash, summarize
from ticktape.strategies._spec import BacktestSpec, PaperSpec, validate_backtest, validate_paper

__all__ = [
    "BUY",
    "DEFAULT_CALL_BUDGET_S",
    "DEFAULT_FEES",
    "DEFAULT_INITIAL_CASH",
    "DEFAULT_LATENCY_MS",
    "ENTRY_POINT_GROUP",
    "SELL",
    "BacktestSpec",
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
    "PaperSpec",
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
    "validate_backtest",
    "validate_paper",
]


def run_backtest(
    strategy: Strategy | ColumnarStrategy,
    source: Iterable[Chunk],
    symbols: Sequence[str],
    config: SimConfig | None = None,
    *,
    depth: int | None = None,
    speed: float = 0.0,
    call_budget_s: float = DEFAULT_CALL_BUDGET_S,
    stop: threading.Event | None = None,
    pacer: Pacer | None = None,
    seed: int = 0,
    sink: Sink | None = None,
    flush_rows: int = FLUSH_ROWS,
) -> RunResult:
    """Replay ``source`` (consecutive chunks of tick batches) through ``strategy``.

    Blocks until the source is exhausted (``completed``), ``stop`` is set
    (``stopped``: results up to there) or the strategy fails (``strategy_error``).
    ``speed`` 0 replays as fast as possible, N at N x exchange time. ``seed`` seeds
    the strategy's ``rng``: the same inputs and seed give the same results hash.

    With ``sink`` the run is **streamed**: its rows go to ``sink`` (on the run's
    thread) in :class:`ResultBatch` es of about ``flush_rows`` rows as it runs, and the
    result holds only their counts, the hash and the summary — the same as an
    unstreamed run's. ``sink`` may block (backpressure); that time is not the
    strategy's.
    """
    config = config or SimConfig()
    strategy.rng = np.random.default_rng(seed)
    engine: Run
    if isinstance(strategy, ColumnarStrategy):
        columnar = ColumnarEngine(
            strategy, symbols, config, depth=depth, sink=sink, flush_rows=flush_rows
        )
        engine, body_run, partial = columnar, columnar.run, columnar.result
    else:
        event = EventEngine(
            strategy, symbols, config, depth=depth, sink=sink, flush_rows=flush_rows
        )
        engine, body_run, partial = event, event.run, event.result
    if stop is not None:
        engine.stop = stop
    if pacer is None and speed > 0:
        pacer = Pacer(speed, engine.stop)
    elif pacer is not None:
        pacer.stop = engine.stop
    return run_guarded(engine, lambda: body_run(source, pacer), partial, call_budget_s)
