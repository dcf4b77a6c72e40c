"""The values strategies and the fill simulator exchange: ticks, orders, fills, settings.

Times are exchange timestamps in microseconds since the Unix epoch (``ts_us``),
never wall-clock time: a backtest and the paper session it re-runs see the same
clock. Quantities are in the base asset, prices and cash in one quote currency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from ticktape.strategies._canonical import encode_str, value

BUY = 1
SELL = -1

MIN_ORDER_QTY = 1e-9  # target-position strategies leave differences below this alone
DEFAULT_LATENCY_MS = 20.0  # order entry and cancel latency, exchange time
DEFAULT_INITIAL_CASH = 100_000.0  # quote currency
DEFAULT_EQUITY_INTERVAL_S = 60.0  # the equity curve is sampled this often (and at every fill)

# Maker / taker fee rates (fractions of notional) per exchange, the base tier of each
# venue's perpetual futures. A session may override any of them ("fees").
DEFAULT_FEES: Mapping[str, tuple[float, float]] = {
    "sim": (0.0002, 0.0005),
    "binance": (0.0002, 0.0005),
    "mexc": (0.0, 0.0002),
}
FALLBACK_FEES = (0.0002, 0.0005)  # an exchange missing from the table


def _num(v: float | None) -> str:
    return "null" if v is None else value(float(v))


def _opt(v: int | None) -> str:
    return "null" if v is None else str(v)


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(StrEnum):
    """An order's lifecycle: ``submitted`` (latency not elapsed) → ``open`` (resting) →
    ``filled`` | ``cancelled``; a market order ends ``filled`` or ``expired`` (the
    recorded depth ran out: the rest is not filled); ``rejected`` never reached the book."""

    SUBMITTED = "submitted"
    OPEN = "open"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"


TERMINAL_ORDER_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
)


class TradeTick(NamedTuple):
    """One recorded trade. ``side`` is the aggressor: +1 buy, -1 sell.

    (A named tuple: one is made per replayed trade, and tuples are the cheapest.)"""

    symbol: str
    ts_us: int
    price: float
    qty: float
    side: int


class BookTick(NamedTuple):
    """One recorded order-book snapshot, best level first on each side (NaN-padded)."""

    symbol: str
    ts_us: int
    bid_prices: list[float]
    bid_qtys: list[float]
    ask_prices: list[float]
    ask_qtys: list[float]

    @property
    def best_bid(self) -> float:
        return self.bid_prices[0] if self.bid_prices else float("nan")

    @property
    def best_ask(self) -> float:
        return self.ask_prices[0] if self.ask_prices else float("nan")

    @property
    def mid(self) -> float:
        return (self.best_bid + self.best_ask) / 2.0


@dataclass(slots=True)
class Order:
    """An order and its lifecycle. ``ts_us`` of each step is exchange time."""

    order_id: int
    symbol: str
    side: int
    type: OrderType
    qty: float
    price: float | None  # limit price; None for market orders
    post_only: bool
    submitted_us: int
    status: OrderStatus = OrderStatus.SUBMITTED
    active_us: int | None = None  # reached the simulated exchange (submitted + latency)
    done_us: int | None = None  # reached a terminal status
    filled_qty: float = 0.0
    notional: float = 0.0  # sum of price x qty of its fills
    reason: str = ""  # why rejected / expired / cancelled
    cancel_requested_us: int | None = None

    @property
    def remaining(self) -> float:
        return self.qty - self.filled_qty

    @property
    def avg_price(self) -> float | None:
        return self.notional / self.filled_qty if self.filled_qty > 0 else None

    @property
    def is_done(self) -> bool:
        return self.status in TERMINAL_ORDER_STATUSES

    def canonical(self) -> str:
        """``canonical_line(self.to_dict())``, written directly (it is on the hot path)."""
        avg = self.avg_price
        return (
            f'{{"active_us":{_opt(self.active_us)},"avg_price":{_num(avg)},'
            f'"cancel_requested_us":{_opt(self.cancel_requested_us)},'
            f'"done_us":{_opt(self.done_us)},"filled_qty":{_num(self.filled_qty)},'
            f'"order_id":{self.order_id},"post_only":{"true" if self.post_only else "false"},'
            f'"price":{_num(self.price)},"qty":{_num(self.qty)},"reason":{encode_str(self.reason)},'
            f'"side":"{"buy" if self.side == BUY else "sell"}","status":"{self.status.value}",'
            f'"submitted_us":{self.submitted_us},"symbol":{encode_str(self.symbol)},'
            f'"type":"{self.type.value}"}}'
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "order_id": self.order_id,
            "symbol": self.symbol,
            "side": "buy" if self.side == BUY else "sell",
            "type": self.type.value,
            "qty": self.qty,
            "price": self.price,
            "post_only": self.post_only,
            "status": self.status.value,
            "submitted_us": self.submitted_us,
            "active_us": self.active_us,
            "cancel_requested_us": self.cancel_requested_us,
            "done_us": self.done_us,
            "filled_qty": self.filled_qty,
            "avg_price": self.avg_price,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Fill:
    fill_id: int
    order_id: int
    symbol: str
    side: int
    price: float
    qty: float
    fee: float
    liquidity: str  # "maker" | "taker"
    ts_us: int

    def canonical(self) -> str:
        """``canonical_line(self.to_dict())``, written directly (it is on the hot path)."""
        return (
            f'{{"fee":{_num(self.fee)},"fill_id":{self.fill_id},'
            f'"liquidity":{encode_str(self.liquidity)},"order_id":{self.order_id},'
            f'"price":{_num(self.price)},"qty":{_num(self.qty)},'
            f'"side":"{"buy" if self.side == BUY else "sell"}","symbol":{encode_str(self.symbol)},'
            f'"ts_us":{self.ts_us}}}'
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "fill_id": self.fill_id,
            "order_id": self.order_id,
            "symbol": self.symbol,
            "side": "buy" if self.side == BUY else "sell",
            "price": self.price,
            "qty": self.qty,
            "fee": self.fee,
            "liquidity": self.liquidity,
            "ts_us": self.ts_us,
        }


@dataclass(frozen=True, slots=True)
class EquityPoint:
    ts_us: int
    equity: float
    cash: float
    gross_exposure: float  # sum of |position| x mark over symbols

    def to_dict(self) -> dict[str, object]:
        return {
            "ts_us": self.ts_us,
            "equity": self.equity,
            "cash": self.cash,
            "gross_exposure": self.gross_exposure,
        }


@dataclass(frozen=True)
class SimConfig:
    """How the simulated exchange behaves (docs/fills.md).

    ``fees`` maps exchange → (maker, taker) rates and overrides :data:`DEFAULT_FEES`.
    """

    exchange: str = "sim"
    initial_cash: float = DEFAULT_INITIAL_CASH
    entry_latency_us: int = int(DEFAULT_LATENCY_MS * 1000)
    cancel_latency_us: int = int(DEFAULT_LATENCY_MS * 1000)
    fees: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    partial_passive_fills: bool = False
    equity_interval_us: int = int(DEFAULT_EQUITY_INTERVAL_S * 1_000_000)

    @property
    def maker_fee(self) -> float:
        return self._rates()[0]

    @property
    def taker_fee(self) -> float:
        return self._rates()[1]

    def _rates(self) -> tuple[float, float]:
        if self.exchange in self.fees:
            return self.fees[self.exchange]
        return DEFAULT_FEES.get(self.exchange, FALLBACK_FEES)
