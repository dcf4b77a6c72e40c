"""``pump_detector``: enter on a price-and-volume surge, leave on stop / target / trail.

Per symbol it keeps the trades of the last ``window_s`` and of the
``lookback_windows`` windows before them. It buys ``qty`` (market) when the
price rose ``price_change_pct`` or more within the last window and that window's
volume is at least ``volume_mult`` times the average volume of the earlier
windows. It sells the whole position (market) when the price falls
``stop_loss_pct`` below the entry, rises ``take_profit_pct`` above it, or falls
``trailing_pct`` below the highest price since entry; then it waits
``cooldown_s`` before the next entry.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import cast

from pydantic import Field

from ticktape.strategies._contract import Context, Strategy, StrategyParams
from ticktape.strategies._model import BUY, SELL, Fill, TradeTick


class PumpDetectorParams(StrategyParams):
    window_s: float = Field(60.0, gt=0, description="the surge is measured over this window")
    lookback_windows: int = Field(10, ge=1, description="earlier windows for the volume baseline")
    price_change_pct: float = Field(2.0, gt=0, description="rise within the window to enter, %")
    volume_mult: float = Field(3.0, gt=0, description="window volume vs baseline to enter")
    qty: float = Field(1.0, gt=0, description="position taken, base units")
    stop_loss_pct: float = Field(1.0, gt=0, description="exit this far below the entry, %")
    take_profit_pct: float = Field(3.0, gt=0, description="exit this far above the entry, %")
    trailing_pct: float = Field(1.0, gt=0, description="exit this far below the peak, %")
    cooldown_s: float = Field(300.0, ge=0, description="no new entry this long after an exit")


@dataclass
class _State:
    recent: deque[tuple[int, float, float]] = field(default_factory=deque)  # last window
    older: deque[tuple[int, float]] = field(default_factory=deque)  # (ts, qty) baseline
    recent_vol: float = 0.0
    older_vol: float = 0.0
    entry: float | None = None
    peak: float = 0.0
    resume_us: int = 0  # no entry before this


class PumpDetector(Strategy):
    name = "pump_detector"
    description = "Enters on a price-and-volume surge; stop-loss, take-profit and trailing exit."
    params_model = PumpDetectorParams

    def __init__(self, params: StrategyParams) -> None:
        super().__init__(params)
        self.p = cast(PumpDetectorParams, params)
        self._state: dict[str, _State] = {}

    def on_start(self, ctx: Context) -> None:
        self._state = {s: _State() for s in ctx.symbols}

    def on_trade(self, ctx: Context, trade: TradeTick) -> None:
        p = self.p
        st = self._state[trade.symbol]
        ts = trade.ts_us
        window = int(p.window_s * 1e6)
        st.recent.append((ts, trade.price, trade.qty))
        st.recent_vol += trade.qty
        while st.recent[0][0] <= ts - window:
            old_ts, _, old_qty = st.recent.popleft()
            st.recent_vol -= old_qty
            st.older.append((old_ts, old_qty))
            st.older_vol += old_qty
        horizon = ts - window * (p.lookback_windows + 1)
        while st.older and st.older[0][0] <= horizon:
            st.older_vol -= st.older.popleft()[1]
        if ctx.pending(trade.symbol) != 0:  # an entry or exit is in flight
            return
        pos = ctx.position(trade.symbol)
        price = trade.price
        if pos > 0 and st.entry is not None:
            st.peak = max(st.peak, price)
            if (
                price <= st.entry * (1 - p.stop_loss_pct / 100)
                or price >= st.entry * (1 + p.take_profit_pct / 100)
                or price <= st.peak * (1 - p.trailing_pct / 100)
            ):
                ctx.submit_market(trade.symbol, SELL, pos)
                st.resume_us = ts + int(p.cooldown_s * 1e6)
            return
        if pos != 0 or ts < st.resume_us or not st.older:
            return
        baseline = st.older_vol / p.lookback_windows
        rise = price / st.recent[0][1] - 1
        if rise * 100 >= p.price_change_pct and st.recent_vol >= p.volume_mult * baseline > 0:
            ctx.submit_market(trade.symbol, BUY, p.qty)

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        st = self._state[fill.symbol]
        pos = ctx.position(fill.symbol)
        if fill.side == BUY:
            st.entry = ctx.order(fill.order_id).avg_price
            st.peak = max(st.peak, fill.price)
        if pos <= 0:
            st.entry = None
            st.peak = 0.0
