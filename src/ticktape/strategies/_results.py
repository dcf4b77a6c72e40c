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
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ticktape.strategies._canonical import canonical_line
from ticktape.strategies._model import EquityPoint, Fill, Order

SECONDS_PER_YEAR = 365 * 24 * 3600.0


def results_hash(
    orders: Iterable[Mapping[str, object]], fills: Iterable[Mapping[str, object]]
) -> str:
    """SHA-256 over orders then fills, as dicts (``Order.to_dict`` / ``Fill.to_dict``,
    or rows read back from a store)."""
    return hash_lines(map(canonical_line, orders), map(canonical_line, fills))


def hash_lines(order_lines: Iterable[str], fill_lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    h.update(b"orders\n")
    for line in order_lines:
        h.update(line.encode())
        h.update(b"\n")
    h.update(b"fills\n")
    for line in fill_lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class RunResult:
    """What a run produced, up to where it ended.

    ``status`` is ``completed`` (the source was exhausted), ``stopped`` (asked to stop
    mid-replay: everything up to that point is kept) or ``strategy_error`` (the strategy
    raised or overran its time budget; ``error`` holds the traceback).
    """

    status: str
    orders: list[Order]
    fills: list[Fill]
    equity: list[EquityPoint]
    ticks: int
    first_us: int | None
    last_us: int | None
    initial_cash: float
    equity_interval_us: int
    error: str = ""
    summary: dict[str, float | int | None] = field(default_factory=dict)
    hash: str = ""

    def finish(self) -> RunResult:
        self.hash = hash_lines(
            (o.canonical() for o in self.orders), (f.canonical() for f in self.fills)
        )
        self.summary = summarize(
            self.fills,
            self.equity,
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
    final = equity[-1].equity if equity else initial_cash
    pnl = final - initial_cash
    regular = [p.equity for p in equity if interval_us > 0 and p.ts_us % interval_us == 0]
    rets = [b / a - 1.0 for a, b in itertools.pairwise(regular) if a != 0]
    per_year = SECONDS_PER_YEAR / (interval_us / 1e6) if interval_us > 0 else 0.0
    sharpe = sortino = None
    if len(rets) >= 2:
        mean = sum(rets) / len(rets)
        sd = math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))
        down = math.sqrt(sum(min(r, 0.0) ** 2 for r in rets) / len(rets))
        sharpe = mean / sd * math.sqrt(per_year) if sd > 0 else None
        sortino = mean / down * math.sqrt(per_year) if down > 0 else None
    peak, max_dd = -math.inf, 0.0
    for p in equity:
        peak = max(peak, p.equity)
        if peak > 0:
            max_dd = max(max_dd, (peak - p.equity) / peak)
    wins, closes, max_pos, exposed_us = _trading_stats(fills, last_us)
    span = (last_us - first_us) if first_us is not None and last_us is not None else 0
    return {
        "initial_cash": initial_cash,
        "final_equity": final,
        "pnl": pnl,
        "return": pnl / initial_cash if initial_cash else None,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": max_dd,
        "fees": math.fsum(f.fee for f in fills),
        "turnover": math.fsum(f.price * f.qty for f in fills),
        "trade_count": len(fills),
        "win_rate": wins / closes if closes else None,
        "max_position": max_pos,
        "exposure_time": exposed_us / span if span > 0 else 0.0,
    }


def _trading_stats(fills: Sequence[Fill], last_us: int | None) -> tuple[int, int, float, int]:
    pos: dict[str, float] = {}
    cost: dict[str, float] = {}  # average entry price of the open position
    wins = closes = 0
    max_pos = 0.0
    exposed_us = 0
    open_since: int | None = None
    n_open = 0  # symbols with a position
    for f in fills:
        p = pos.get(f.symbol, 0.0)
        signed = f.side * f.qty
        if p != 0.0 and (p > 0) != (signed > 0):  # reduces (or flips) the position
            closed = min(abs(p), f.qty)
            gain = (f.price - cost[f.symbol]) * closed * (1 if p > 0 else -1) - f.fee
            closes += 1
            wins += gain > 0
        new = p + signed
        if new == 0.0 or abs(new) < 1e-12 * max(abs(p), f.qty):
            new = 0.0
            cost.pop(f.symbol, None)
        elif p == 0.0 or (p > 0) != (new > 0):
            cost[f.symbol] = f.price
        elif (p > 0) == (signed > 0):
            cost[f.symbol] = (cost[f.symbol] * abs(p) + f.price * f.qty) / abs(new)
        pos[f.symbol] = new
        max_pos = max(max_pos, abs(new))
        if (p != 0.0) != (new != 0.0):
            n_open += 1 if new != 0.0 else -1
        any_open = n_open > 0
        if any_open and open_since is None:
            open_since = f.ts_us
        elif not any_open and open_since is not None:
            exposed_us += f.ts_us - open_since
            open_since = None
    if open_since is not None and last_us is not None:
        exposed_us += last_us - open_since
    return wins, closes, max_pos, exposed_us
