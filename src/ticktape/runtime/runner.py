"""What a runner is to the supervisor, and the registry that picks one per session kind.

The supervisor owns a session's life (begin, leases, the end written store-first);
a **runner** does the session's work in between and reports how it ended. Which
runner runs a session is looked up by its kind in a :class:`RunnerRegistry` that
the composition root (``api/app.py``, tests, benchmarks) builds with
``ticktape.runners.default_runners`` — the runtime never imports a runner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ticktape.config import Settings
from ticktape.domain import Reason, Session, SessionKind, Stats
from ticktape.errors import UnsupportedError
from ticktape.metrics import Metrics
from ticktape.runtime.handle import RunHandle
from ticktape.store.base import Store


class Outcome(StrEnum):
    FINISHED = "finished"  # ran to its end by itself (duration reached, source exhausted)
    STOPPED = "stopped"  # a stop was asked
    HANDED_OVER = "handed_over"  # this instance shuts down; another will claim and resume it
    LOST = "lost"  # the lease is gone: someone else decides this session's fate


@dataclass(frozen=True)
class RunResult:
    """How a run ended.

    ``error`` set: the session ends ``failed`` with ``error_reason``. ``finish_reason``
    is recorded when it ends ``completed``. ``stats`` set: the final stats of a run
    whose work is not the ticks it stored (a backtest: the ticks it replayed); None:
    stats are counted from the stored ticks and checked against the runner's tally.
    """

    outcome: Outcome
    error: str | None = None
    dropped: int = 0  # buffered ticks left unwritten because the lease was lost
    error_reason: str = Reason.ERROR
    finish_reason: str = Reason.DURATION_REACHED
    stats: Stats | None = None


class Runner(Protocol):
    async def run(self, session: Session, handle: RunHandle) -> RunResult: ...


#: Builds a runner for one run: (store, settings, metrics, owner token).
RunnerFactory = Callable[[Store, Settings, Metrics, str], Runner]


class RunnerRegistry:
    """Session kind → the factory of its runner."""

    def __init__(self, factories: Mapping[SessionKind, RunnerFactory] | None = None) -> None:
        self._factories: dict[SessionKind, RunnerFactory] = dict(factories or {})

    def register(self, kind: SessionKind, factory: RunnerFactory) -> None:
        self._factories[kind] = factory

    @property
    def kinds(self) -> frozenset[SessionKind]:
        return frozenset(self._factories)

    def create(
        self, kind: SessionKind, store: Store, settings: Settings, metrics: Metrics, owner: str
    ) -> Runner:
        factory = self._factories.get(kind)
        if factory is None:
            raise UnsupportedError(
                f"no runner for {kind.value} sessions on this instance", kind=kind.value
            )
        return factory(store, settings, metrics, owner)
