"""Runners: what each session kind does while it runs.

A runner is given a session and its :class:`~ticktape.runtime.handle.RunHandle` by the
supervisor (:mod:`ticktape.runtime`) and does the work of its kind —
:class:`~ticktape.runners.collect.CollectRunner` (feed → bounded buffer → fenced tick
writes by the instance's one :class:`~ticktape.runners.writer.TickWriter`; a paced simulated
feed driven by the instance's one sim driver; both owned by the registry,
:mod:`ticktape.runners.instance`),
:class:`~ticktape.runners.backtest.BacktestRunner` (a recorded session
replayed through a strategy, results stored),
:class:`~ticktape.runners.paper.PaperRunner` (a collect recording with a strategy on
the live feed, results stored) — until it is stopped, finishes, is
handed over or loses its lease; then it returns a
:class:`~ticktape.runtime.runner.RunResult` and the runtime records the end. A new
session kind gets a runner module here and an entry in :func:`default_runners`;
ownership, leases and the store-first transitions stay in the runtime.
"""

from __future__ import annotations

from ticktape.config import Settings
from ticktape.domain import SessionKind
from ticktape.metrics import Metrics
from ticktape.runners.backtest import BacktestRunner
from ticktape.runners.collect import CollectRunner
from ticktape.runners.instance import InstanceParts, Instances
from ticktape.runners.paper import PaperRunner
from ticktape.runners.writer import TickWriter
from ticktape.runtime.runner import Runner, RunnerRegistry
from ticktape.store.base import Store
from ticktape.strategies import StrategyRegistry, default_registry


def default_runners(
    strategies: StrategyRegistry | None = None, *, instances: Instances | None = None
) -> RunnerRegistry:
    """The runner of every session kind this build runs; backtests take their strategies
    from ``strategies`` (default: the built-ins). The recording runs of an instance (collect,
    paper) share its tick writer and sim driver (``runners/instance.py``), one set per owner
    token, kept in ``instances`` (default: of this registry's own; pass one to look them up,
    ``Instances.find``)."""
    registry = strategies if strategies is not None else default_registry()
    shared = instances if instances is not None else Instances()

    def collect(store: Store, settings: Settings, metrics: Metrics, owner: str) -> Runner:
        parts = shared.get(store, settings, metrics, owner)
        return CollectRunner(store, settings, metrics, owner, parts)

    def backtest(store: Store, settings: Settings, metrics: Metrics, owner: str) -> Runner:
        return BacktestRunner(store, settings, metrics, owner, registry)

    def paper(store: Store, settings: Settings, metrics: Metrics, owner: str) -> Runner:
        parts = shared.get(store, settings, metrics, owner)
        return PaperRunner(store, settings, metrics, owner, registry, parts)

    return RunnerRegistry(
        {
            SessionKind.COLLECT: collect,
            SessionKind.BACKTEST: backtest,
            SessionKind.PAPER: paper,
        }
    )


__all__ = ["InstanceParts", "Instances", "TickWriter", "default_runners"]
