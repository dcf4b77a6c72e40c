"""``market_maker``: post-only quotes around the mid with an inventory limit.

On every book snapshot it keeps one bid ``half_spread_bps`` below the mid and one
ask above it (rounded away from the mid to ``tick_size``), each for ``qty``; a quote
is replaced when the mid has moved it more than ``requote_bps`` from where it
should be. The bid is withdrawn while the position is at or above
``max_inventory``, the ask while it is at or below ``-max_inventory``.
"""

from __future__ import annotations

import math
from typing import cast

from pydantic import Field

from ticktape.strategies._contract import Context, Strategy, StrategyParams
from ticktape.strategies._model import BUY, SELL, BookTick

QTY_SLACK = 1e-9  # rounding room in the inventory check


class MarketMakerParams(StrategyParams):
    half_spread_bps: float = Field(5.0, gt=0, description="quote distance from the mid, bps")
    qty: float = Field(0.1, gt=0, description="size of each quote, base units")
    max_inventory: float = Field(1.0, gt=0, description="no more buying (selling) beyond this")
    requote_bps: float = Field(2.0, ge=0, description="replace a quote this far off, bps")
    tick_size: float = Field(0.01, gt=0, description="price grid of the symbol")


class MarketMaker(Strategy):
    name = "market_maker"
    description = "Post-only quotes around the mid with an inventory limit."
    params_model = MarketMakerParams

    def __init__(self, params: StrategyParams) -> None:
        super().__init__(params)
        self.p = cast(MarketMakerParams, params)
        self._quotes: dict[tuple[str, int], int] = {}  # (symbol, side) -> order id

    def on_book(self, ctx: Context, book: BookTick) -> None:
        mid = book.mid
        if not math.isfinite(mid):
            return
        p = self.p
        sym = book.symbol
        pos = ctx.position(sym)
        off = mid * p.half_spread_bps / 1e4
        bid = math.floor((mid - off) / p.tick_size) * p.tick_size
        ask = math.ceil((mid + off) / p.tick_size) * p.tick_size
        self._quote(ctx, sym, BUY, bid, p.max_inventory - pos, mid)
        self._quote(ctx, sym, SELL, ask, p.max_inventory + pos, mid)

    def _quote(
        self, ctx: Context, symbol: str, side: int, price: float, room: float, mid: float
    ) -> None:
        """Keep one quote on ``side`` at ``price``; ``room`` is what the side may still add
        to the position. Orders whose cancel is in flight can still fill, so they count."""
        p = self.p
        key = (symbol, side)
        in_flight = sum(o.remaining for o in ctx.open_orders(symbol) if o.side == side)
        order_id = self._quotes.get(key)
        if order_id is not None:
            order = ctx.order(order_id)
            if order.is_done or order.cancel_requested_us is not None:
                del self._quotes[key]
            else:
                stale = order.price is None or abs(order.price - price) / mid * 1e4 > p.requote_bps
                if not stale and in_flight <= room + QTY_SLACK:
                    return
                ctx.cancel(order_id)
                del self._quotes[key]
        if in_flight + p.qty <= room + QTY_SLACK:
            self._quotes[key] = ctx.submit_limit(symbol, side, p.qty, price, post_only=True)
