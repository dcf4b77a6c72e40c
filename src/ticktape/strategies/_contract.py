"""The strategy contract: what a strategy is given and what it may do.

Two forms trade against one fill simulator (docs/fills.md):

- :class:`Strategy` — per event. The engine calls ``on_start``, then ``on_trade`` /
  ``on_book`` for every replayed tick in exchange-time order, ``on_fill`` for each of
  its fills (before the handler of the tick that caused it), and ``on_stop``. The
  :class:`Context` reads time, positions, cash, open orders and books, and submits
  and cancels orders.
- :class:`ColumnarStrategy` — a function from a chunk of merged ticks (numpy columns,
  :class:`~ticktape.strategies.MergedChunk`) to a **target position** per tick (NaN:
  no change), run through a compiled fill loop that trades market orders towards
  the targets. For strategies that need no reaction to their own fills inside a chunk.

Strategies are registered classes, never code sent over the API; each declares its
parameters as a pydantic model (``params_model``), so bad parameters are refused
before a session starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from ticktape.strategies._model import BookTick, Fill, Order, TradeTick

if TYPE_CHECKING:
    from ticktape.strategies._replay import MergedChunk
    from ticktape.ticks import Float64Array


class StrategyParams(BaseModel):
    """Base of every strategy's parameter model: unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(StrategyParams):
    pass


class Context(Protocol):
    """What a per-event strategy sees and does. Times are exchange time (µs)."""

    @property
    def now_us(self) -> int: ...

    @property
    def symbols(self) -> Sequence[str]: ...

    @property
    def cash(self) -> float: ...

    def equity(self) -> float: ...

    def position(self, symbol: str) -> float:
        """Signed position in the base asset (negative: short)."""
        ...

    def pending(self, symbol: str) -> float:
        """Signed quantity of this symbol's orders not yet filled, cancelled or ended."""
        ...

    def open_orders(self, symbol: str | None = None) -> list[Order]: ...

    def order(self, order_id: int) -> Order:
        """One of this run's orders, as it stands now."""
        ...

    def book(self, symbol: str) -> BookTick | None:
        """The latest recorded snapshot at or before now, or None before the first."""
        ...

    def last_price(self, symbol: str) -> float | None: ...

    def submit_market(self, symbol: str, side: int, qty: float) -> int:
        """A market order (immediate or cancel against the recorded depth); its id."""
        ...

    def submit_limit(
        self, symbol: str, side: int, qty: float, price: float, *, post_only: bool = False
    ) -> int:
        """A resting limit order; ``post_only`` rejects it if it would cross on arrival."""
        ...

    def cancel(self, order_id: int) -> None:
        """Ask to cancel; it takes effect after the cancel latency (fills may come first)."""
        ...


class Strategy:
    """Base of per-event strategies. Override the handlers you need.

    ``rng`` is seeded from the run's seed: the only randomness a strategy may use."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params_model: ClassVar[type[StrategyParams]] = NoParams

    def __init__(self, params: StrategyParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(0)

    def on_start(self, ctx: Context) -> None:
        pass

    def on_trade(self, ctx: Context, trade: TradeTick) -> None:
        pass

    def on_book(self, ctx: Context, book: BookTick) -> None:
        pass

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        pass

    def on_stop(self, ctx: Context) -> None:
        pass


class ColumnarStrategy:
    """Base of columnar strategies: chunks of ticks in, target positions out.

    :meth:`targets` is called once per merged chunk, in order; state that must carry
    across chunks (rolling windows) lives on the instance. The returned array has
    one entry per tick of the chunk: the position wanted in that tick's symbol once
    the tick is seen, or NaN for no change. The fill loop then submits a market order
    for ``target - (position + pending)`` whenever that is not zero.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params_model: ClassVar[type[StrategyParams]] = NoParams

    def __init__(self, params: StrategyParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(0)  # seeded from the run's seed

    def start(self, symbols: Sequence[str]) -> None:
        pass

    def targets(self, chunk: MergedChunk) -> Float64Array:
        raise NotImplementedError
