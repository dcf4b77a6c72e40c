"""Errors of the strategies package, in the project's tree (ticktape/errors.py).

::

    ValidationError (422)
    ├── UnknownStrategy       no registered strategy has this name
    └── InvalidParams         the parameters break the strategy's declared schema
    TicktapeError
    └── StrategyFailed        the strategy raised or overran its time budget
"""

from __future__ import annotations

from ticktape.errors import TicktapeError, ValidationError


class UnknownStrategy(ValidationError):
    code = "unknown_strategy"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"unknown strategy {name!r}: choose from {', '.join(known) or '(none registered)'}",
            field="strategy",
        )
        self.name = name


class InvalidParams(ValidationError):
    code = "invalid_params"


class StrategyFailed(TicktapeError):
    """The strategy raised, or one call overran its budget: the session fails with this code."""

    code = "strategy_error"


class StrategyTimeout(BaseException):
    """Raised asynchronously into a strategy that overran its per-call time budget.

    A ``BaseException`` so that a strategy's own ``except Exception`` cannot swallow it.
    """
