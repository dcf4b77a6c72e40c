"""``sma_cross``: trend following on trades, in both forms.

Long ``size`` when the fast simple moving average of trade prices is above the
slow one, short ``size`` (or flat, without ``allow_short``) when below; no change
when equal or before ``slow`` trades. Both forms compute the averages from the
same running sum of prices, added in the same order, so they decide identically.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import cast

import numpy as np
from pydantic import Field, model_validator

from ticktape.strategies._contract import ColumnarStrategy, Context, Strategy, StrategyParams
from ticktape.strategies._model import BUY, MIN_ORDER_QTY, SELL, TradeTick
from ticktape.strategies._replay import KIND_TRADE, MergedChunk
from ticktape.ticks import Float64Array

DESCRIPTION = "Trend following on trades: long when the fast SMA is above the slow SMA, else short."


class SmaCrossParams(StrategyParams):
    fast: int = Field(20, ge=1, description="trades in the fast average")
    slow: int = Field(100, ge=2, description="trades in the slow average (> fast)")
    size: float = Field(1.0, gt=0, description="position held, in base units")
    allow_short: bool = Field(True, description="go short on a down-cross (else flat)")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> SmaCrossParams:
        if self.fast >= self.slow:
            raise ValueError("fast must be smaller than slow")
        return self


class SmaCross(Strategy):
    name = "sma_cross"
    description = DESCRIPTION
    params_model = SmaCrossParams

    def __init__(self, params: StrategyParams) -> None:
        super().__init__(params)
        self.p = cast(SmaCrossParams, params)
        self._sums: dict[str, deque[float]] = {}

    def on_start(self, ctx: Context) -> None:
        # running sums of prices: entry k is the sum of the first k trades (entry 0 is 0)
        self._sums = {s: deque([0.0], maxlen=self.p.slow + 1) for s in ctx.symbols}

    def on_trade(self, ctx: Context, trade: TradeTick) -> None:
        p = self.p
        sums = self._sums[trade.symbol]
        total = sums[-1] + trade.price
        sums.append(total)
        if len(sums) <= p.slow:
            return
        fast = (total - sums[-1 - p.fast]) / p.fast
        slow = (total - sums[0]) / p.slow
        if fast > slow:
            target = p.size
        elif fast < slow:
            target = -p.size if p.allow_short else 0.0
        else:
            return
        sym = trade.symbol
        delta = target - (ctx.position(sym) + ctx.pending(sym))
        if abs(delta) > MIN_ORDER_QTY:
            ctx.submit_market(sym, BUY if delta > 0 else SELL, abs(delta))


class SmaCrossColumnar(ColumnarStrategy):
    name = "sma_cross"
    description = DESCRIPTION
    params_model = SmaCrossParams

    def __init__(self, params: StrategyParams) -> None:
        super().__init__(params)
        self.p = cast(SmaCrossParams, params)
        self._sums: list[Float64Array] = []

    def start(self, symbols: Sequence[str]) -> None:
        self._sums = [np.zeros(1) for _ in symbols]

    def targets(self, chunk: MergedChunk) -> Float64Array:
        p = self.p
        out = np.full(len(chunk), np.nan)
        is_trade = chunk.kind == KIND_TRADE
        for s, hist in enumerate(self._sums):
            at = np.flatnonzero(is_trade & (chunk.sym == s))
            if not len(at):
                continue
            prices = chunk.trade_price[chunk.row[at]]
            sums = np.cumsum(np.concatenate((hist[-1:], prices)))[1:]  # same additions
            full = np.concatenate((hist, sums))
            j = np.arange(len(hist), len(full))
            ok = j - p.slow >= 0
            jj = j[ok]
            fast = (full[jj] - full[jj - p.fast]) / p.fast
            slow = (full[jj] - full[jj - p.slow]) / p.slow
            low = -p.size if p.allow_short else 0.0
            target = np.where(fast > slow, p.size, np.where(fast < slow, low, np.nan))
            out[at[ok]] = target
            self._sums[s] = full[-(p.slow + 1) :]
        return out
