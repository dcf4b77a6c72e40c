"""The fill simulator the per-event engine trades against (rules: docs/fills.md).

It is also the strategy's :class:`~ticktape.strategies.Context`. Our orders never
change the recorded book; time moves only with the replayed ticks.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ticktape.strategies._model import (
    BUY,
    SELL,
    BookTick,
    EquityPoint,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    SimConfig,
)

_ACTIVATE = 0
_CANCEL = 1
QTY_EPSILON = 1e-12  # relative: an order with less than this share left is filled


def equity_of(cash: float, pos: Sequence[float], mark: Sequence[float]) -> float:
    """Cash plus positions at their marks (the columnar fill loop sums the same way)."""
    total = cash
    for p, m in zip(pos, mark, strict=True):
        if p != 0.0:
            total += p * m
    return total


def point_of(ts_us: int, cash: float, pos: Sequence[float], mark: Sequence[float]) -> EquityPoint:
    exposure = 0.0
    for p, m in zip(pos, mark, strict=True):
        if p != 0.0:
            exposure += abs(p) * m
    return EquityPoint(ts_us, equity_of(cash, pos, mark), cash, exposure)


@dataclass(slots=True)
class _Resting:
    order: Order
    queue_ahead: float  # book quantity ahead of us at our price; inf if unknown
    executed: float = 0.0  # volume traded at our price after the queue was used up


class FillSimulator:
    """Accounts, books, orders and fills for one run over ``symbols``."""

    def __init__(self, symbols: Sequence[str], config: SimConfig) -> None:
        self._symbols = tuple(symbols)
        self._index = {s: i for i, s in enumerate(self._symbols)}
        self.config = config
        self._maker = config.maker_fee
        self._taker = config.taker_fee
        self._cash = config.initial_cash
        n = len(self._symbols)
        self.pos = [0.0] * n
        # signed remaining quantity of open orders, kept as the columnar loop keeps it
        self._pend = [0.0] * n
        self._n_open = [0] * n
        self.mark = [math.nan] * n  # last trade price; the mid before the first trade
        self.traded = [False] * n
        self.books: list[BookTick | None] = [None] * n
        self.orders: list[Order] = []
        self._open: dict[int, Order] = {}  # not done yet, in id order
        self.fills: list[Fill] = []  # a streamed run hands them out and empties it
        self.fill_count = 0
        self.new_fills: list[Fill] = []  # not yet given to the strategy's on_fill
        self.equity_points: list[EquityPoint] = []
        self.resting: list[list[_Resting]] = [[] for _ in range(n)]
        self.pending_actions: list[tuple[int, int, int, int]] = []  # (due, seq, action, id)
        self._seq = 0
        self._now = 0
        self.next_sample_us: int | None = None  # set by the first tick

    # -- the Context -------------------------------------------------------------------

    @property
    def now_us(self) -> int:
        return self._now

    @property
    def symbols(self) -> Sequence[str]:
        return self._symbols

    @property
    def cash(self) -> float:
        return self._cash

    def equity(self) -> float:
        return equity_of(self._cash, self.pos, self.mark)

    def position(self, symbol: str) -> float:
        return self.pos[self._sym(symbol)]

    def pending(self, symbol: str) -> float:
        return self._pend[self._sym(symbol)]

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self.orders_open() if symbol is None or o.symbol == symbol]

    def order(self, order_id: int) -> Order:
        if not 1 <= order_id <= len(self.orders):
            raise ValueError(f"no order {order_id}")
        return self.orders[order_id - 1]

    def orders_open(self) -> list[Order]:
        return list(self._open.values())

    def book(self, symbol: str) -> BookTick | None:
        return self.books[self._sym(symbol)]

    def last_price(self, symbol: str) -> float | None:
        m = self.mark[self._sym(symbol)]
        return None if math.isnan(m) else m

    def submit_market(self, symbol: str, side: int, qty: float) -> int:
        return self._submit(symbol, side, qty, OrderType.MARKET, None, False)

    def submit_limit(
        self, symbol: str, side: int, qty: float, price: float, *, post_only: bool = False
    ) -> int:
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"limit price must be a positive number, not {price!r}")
        return self._submit(symbol, side, qty, OrderType.LIMIT, float(price), post_only)

    def cancel(self, order_id: int) -> None:
        order = self.order(order_id)
        if order.is_done or order.cancel_requested_us is not None:
            return
        order.cancel_requested_us = self._now
        self._schedule(self._now + self.config.cancel_latency_us, _CANCEL, order_id)

    # -- driven by the engine ----------------------------------------------------------

    def set_time(self, ts_us: int) -> None:
        self._now = ts_us

    def process_due(self, ts_us: int) -> None:
        """Carry out every order arrival and cancel due at or before ``ts_us``."""
        actions = self.pending_actions
        while actions and actions[0][0] <= ts_us:
            due, _, action, order_id = heapq.heappop(actions)
            order = self.orders[order_id - 1]
            if action == _ACTIVATE:
                self._activate(order, due)
            elif not order.is_done:
                self._end(order, OrderStatus.CANCELLED, due, "cancelled")

    def check_resting(self, s: int, ts_us: int, price: float, qty: float, side: int) -> None:
        """A trade against this symbol's resting orders (the engine inlines the rest)."""
        for r in list(self.resting[s]):
            self._check_passive(r, ts_us, price, qty, side)

    def sample(self, ts_us: int) -> None:
        self.equity_points.append(point_of(ts_us, self._cash, self.pos, self.mark))

    # -- rules -------------------------------------------------------------------------

    def _sym(self, symbol: str) -> int:
        try:
            return self._index[symbol]
        except KeyError:
            raise ValueError(f"symbol {symbol!r} is not in this run {self._symbols}") from None

    def _submit(
        self, symbol: str, side: int, qty: float, type_: OrderType, price: float | None, po: bool
    ) -> int:
        s = self._sym(symbol)
        if side not in (BUY, SELL):
            raise ValueError(f"side must be BUY (+1) or SELL (-1), not {side!r}")
        if not (math.isfinite(qty) and qty > 0):
            raise ValueError(f"order quantity must be a positive number, not {qty!r}")
        order_id = len(self.orders) + 1
        order = Order(order_id, symbol, side, type_, float(qty), price, po, submitted_us=self._now)
        self.orders.append(order)
        self._open[order_id] = order
        self._pend[s] += side * float(qty)
        self._n_open[s] += 1
        self._schedule(self._now + self.config.entry_latency_us, _ACTIVATE, order_id)
        return order_id

    def _schedule(self, due: int, action: int, order_id: int) -> None:
        self._seq += 1
        heapq.heappush(self.pending_actions, (due, self._seq, action, order_id))

    def _activate(self, order: Order, ts_us: int) -> None:
        order.active_us = ts_us
        s = self._index[order.symbol]
        book = self.books[s]
        if order.type is OrderType.MARKET:
            if book is None:
                self._end(order, OrderStatus.REJECTED, ts_us, "no book yet")
                return
            self._take(order, book, ts_us, None)
            if not order.is_done:
                reason = "book depth exhausted" if order.filled_qty > 0 else "no liquidity"
                self._end(order, OrderStatus.EXPIRED, ts_us, reason)
            return
        assert order.price is not None
        crosses = book is not None and (
            (order.side == BUY and bool(book.ask_prices) and order.price >= book.best_ask)
            or (order.side == SELL and bool(book.bid_prices) and order.price <= book.best_bid)
        )
        if crosses and order.post_only:
            self._end(order, OrderStatus.REJECTED, ts_us, "post-only order would cross")
            return
        if crosses and book is not None:
            self._take(order, book, ts_us, order.price)
            if order.is_done:
                return
        order.status = OrderStatus.OPEN
        self.resting[s].append(_Resting(order, self._queue_ahead(order, book)))

    @staticmethod
    def _queue_ahead(order: Order, book: BookTick | None) -> float:
        if book is None:
            return math.inf
        prices, qtys = (
            (book.bid_prices, book.bid_qtys)
            if order.side == BUY
            else (book.ask_prices, book.ask_qtys)
        )
        levels = [(p, q) for p, q in zip(prices, qtys, strict=True) if q > 0 and p == p]
        for p, q in levels:
            if p == order.price:
                return q
        if not levels:
            return math.inf
        assert order.price is not None
        worst = levels[-1][0]
        beyond = order.price < worst if order.side == BUY else order.price > worst
        return math.inf if beyond else 0.0  # behind the recorded depth: queue unknown

    def _take(self, order: Order, book: BookTick, ts_us: int, limit: float | None) -> None:
        """Walk the opposite side of ``book`` level by level as a taker."""
        if order.side == BUY:
            prices, qtys = book.ask_prices, book.ask_qtys
        else:
            prices, qtys = book.bid_prices, book.bid_qtys
        for px, q in zip(prices, qtys, strict=True):
            if not q > 0 or px != px:
                continue
            if limit is not None and (px > limit if order.side == BUY else px < limit):
                break
            take = min(order.remaining, q)
            self._fill(order, px, take, ts_us, "taker")
            if order.is_done:
                return

    def _check_passive(self, r: _Resting, ts: int, price: float, qty: float, side: int) -> None:
        order = r.order
        assert order.price is not None
        limit = order.price
        if (order.side == BUY and price < limit) or (order.side == SELL and price > limit):
            self._fill(order, limit, order.remaining, ts, "maker")  # traded through us
        elif price == limit and side == -order.side:
            if r.queue_ahead > 0:
                used = min(r.queue_ahead, qty)
                r.queue_ahead -= used
                qty -= used
            if qty <= 0:
                return
            r.executed += qty
            if self.config.partial_passive_fills:
                self._fill(order, limit, min(order.remaining, qty), ts, "maker")
            elif r.executed >= order.remaining * (1 - QTY_EPSILON):
                self._fill(order, limit, order.remaining, ts, "maker")
        if order.is_done:
            self.resting[self._index[order.symbol]].remove(r)

    def _fill(self, order: Order, price: float, qty: float, ts_us: int, liquidity: str) -> None:
        rate = self._maker if liquidity == "maker" else self._taker
        notional = price * qty
        fee = notional * rate
        self._cash -= order.side * notional + fee
        s = self._index[order.symbol]
        self.pos[s] += order.side * qty
        self._pend[s] -= order.side * qty
        order.filled_qty += qty
        order.notional += notional
        self.fill_count += 1
        fill = Fill(
            self.fill_count,
            order.order_id,
            order.symbol,
            order.side,
            price,
            qty,
            fee,
            liquidity,
            ts_us,
        )
        self.fills.append(fill)
        self.new_fills.append(fill)
        if order.remaining <= order.qty * QTY_EPSILON:
            self._end(order, OrderStatus.FILLED, ts_us, "")
        self.sample(ts_us)

    def _end(self, order: Order, status: OrderStatus, ts_us: int, reason: str) -> None:
        order.status = status
        order.done_us = ts_us
        order.reason = reason
        self._open.pop(order.order_id, None)
        s = self._index[order.symbol]
        self._pend[s] -= order.side * order.remaining
        self._n_open[s] -= 1
        if self._n_open[s] == 0:
            self._pend[s] = 0.0  # no drift left behind once nothing is open
        if status is OrderStatus.CANCELLED:
            resting = self.resting[self._index[order.symbol]]
            resting[:] = [r for r in resting if r.order is not order]
