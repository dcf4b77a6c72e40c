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
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numba import njit

from ticktape.strategies._canonical import canonical_line
from ticktape.strategies._model import EquityPoint, Fill, Order, SimConfig
from ticktape.ticks import Float64Array, Int64Array

SECONDS_PER_YEAR = 365 * 24 * 3600.0


def results_hash(
    orders: Iterable[Mapping[str, object]], fills: Iterable[Mapping[str, object]]
) -> str:
    """The results hash of orders then fills, as dicts (``Order.to_dict`` /
    ``Fill.to_dict``, or rows read back from a store)."""
    return hash_lines(map(canonical_line, orders), map(canonical_line, fills))


def hash_lines(order_lines: Iterable[str], fill_lines: Iterable[str]) -> str:
    """SHA-256 of ``orders\n<hex>\nfills\n<hex>\n``, each ``<hex>`` the SHA-256 of
    that table's canonical lines, each followed by a newline: the two tables are hashed
    apart, so a run can hash its orders and fills as it streams them out."""
    orders, fills = TableHash(), TableHash()
    orders.add(list(order_lines))
    fills.add(list(fill_lines))
    return combine(orders, fills)


class TableHash:
    """SHA-256 of one table's canonical lines, each followed by a newline, fed in batches."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.count = 0

    def add(self, lines: Sequence[str]) -> None:
        if lines:
            self._h.update(("\n".join(lines) + "\n").encode())
            self.count += len(lines)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def combine(orders: TableHash, fills: TableHash) -> str:
    body = f"orders\n{orders.hexdigest()}\nfills\n{fills.hexdigest()}\n"
    return hashlib.sha256(body.encode()).hexdigest()


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
    def of(fills: Sequence[Fill], symbols: Sequence[str] = ()) -> FillArrays:
        """``symbols`` numbers the symbols (a run's order); others get the next numbers."""
        index: dict[str, int] = {name: i for i, name in enumerate(symbols)}
        sym = [index.setdefault(f.symbol, len(index)) for f in fills]
        return FillArrays(
            np.array(sym, np.int64),
            np.array([f.side for f in fills], np.int64),
            np.array([f.price for f in fills], np.float64),
            np.array([f.qty for f in fills], np.float64),
            np.array([f.fee for f in fills], np.float64),
            np.array([f.ts_us for f in fills], np.int64),
        )


@dataclass(frozen=True, slots=True)
class ResultBatch:
    """Rows of a run handed out while it runs (``run_backtest(sink=...)``), as canonical
    lines: orders that reached a final state, in id order and after every earlier
    order (the ones still open at the end come last, as they are then); fills; equity
    points. Concatenated, a run's batches are exactly its rows."""

    orders: list[str]
    fills: list[str]
    equity: list[str]


Sink = Callable[[ResultBatch], None]


class ResultStream:
    """The results hash and summary folded batch by batch; each batch goes on to ``sink``
    (None: nowhere, for a run that keeps its rows)."""

    def __init__(
        self, sink: Sink | None, initial_cash: float, interval_us: int, n_symbols: int = 0
    ) -> None:
        self.sink = sink
        self.orders = TableHash()
        self.fills = TableHash()
        self.equity = 0
        self.stats = SummaryStats(initial_cash, interval_us, n_symbols)

    def add(
        self,
        orders: list[str],
        fills: list[str],
        fill_arrays: FillArrays,
        equity: list[str],
        eq_ts: Int64Array,
        eq_values: Float64Array,
    ) -> None:
        self.orders.add(orders)
        self.fills.add(fills)
        self.equity += len(equity)
        self.stats.add_fills(fill_arrays)
        self.stats.add_equity(eq_ts, eq_values)
        if self.sink is not None and (orders or fills or equity):
            self.sink(ResultBatch(orders, fills, equity))

    def hash(self) -> str:
        return combine(self.orders, self.fills)


class RunResult:
    """What a run produced, up to where it ended.

    ``status`` is ``completed`` (the source was exhausted), ``stopped`` (asked to stop
    mid-replay: everything up to that point is kept) or ``strategy_error`` (the strategy
    raised or overran its time budget; ``error`` holds the traceback). ``orders``,
    ``fills`` and ``equity`` are lists of objects; a columnar run holds them as columns
    (``columns``) and builds the objects only when they are read. A streamed run
    (``stream``: its rows went to a sink as it ran) holds none of them: only their
    counts, the hash and the summary.
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
        stream: ResultStream | None = None,
        error: str = "",
    ) -> None:
        if (
            columns is None
            and stream is None
            and (orders is None or fills is None or equity is None)
        ):
            raise ValueError("a run result needs its orders, fills and equity, or columns")
        self.status = status
        self.ticks = ticks
        self.first_us = first_us
        self.last_us = last_us
        self.initial_cash = initial_cash
        self.equity_interval_us = equity_interval_us
        self.error = error
        self.columns = columns
        self.stream = stream
        self._orders = orders
        self._fills = fills
        self._equity = equity
        self._lines: dict[str, list[str]] = {}
        self.summary: dict[str, float | int | None] = {}
        self.hash = ""
        self.counts = (0, 0, 0)  # orders, fills, equity points
        self.finish_seconds = 0.0  # what finish() took (for the benchmarks)

    def _held(self) -> ResultColumns | None:
        if self.stream is not None:
            raise RuntimeError("a streamed run holds no rows: they went to its sink")
        return self.columns

    @property
    def orders(self) -> list[Order]:
        if self._orders is None:
            columns = self._held()
            assert columns is not None
            self._orders = columns.orders()
        return self._orders

    @property
    def fills(self) -> list[Fill]:
        if self._fills is None:
            columns = self._held()
            assert columns is not None
            self._fills = columns.fills()
        return self._fills

    @property
    def equity(self) -> list[EquityPoint]:
        if self._equity is None:
            columns = self._held()
            assert columns is not None
            self._equity = columns.equity()
        return self._equity

    def _cached(self, table: str, build: Callable[[], list[str]]) -> list[str]:
        if table not in self._lines:
            self._lines[table] = build()
        return self._lines[table]

    def order_lines(self) -> list[str]:
        """The orders as canonical JSON lines (what is stored and hashed)."""
        columns = self._held()
        if columns is not None:
            return self._cached("orders", columns.order_lines)
        return self._cached("orders", lambda: [o.canonical() for o in self.orders])

    def fill_lines(self) -> list[str]:
        columns = self._held()
        if columns is not None:
            return self._cached("fills", columns.fill_lines)
        return self._cached("fills", lambda: [f.canonical() for f in self.fills])

    def equity_lines(self) -> list[str]:
        columns = self._held()
        if columns is not None:
            return self._cached("equity", columns.equity_lines)
        return self._cached("equity", lambda: [canonical_line(p.to_dict()) for p in self.equity])

    def finish(self) -> RunResult:
        """Compute the hash, the summary and the counts (once the run has ended)."""
        started = time.perf_counter()
        stream = self.stream
        if stream is None:
            stream = ResultStream(None, self.initial_cash, self.equity_interval_us)
            if self.columns is not None:
                fills = self.columns.fill_arrays()
                eq_ts, eq_values = self.columns.equity_arrays()
            else:
                fills = FillArrays.of(self.fills)
                eq_ts = np.array([p.ts_us for p in self.equity], np.int64)
                eq_values = np.array([p.equity for p in self.equity], np.float64)
            stream.add(self.order_lines(), self.fill_lines(), fills, [], eq_ts, eq_values)
            stream.equity = len(eq_values)
        self.hash = stream.hash()
        self.summary = stream.stats.summary(self.first_us, self.last_us)
        self.counts = (stream.orders.count, stream.fills.count, stream.equity)
        self.finish_seconds = time.perf_counter() - started
        return self


class EndedRun(Protocol):
    """What an engine knows of its run when it ends (``_engine.Run``)."""

    @property
    def ticks(self) -> int: ...
    @property
    def first_us(self) -> int | None: ...
    @property
    def last_us(self) -> int | None: ...
    @property
    def config(self) -> SimConfig: ...
    @property
    def stream(self) -> ResultStream | None: ...


def ended_result(
    run: EndedRun,
    status: str,
    error: str,
    *,
    orders: list[Order] | None = None,
    fills: list[Fill] | None = None,
    equity: list[EquityPoint] | None = None,
    columns: ResultColumns | None = None,
) -> RunResult:
    """The finished result of ``run``: a streamed run's (its rows went to the sink,
    ``run.stream`` holds their counts, hash and summary), else the rows or columns given."""
    return RunResult(
        status=status,
        ticks=run.ticks,
        first_us=run.first_us,
        last_us=run.last_us,
        initial_cash=run.config.initial_cash,
        equity_interval_us=run.config.equity_interval_us,
        orders=orders,
        fills=fills,
        equity=equity,
        columns=columns,
        stream=run.stream,
        error=error,
    ).finish()


def summarize(
    fills: Sequence[Fill],
    equity: Sequence[EquityPoint],
    initial_cash: float,
    first_us: int | None,
    last_us: int | None,
    interval_us: int,
) -> dict[str, float | int | None]:
    stats = SummaryStats(initial_cash, interval_us)
    stats.add_fills(FillArrays.of(fills))
    stats.add_equity(
        np.array([p.ts_us for p in equity], np.int64),
        np.array([p.equity for p in equity], np.float64),
    )
    return stats.summary(first_us, last_us)


class SummaryStats:
    """The summary's figures, accumulated batch by batch in the rows' order.

    Every figure is a sequential fold over the fills or the equity points (the
    standard deviation by Welford's update), so the summary does not depend on how
    the rows were cut into batches: a streamed run and one given all its rows at once
    get the same numbers, bit for bit.
    """

    def __init__(self, initial_cash: float, interval_us: int, n_symbols: int = 0) -> None:
        self.initial_cash = initial_cash
        self.interval_us = interval_us
        self._pos = np.zeros(max(n_symbols, 1))
        self._cost = np.zeros(max(n_symbols, 1))  # average entry price of the open position
        # max position, fees, turnover
        self._fill_f = np.zeros(3)
        # wins, closes, exposed µs, open since, a position open, symbols open, fills
        self._fill_i = np.zeros(7, np.int64)
        # mean, M2, downside sum of squares, previous regular value, peak, max drawdown, last
        self._eq_f = np.array([0.0, 0.0, 0.0, 0.0, -math.inf, 0.0, initial_cash])
        # returns, a previous regular value, points
        self._eq_i = np.zeros(3, np.int64)

    def add_fills(self, fills: FillArrays) -> None:
        if not len(fills.sym):
            return
        need = int(fills.sym.max()) + 1
        if need > len(self._pos):
            self._pos = np.concatenate([self._pos, np.zeros(need - len(self._pos))])
            self._cost = np.concatenate([self._cost, np.zeros(need - len(self._cost))])
        _fills_step(
            fills.sym,
            fills.side,
            fills.price,
            fills.qty,
            fills.fee,
            fills.ts_us,
            self._pos,
            self._cost,
            self._fill_f,
            self._fill_i,
        )

    def add_equity(self, ts_us: Int64Array, values: Float64Array) -> None:
        if len(values):
            _equity_step(ts_us, values, self.interval_us, self._eq_f, self._eq_i)

    def summary(self, first_us: int | None, last_us: int | None) -> dict[str, float | int | None]:
        initial_cash = self.initial_cash
        interval_us = self.interval_us
        mean, m2, dn, _prev, _peak, max_dd, last = self._eq_f.tolist()
        n_rets, _have, n_points = self._eq_i.tolist()
        final = last if n_points else initial_cash
        pnl = final - initial_cash
        per_year = SECONDS_PER_YEAR / (interval_us / 1e6) if interval_us > 0 else 0.0
        sharpe = sortino = None
        if n_rets >= 2:
            sd = math.sqrt(m2 / (n_rets - 1))
            down = math.sqrt(dn / n_rets)
            sharpe = mean / sd * math.sqrt(per_year) if sd > 0 else None
            sortino = mean / down * math.sqrt(per_year) if down > 0 else None
        max_pos, fees, turnover = self._fill_f.tolist()
        wins, closes, exposed_us, open_since, have_open, _n_open, count = self._fill_i.tolist()
        if have_open and last_us is not None:
            exposed_us += last_us - open_since
        span = (last_us - first_us) if first_us is not None and last_us is not None else 0
        return {
            "initial_cash": initial_cash,
            "final_equity": final,
            "pnl": pnl,
            "return": pnl / initial_cash if initial_cash else None,
            "sharpe": sharpe,
            "sortino": sortino,
            "max_drawdown": max_dd,
            "fees": fees,
            "turnover": turnover,
            "trade_count": count,
            "win_rate": wins / closes if closes else None,
            "max_position": max_pos,
            "exposure_time": exposed_us / span if span > 0 else 0.0,
        }


@njit(cache=True)
def _equity_step(ts, values, interval, st_f, st_i):  # type: ignore[no-untyped-def]
    """Fold equity points into the state (SummaryStats): returns between regular samples
    (ts a multiple of the interval) by Welford's update, the downside sum of squares,
    the peak and the largest drawdown from it, the last value."""
    mean = st_f[0]
    m2 = st_f[1]
    dn = st_f[2]
    prev = st_f[3]
    peak = st_f[4]
    max_dd = st_f[5]
    n = st_i[0]
    have = st_i[1]
    for i in range(values.shape[0]):
        v = values[i]
        if interval > 0 and ts[i] % interval == 0:
            if have != 0 and prev != 0:
                r = v / prev - 1.0
                n += 1
                delta = r - mean
                mean += delta / n
                m2 += delta * (r - mean)
                low = min(r, 0.0)
                dn += low * low
            prev = v
            have = 1
        peak = max(peak, v)
        if peak > 0:
            max_dd = max(max_dd, (peak - v) / peak)
    st_f[0] = mean
    st_f[1] = m2
    st_f[2] = dn
    st_f[3] = prev
    st_f[4] = peak
    st_f[5] = max_dd
    st_f[6] = values[values.shape[0] - 1]
    st_i[0] = n
    st_i[1] = have
    st_i[2] += values.shape[0]


@njit(cache=True)
def _fills_step(sym, side, price, qty, fee, ts, pos, cost, st_f, st_i):  # type: ignore[no-untyped-def]
    """Fold fills into the state (SummaryStats): wins and closes with average-cost
    accounting per symbol, the largest position, time with any position open, fees
    and turnover summed in order."""
    max_pos = st_f[0]
    fees = st_f[1]
    turnover = st_f[2]
    wins = st_i[0]
    closes = st_i[1]
    exposed_us = st_i[2]
    open_since = st_i[3]
    have_open = st_i[4]
    n_open = st_i[5]
    for i in range(sym.shape[0]):
        s = sym[i]
        p = pos[s]
        q = qty[i]
        fees += fee[i]
        turnover += price[i] * q
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
        if n_open > 0 and have_open == 0:
            open_since = ts[i]
            have_open = 1
        elif n_open <= 0 and have_open != 0:
            exposed_us += ts[i] - open_since
            have_open = 0
    st_f[0] = max_pos
    st_f[1] = fees
    st_f[2] = turnover
    st_i[0] = wins
    st_i[1] = closes
    st_i[2] = exposed_us
    st_i[3] = open_since
    st_i[4] = have_open
    st_i[5] = n_open
    st_i[6] += sym.shape[0]
