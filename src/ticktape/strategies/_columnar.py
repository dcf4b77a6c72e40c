"""The columnar engine: target positions per tick through a compiled fill loop.

The loop is compiled with numba (``nopython``; compiled once per machine and cached
beside the module). It applies exactly the per-event engine's rules to market
orders — arrivals due at or before a tick are carried out before it, the book is
walked level by level, the equity curve is sampled at interval boundaries and at
every fill — so a strategy written in both forms gets identical orders and fills
(tests/unit/test_strategies_equivalence.py). Columnar strategies trade market
orders only: a target is reached by a market order for ``target - (position +
pending)``. Pacing (speed > 0) is per chunk: a chunk is released when its first
tick is due.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numba import njit

from ticktape.strategies._contract import ColumnarStrategy
from ticktape.strategies._engine import Run
from ticktape.strategies._errors import StrategyFailed, StrategyTimeout
from ticktape.strategies._model import (
    MIN_ORDER_QTY,
    EquityPoint,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    SimConfig,
)
from ticktape.strategies._replay import Chunk, MergedChunk, Pacer, pad_levels
from ticktape.strategies._results import RunResult
from ticktape.strategies._simulator import QTY_EPSILON, point_of

MAX_IN_FLIGHT = 1 << 16  # market orders submitted and not yet arrived, per run
OUT_CAPACITY = 1 << 16  # fills / orders / equity points buffered per loop call

_STATUS = {
    2: OrderStatus.FILLED,
    4: OrderStatus.EXPIRED,
    5: OrderStatus.REJECTED,
}
_REASON = {2: "", 4: "", 5: "no book yet"}


@njit(cache=True)
def _sample(st_f, st_pos, st_mark, ts, out_e, ne):  # type: ignore[no-untyped-def]
    cash = st_f[0]
    total = cash
    exposure = 0.0
    for k in range(st_pos.shape[0]):
        p = st_pos[k]
        if p != 0.0:
            total += p * st_mark[k]
    for k in range(st_pos.shape[0]):
        p = st_pos[k]
        if p != 0.0:
            exposure += abs(p) * st_mark[k]
    out_e[ne, 0] = float(ts)
    out_e[ne, 1] = total
    out_e[ne, 2] = cash
    out_e[ne, 3] = exposure
    return ne + 1


@njit(cache=True)
def _fill_loop(  # type: ignore[no-untyped-def]
    start,
    ts,
    sym,
    kind,
    row,
    tprice,
    bidp,
    bidq,
    askp,
    askq,
    targets,
    st_i,
    st_f,
    st_pos,
    st_mark,
    st_traded,
    st_hasbook,
    bk_bp,
    bk_bq,
    bk_ap,
    bk_aq,
    pq_i,
    pq_f,
    st_pend,
    st_nopen,
    out_f,
    out_fi,
    out_o,
    out_of,
    out_e,
    min_qty,
    qty_eps,
):
    """Replay ticks ``start..`` of a chunk; returns (next tick, fills, orders, points).

    st_i: [next order id, fill count, next sample (-1: none), head, tail, latency, interval]
    st_f: [cash, maker, taker]; pq_i: [order id, symbol, side, submitted, due] per order
    in flight (a ring); pq_f: its quantity. Returns early when the outputs run short;
    returns -1 as the tick if more than the ring's capacity are in flight.
    """
    n = ts.shape[0]
    depth = bidp.shape[1]
    cap = pq_i.shape[0]
    nf = 0
    no = 0
    ne = 0
    room = out_f.shape[0]
    latency = st_i[5]
    interval = st_i[6]
    for i in range(start, n):
        inflight = st_i[4] - st_i[3]
        if (
            nf + (inflight + 1) * depth + 2 > room
            or no + inflight + 1 > room
            or (ne + (inflight + 1) * depth + 2 > room)
        ):
            return i, nf, no, ne
        t = ts[i]
        # arrivals due at or before this tick
        while st_i[3] < st_i[4] and pq_i[st_i[3] % cap, 4] <= t:
            slot = st_i[3] % cap
            st_i[3] += 1
            oid = pq_i[slot, 0]
            s = pq_i[slot, 1]
            side = pq_i[slot, 2]
            due = pq_i[slot, 4]
            qty = pq_f[slot]
            filled = 0.0
            notional = 0.0
            status = 5
            if st_hasbook[s] != 0:
                for lv in range(depth):
                    if side == 1:
                        px = bk_ap[s, lv]
                        q = bk_aq[s, lv]
                    else:
                        px = bk_bp[s, lv]
                        q = bk_bq[s, lv]
                    if not q > 0 or px != px:
                        continue
                    take = min(qty - filled, q)
                    nt = px * take
                    fee = nt * st_f[2]
                    st_f[0] -= side * nt + fee
                    st_pos[s] += side * take
                    st_pend[s] -= side * take
                    filled += take
                    notional += nt
                    st_i[1] += 1
                    out_fi[nf, 0] = st_i[1]
                    out_fi[nf, 1] = oid
                    out_fi[nf, 2] = s
                    out_fi[nf, 3] = side
                    out_fi[nf, 4] = due
                    out_f[nf, 0] = px
                    out_f[nf, 1] = take
                    out_f[nf, 2] = fee
                    nf += 1
                    ne = _sample(st_f, st_pos, st_mark, due, out_e, ne)
                    if qty - filled <= qty * qty_eps:
                        break
                status = 2 if qty - filled <= qty * qty_eps else 4
            st_pend[s] -= side * (qty - filled)
            st_nopen[s] -= 1
            if st_nopen[s] == 0:
                st_pend[s] = 0.0
            out_o[no, 0] = oid
            out_o[no, 1] = s
            out_o[no, 2] = side
            out_o[no, 3] = pq_i[slot, 3]
            out_o[no, 4] = due
            out_o[no, 5] = status
            out_of[no, 0] = qty
            out_of[no, 1] = filled
            out_of[no, 2] = notional
            no += 1
        # the equity curve's interval boundaries
        nxt = st_i[2]
        if nxt < 0:
            ne = _sample(st_f, st_pos, st_mark, t, out_e, ne)
            st_i[2] = (t // interval + 1) * interval
        elif t >= nxt:
            ne = _sample(st_f, st_pos, st_mark, nxt, out_e, ne)
            st_i[2] = (t // interval + 1) * interval
        s = sym[i]
        r = row[i]
        if kind[i] == 0:
            st_mark[s] = tprice[r]
            st_traded[s] = 1
        else:
            for lv in range(depth):
                bk_bp[s, lv] = bidp[r, lv]
                bk_bq[s, lv] = bidq[r, lv]
                bk_ap[s, lv] = askp[r, lv]
                bk_aq[s, lv] = askq[r, lv]
            st_hasbook[s] = 1
            if st_traded[s] == 0:
                st_mark[s] = (bidp[r, 0] + askp[r, 0]) / 2.0
        target = targets[i]
        if target == target:
            delta = target - (st_pos[s] + st_pend[s])
            if abs(delta) > min_qty:
                if st_i[4] - st_i[3] >= cap:
                    return -1, nf, no, ne
                slot = st_i[4] % cap
                st_i[4] += 1
                pq_i[slot, 0] = st_i[0]
                st_i[0] += 1
                pq_i[slot, 1] = s
                pq_i[slot, 2] = 1 if delta > 0 else -1
                pq_i[slot, 3] = t
                pq_i[slot, 4] = t + latency
                pq_f[slot] = abs(delta)
                st_pend[s] += pq_i[slot, 2] * pq_f[slot]
                st_nopen[s] += 1
    return n, nf, no, ne


_compiled_loop: Any = _fill_loop  # numba's dispatcher is untyped for mypy


class ColumnarEngine(Run):
    """Runs a :class:`ColumnarStrategy` over replayed chunks."""

    def __init__(
        self,
        strategy: ColumnarStrategy,
        symbols: Sequence[str],
        config: SimConfig,
        *,
        depth: int | None = None,
    ) -> None:
        super().__init__(symbols, config, depth)
        if config.entry_latency_us < 0:
            raise ValueError("latency must be >= 0")
        self.strategy = strategy
        self.orders: list[Order] = []
        self.fills: list[Fill] = []
        self.equity: list[EquityPoint] = []
        n = len(self.symbols)
        self._st_i = np.array(
            [1, 0, -1, 0, 0, config.entry_latency_us, config.equity_interval_us], np.int64
        )
        self._st_f = np.array([config.initial_cash, config.maker_fee, config.taker_fee])
        self._pos = np.zeros(n)
        self._mark = np.full(n, math.nan)
        self._traded = np.zeros(n, np.int8)
        self._hasbook = np.zeros(n, np.int8)
        self._pq_i = np.zeros((MAX_IN_FLIGHT, 5), np.int64)
        self._pq_f = np.zeros(MAX_IN_FLIGHT)
        self._pend = np.zeros(n)  # signed quantity in flight per symbol
        self._nopen = np.zeros(n, np.int64)
        self._out: tuple[np.ndarray[Any, Any], ...] = (
            np.zeros((OUT_CAPACITY, 3)),
            np.zeros((OUT_CAPACITY, 5), np.int64),
            np.zeros((OUT_CAPACITY, 6), np.int64),
            np.zeros((OUT_CAPACITY, 3)),
            np.zeros((OUT_CAPACITY, 4)),
        )
        self._books: tuple[np.ndarray[Any, Any], ...] | None = None

    def result(self, status: str, error: str = "") -> RunResult:
        orders = sorted(self.orders + self._in_flight(), key=lambda o: o.order_id)
        return RunResult(
            status=status,
            orders=orders,
            fills=list(self.fills),
            equity=list(self.equity),
            ticks=self.ticks,
            first_us=self.first_us,
            last_us=self.last_us,
            initial_cash=self.config.initial_cash,
            equity_interval_us=self.config.equity_interval_us,
            error=error,
        ).finish()

    def run(self, source: Iterable[Chunk], pacer: Pacer | None = None) -> RunResult:
        try:
            self._call(self.strategy.start, self.symbols)
            completed = True
            for chunk in self.chunks(source):
                if pacer is not None:
                    self.waiting = True
                    if not pacer.wait(int(chunk.ts_us[0])):
                        completed = False
                        break
                elif self.stop.is_set():
                    completed = False
                    break
                targets = self._call(self.strategy.targets, chunk)
                self._replay(chunk, np.ascontiguousarray(targets, dtype=np.float64))
            if self.last_us is not None:
                self.equity.append(
                    point_of(
                        self.last_us, float(self._st_f[0]), self._pos.tolist(), self._mark.tolist()
                    )
                )
        except StrategyFailed as exc:
            return self.result("strategy_error", str(exc))
        except StrategyTimeout:
            return self.result(
                "strategy_error",
                "the strategy did not return within its time budget; it was interrupted at:\n"
                + traceback.format_exc(),
            )
        return self.result("completed" if completed else "stopped")

    def _call(self, fn: Any, *args: Any) -> Any:
        self.waiting = False
        try:
            return fn(*args)
        except Exception as exc:
            raise StrategyFailed(f"{fn.__name__} raised:\n{traceback.format_exc()}") from exc

    def _replay(self, m: MergedChunk, targets: np.ndarray[Any, Any]) -> None:
        if targets.shape != (len(m),):
            raise StrategyFailed(
                f"targets() returned shape {targets.shape}, expected ({len(m)},): "
                "one target per tick of the chunk"
            )
        n, d = len(self.symbols), m.depth
        if self._books is None:
            self._books = (
                np.full((n, d), np.nan),
                np.zeros((n, d)),
                np.full((n, d), np.nan),
                np.zeros((n, d)),
            )
        depth = max(d, self._books[0].shape[1])  # snapshots may differ in depth
        bp, bq, ap, aq = self._books
        self._books = (
            pad_levels(bp, depth, np.nan),
            pad_levels(bq, depth, 0.0),
            pad_levels(ap, depth, np.nan),
            pad_levels(aq, depth, 0.0),
        )
        bid_p, bid_q = pad_levels(m.bid_price, depth, np.nan), pad_levels(m.bid_qty, depth, 0.0)
        ask_p, ask_q = pad_levels(m.ask_price, depth, np.nan), pad_levels(m.ask_qty, depth, 0.0)
        self.waiting = True  # the loop is the engine's time (and compiles on first use)
        out_f, out_fi, out_o, out_of, out_e = self._out
        start = 0
        while start < len(m):
            reached, nf, no, ne = _compiled_loop(
                start,
                m.ts_us,
                m.sym,
                m.kind,
                m.row,
                m.trade_price,
                bid_p,
                bid_q,
                ask_p,
                ask_q,
                targets,
                self._st_i,
                self._st_f,
                self._pos,
                self._mark,
                self._traded,
                self._hasbook,
                *self._books,
                self._pq_i,
                self._pq_f,
                self._pend,
                self._nopen,
                out_f,
                out_fi,
                out_o,
                out_of,
                out_e,
                MIN_ORDER_QTY,
                QTY_EPSILON,
            )
            self._collect(nf, no, ne)
            if reached < 0:
                raise StrategyFailed(
                    f"more than {MAX_IN_FLIGHT} market orders in flight: the targets change "
                    "faster than orders arrive"
                )
            if reached > start:
                self.last_us = int(m.ts_us[reached - 1])
            self.ticks += reached - start
            start = reached
        self.waiting = False

    def _collect(self, nf: int, no: int, ne: int) -> None:
        out_f, out_fi, out_o, out_of, out_e = self._out
        names = self.symbols
        for (fid, oid, s, side, ts), (px, qty, fee) in zip(
            out_fi[:nf].tolist(), out_f[:nf].tolist(), strict=True
        ):
            self.fills.append(Fill(fid, oid, names[s], side, px, qty, fee, "taker", ts))
        for (oid, s, side, sub, due, code), (qty, filled, notional) in zip(
            out_o[:no].tolist(), out_of[:no].tolist(), strict=True
        ):
            status = _STATUS[code]
            reason = _REASON[code]
            if code == 4:
                reason = "book depth exhausted" if filled > 0 else "no liquidity"
            self.orders.append(
                Order(
                    oid,
                    names[s],
                    side,
                    OrderType.MARKET,
                    qty,
                    None,
                    False,
                    sub,
                    status,
                    active_us=due,
                    done_us=due,
                    filled_qty=filled,
                    notional=notional,
                    reason=reason,
                )
            )
        for ts, eq, cash, expo in out_e[:ne].tolist():
            self.equity.append(EquityPoint(int(ts), eq, cash, expo))

    def _in_flight(self) -> list[Order]:
        st = self._st_i
        cap = MAX_IN_FLIGHT
        out = []
        for j in range(int(st[3]), int(st[4])):
            oid, s, side, sub, _due = self._pq_i[j % cap].tolist()
            out.append(
                Order(
                    oid,
                    self.symbols[s],
                    side,
                    OrderType.MARKET,
                    float(self._pq_f[j % cap]),
                    None,
                    False,
                    sub,
                )
            )
        return out
