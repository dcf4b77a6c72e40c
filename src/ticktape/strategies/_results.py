"""A run's results: orders, fills, equity curve, summary and the results hash.

The hash is SHA-256 over a canonical serialisation of the orders, then the fills:
one JSON object per line, keys sorted, no spaces, floats in Python's shortest
round-trip form (``-0.0`` written as ``0.0``). The same run therefore has the same
hash wherever its orders and fills were stored and read back from.

Summary (all in the quote currency unless said):

- ``pnl`` = final equity - initial cash; ``return`` = pnl / initial cash;
- ``sharpe`` / ``sortino``: mean / standard deviation (downside deviation) of the
  returns between regular equity samples, annualised with 365 days of 24 h;
- ``max_drawdown``: the largest fall from a peak of equity, as a fraction of it;
- ``fees``, ``turnover`` (sum of fill notionals), ``trade_count`` (fills);
- ``win_rate``: share of position-reducing fills that realised a profit (average-cost
  accounting per symbol);
- ``max_position``: the largest absolute position of any symbol (base units);
- ``exposure_time``: share of the replayed time with any position open.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numba import njit

from ticktape.strategies._canonical import canonical_line
from ticktape.strategies._model import EquityPoint, Fill, Order
from ticktape.ticks import Float64Array, Int64Array

SECONDS_PER_YEAR = 365 * 24 * 3600.0


def results_hash(
    orders: Iterable[Mapping[str, object]], fills: Iterable[Mapping[str, object]]
) -> str:
    """SHA-256 over orders then fills, as dicts (``Order.to_dict`` / ``Fill.to_dict``,
    or rows read back from a store)."""
    return hash_lines(map(canonical_line, orders), map(canonical_line, fills))


def hash_lines(order_lines: Iterable[str], fill_lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for head, lines in ((b"orders\n", order_lines), (b"fills\n", fill_lines)):
        h.update(head)
        body = "\n".join(lines)  # one update per table: the same bytes as line by line
        if body:
            h.update(body.encode())
            h.update(b"\n")
    return h.hexdigest()


class ResultColumns(Protocol):
    """A run's orders, fills and equity points held as columns (the columnar engine):
    canonical lines and summary inputs are produced from arrays, and objects only when
    asked for."""

    def order_lines(self) -> list[str]: ...
    def fill_lines(self) -> list[str]: ...
    def equity_lines(self) -> list[str]: ...
    def orders(self) -> list[Order]: ...
    def fills(self) -> list[Fill]: ...
    def equity(self) -> list[EquityPoint]: ...
    def fill_arrays(self) -> FillArrays: ...
    def equity_arrays(self) -> tuple[Int64Array, Float64Array]: ...


@dataclass(frozen=True, slots=True)
class FillArrays:
    """Fills as columns, for the summary: symbol index, side (+1/-1), price, qty, fee, ts."""

    sym: Int64Array
    side: Int64Array
    price: Float64Array
    qty: Float64Array
    fee: Float64Array
    ts_us: Int64Array

    @staticmethod
    def of(fills: Sequence[Fill]) -> FillArrays:
        index: dict[str, int] = {}
        sym = [index.setdefault(f.symbol, len(index)) for f in fills]
        return FillArrays(
            np.array(sym, np.int64),
            np.array([f.side for f in fills], np.int64),
            np.array([f.price for f in fills], np.float64),
            np.array([f.qty for f in fills], np.float64),
            np.array([f.fee for f in fills], np.float64),
            np.array([f.ts_us for f in fills], np.int64),
        )


class RunResult:
    """What a run produced, up to where it ended.

    ``status`` is ``completed`` (the source was exhausted), ``stopped`` (asked to stop
    mid-replay: everything up to that point is kept) or ``strategy_error`` (the strategy
    raised or overran its time budget; ``error`` holds the traceback). ``orders``,
    ``fills`` and ``equity`` are lists of objects; a columnar run holds them as columns
    (``columns``) and builds the objects only when they are read.
    """

    def __init__(
        self,
        *,
        status: str,
        ticks: int,
        first_us: int | None,
        last_us: int | None,
        initial_cash: float,
        equity_interval_us: int,
        orders: list[Order] | None = None,
        fills: list[Fill] | None = None,
        equity: list[EquityPoint] | None = None,
        columns: ResultColumns | None = None,
        error: str = "",
    ) -> None:
        if columns is None and (orders is None or fills is None or equity is None):
            raise ValueError("a run result needs its orders, fills and equity, or columns")
        self.status = status
        self.ticks = ticks
        self.first_us = first_us
        self.last_us = last_us
        self.initial_cash = initial_cash
        self.equity_interval_us = equity_interval_us
        self.error = error
        self.columns = columns
        self._orders = orders
        self._fills = fills
        self._equity = equity
        self.summary: dict[str, float | int | None] = {}
        self.hash = ""

    @property
    def orders(self) -> list[Order]:
        if self._orders is None:
            assert self.columns is not None
            self._orders = self.columns.orders()
        return self._orders

    @property
    def fills(self) -> list[Fill]:
        if self._fills is None:
            assert self.columns is not None
            self._fills = self.columns.fills()
        return self._fills

    @property
    def equity(self) -> list[EquityPoint]:
        if self._equity is None:
            assert self.columns is not None
            self._equity = self.columns.equity()
        return self._equity

    def order_lines(self) -> list[str]:
        """The orders as canonical JSON lines (what is stored and hashed)."""
        if self.columns is not None:
            return self.columns.order_lines()
        return [o.canonical() for o in self.orders]

    def fill_lines(self) -> list[str]:
        if self.columns is not None:
            return self.columns.fill_lines()
        return [f.canonical() for f in self.fills]

    def equity_lines(self) -> list[str]:
        if self.columns is not None:
            return self.columns.equity_lines()
        return [canonical_line(p.to_dict()) for p in self.equity]

    def finish(self) -> RunResult:
        self.hash = hash_lines(self.order_lines(), self.fill_lines())
        if self.columns is not None:
            fills = self.columns.fill_arrays()
            eq_ts, eq_values = self.columns.equity_arrays()
        else:
            fills = FillArrays.of(self.fills)
            eq_ts = np.array([p.ts_us for p in self.equity], np.int64)
            eq_values = np.array([p.equity for p in self.equity], np.float64)
        self.summary = summarize_arrays(
            fills,
            eq_ts,
            eq_values,
            self.initial_cash,
            self.first_us,
            self.last_us,
            self.equity_interval_us,
        )
        return self


def summarize(
    fills: Sequence[Fill],
    equity: Sequence[EquityPoint],
    initial_cash: float,
    first_us: int | None,
    last_us: int | None,
    interval_us: int,
) -> dict[str, float | int | None]:
    return summarize_arrays(
        FillArrays.of(fills),
        np.array([p.ts_us for p in equity], np.int64),
        np.array([p.equity for p in equity], np.float64),
        initial_cash,
        first_us,
        last_us,
        interval_us,
    )


def summarize_arrays(
    fills: FillArrays,
    eq_ts: Int64Array,
    eq_values: Float64Array,
    initial_cash: float,
    first_us: int | None,
    last_us: int | None,
    interval_us: int,
) -> dict[str, float | int | None]:
    """The summary (module docstring) from columns; one compiled pass over each."""
    final = float(eq_values[-1]) if len(eq_values) else initial_cash
    pnl = final - initial_cash
    per_year = SECONDS_PER_YEAR / (interval_us / 1e6) if interval_us > 0 else 0.0
    n_rets, mean, sd, down, max_dd = _equity_stats(eq_ts, eq_values, interval_us)
    sharpe = sortino = None
    if n_rets >= 2:
        sharpe = mean / sd * math.sqrt(per_year) if sd > 0 else None
        sortino = mean / down * math.sqrt(per_year) if down > 0 else None
    n_sym = int(fills.sym.max()) + 1 if len(fills.sym) else 0
    wins, closes, max_pos, exposed_us = _trading_stats(
        fills.sym,
        fills.side,
        fills.price,
        fills.qty,
        fills.fee,
        fills.ts_us,
        n_sym,
        -1 if last_us is None else last_us,
    )
    span = (last_us - first_us) if first_us is not None and last_us is not None else 0
    return {
        "initial_cash": initial_cash,
        "final_equity": final,
        "pnl": pnl,
        "return": pnl / initial_cash if initial_cash else None,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": float(max_dd),
        "fees": math.fsum(fills.fee.tolist()),
        "turnover": math.fsum((fills.price * fills.qty).tolist()),
        "trade_count": len(fills.sym),
        "win_rate": int(wins) / int(closes) if closes else None,
        "max_position": float(max_pos),
        "exposure_time": int(exposed_us) / span if span > 0 else 0.0,
    }


@njit(cache=True)
def _equity_stats(ts, values, interval):  # type: ignore[no-untyped-def]
    """(number of returns, mean, sd, downside deviation, max drawdown) of the returns
    between regular samples (ts a multiple of the interval), summed in order."""
    n = 0
    total = 0.0
    prev = 0.0
    have = False
    rets = np.empty(values.shape[0], np.float64)
    for i in range(values.shape[0]):
        if interval > 0 and ts[i] % interval == 0:
            v = values[i]
            if have and prev != 0:
                r = v / prev - 1.0
                rets[n] = r
                total += r
                n += 1
            prev = v
            have = True
    mean = total / n if n > 0 else 0.0
    sq = 0.0
    dn = 0.0
    for k in range(n):
        sq += (rets[k] - mean) ** 2
        dn += min(rets[k], 0.0) ** 2
    sd = math.sqrt(sq / (n - 1)) if n >= 2 else 0.0
    down = math.sqrt(dn / n) if n >= 1 else 0.0
    peak = -math.inf
    max_dd = 0.0
    for i in range(values.shape[0]):
        peak = max(peak, values[i])
        if peak > 0:
            max_dd = max(max_dd, (peak - values[i]) / peak)
    return n, mean, sd, down, max_dd


@njit(cache=True)
def _trading_stats(sym, side, price, qty, fee, ts, n_sym, last_us):  # type: ignore[no-untyped-def]
    """(wins, closes, max position, exposed µs) with average-cost accounting per symbol."""
    pos = np.zeros(max(n_sym, 1))
    cost = np.zeros(max(n_sym, 1))  # average entry price of the open position
    wins = 0
    closes = 0
    max_pos = 0.0
    exposed_us = 0
    open_since = -1
    have_open = False
    n_open = 0  # symbols with a position
    for i in range(sym.shape[0]):
        s = sym[i]
        p = pos[s]
        q = qty[i]
        signed = side[i] * q
        if p != 0.0 and (p > 0) != (signed > 0):  # reduces (or flips) the position
            closed = min(abs(p), q)
            gain = (price[i] - cost[s]) * closed * (1 if p > 0 else -1) - fee[i]
            closes += 1
            if gain > 0:
                wins += 1
        new = p + signed
        if new == 0.0 or abs(new) < 1e-12 * max(abs(p), q):
            new = 0.0
            cost[s] = 0.0
        elif p == 0.0 or (p > 0) != (new > 0):
            cost[s] = price[i]
        elif (p > 0) == (signed > 0):
            cost[s] = (cost[s] * abs(p) + price[i] * q) / abs(new)
        pos[s] = new
        max_pos = max(max_pos, abs(new))
        if (p != 0.0) != (new != 0.0):
            n_open += 1 if new != 0.0 else -1
        if n_open > 0 and not have_open:
            open_since = ts[i]
            have_open = True
        elif n_open <= 0 and have_open:
            exposed_us += ts[i] - open_since
            have_open = False
    if have_open and last_us >= 0:
        exposed_us += last_us - open_since
    return wins, closes, max_pos, exposed_us
