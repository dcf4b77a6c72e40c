"""What a backtest or paper session asks for, validated before it is stored.

``validate_backtest`` / ``validate_paper`` take the request's fields (the API's
JSON body, the CLI's options) and either return a typed spec or raise a
:class:`~ticktape.errors.ValidationError` (422) naming the wrong field. The
strategy and its parameters are checked against the registry here, so a session
with an unknown strategy or a bad parameter is never created.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ticktape.errors import ValidationError
from ticktape.strategies._model import (
    DEFAULT_EQUITY_INTERVAL_S,
    DEFAULT_INITIAL_CASH,
    DEFAULT_LATENCY_MS,
    SimConfig,
)
from ticktape.strategies._registry import StrategyRegistry

MAX_FEE_RATE = 0.1  # a fee of 10 % of notional or more is a typo, not a venue
MAX_SPEED = 1_000_000.0


class _StrategyRun(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str = Field(min_length=1)
    params: dict[str, object] = Field(default_factory=dict)
    form: Literal["event", "columnar"] | None = None
    initial_cash: float = Field(DEFAULT_INITIAL_CASH, gt=0, allow_inf_nan=False)
    fees: dict[str, tuple[float, float]] = Field(default_factory=dict)
    latency_ms: float = Field(DEFAULT_LATENCY_MS, ge=0, le=60_000, allow_inf_nan=False)
    equity_interval_s: float = Field(DEFAULT_EQUITY_INTERVAL_S, gt=0, allow_inf_nan=False)
    partial_passive_fills: bool = False
    seed: int = Field(0, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _fee_rates(self) -> _StrategyRun:
        for exchange, (maker, taker) in self.fees.items():
            for rate in (maker, taker):
                if not -MAX_FEE_RATE < rate < MAX_FEE_RATE:
                    raise ValueError(
                        f"fee rates for {exchange!r} are fractions of notional "
                        f"(0.0005 = 0.05 %), each within ±{MAX_FEE_RATE:g}"
                    )
        return self

    def sim_config(self, exchange: str) -> SimConfig:
        latency_us = round(self.latency_ms * 1000)
        return SimConfig(
            exchange=exchange,
            initial_cash=self.initial_cash,
            entry_latency_us=latency_us,
            cancel_latency_us=latency_us,
            fees=dict(self.fees),
            partial_passive_fills=self.partial_passive_fills,
            equity_interval_us=round(self.equity_interval_s * 1_000_000),
        )


class BacktestSpec(_StrategyRun):
    """A replay of a recorded session (``source_session``) through a strategy."""

    kind: Literal["backtest"] = "backtest"
    source_session: str = Field(min_length=1)
    symbols: list[str] | None = Field(None, min_length=1)
    start: datetime | None = None
    end: datetime | None = None
    speed: float = Field(0.0, ge=0, le=MAX_SPEED, allow_inf_nan=False)

    @model_validator(mode="after")
    def _window(self) -> BacktestSpec:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class PaperSpec(_StrategyRun):
    """A strategy on a live feed with simulated fills."""

    kind: Literal["paper"] = "paper"
    exchange: str = Field("sim", min_length=1)
    symbols: list[str] = Field(min_length=1)
    duration_s: float | None = Field(None, gt=0, allow_inf_nan=False)


def _parse(model: type[_StrategyRun], data: Mapping[str, object]) -> _StrategyRun:
    try:
        return model.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValidationError(
            f"{where or 'request'}: {first['msg']}", field=where or None
        ) from None


def validate_backtest(data: Mapping[str, object], registry: StrategyRegistry) -> BacktestSpec:
    spec = _parse(BacktestSpec, data)
    assert isinstance(spec, BacktestSpec)
    registry.create(spec.strategy, spec.params, spec.form)  # unknown / bad params: 422
    return spec


def validate_paper(data: Mapping[str, object], registry: StrategyRegistry) -> PaperSpec:
    spec = _parse(PaperSpec, data)
    assert isinstance(spec, PaperSpec)
    registry.create(spec.strategy, spec.params, spec.form)
    return spec
