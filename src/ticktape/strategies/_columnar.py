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

from ticktape.strategies._canonical import canonical_floats, canonical_ints, encode_str
from ticktape.strategies._contract import ColumnarStrategy
from ticktape.strategies._engine import FLUSH_ROWS, Run
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
from ticktape.strategies._results import FillArrays, RunResult, Sink, ended_result
from ticktape.strategies._simulator import QTY_EPSILON, point_of
from ticktape.ticks import Float64Array, Int64Array

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
        sink: Sink | None = None,
        flush_rows: int = FLUSH_ROWS,
    ) -> None:
        super().__init__(symbols, config, depth, sink, flush_rows)
        if config.entry_latency_us < 0:
            raise ValueError("latency must be >= 0")
        self.strategy = strategy
        # output rows of the loop, kept as arrays (see ColumnarResults)
        self._parts_f: list[np.ndarray[Any, Any]] = []
        self._parts_fi: list[np.ndarray[Any, Any]] = []
        self._parts_o: list[np.ndarray[Any, Any]] = []
        self._parts_of: list[np.ndarray[Any, Any]] = []
        self._parts_e: list[np.ndarray[Any, Any]] = []
        self._waiting = 0  # rows in the parts
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

    def _columns(self, final: bool) -> ColumnarResults:
        # orders arrive in submission order (one latency for all): every arrived order
        # has a lower id than every order still in flight, so this is id order
        none = (np.zeros((0, 5), np.int64), np.zeros(0))
        return ColumnarResults(
            self.symbols,
            (_stack(self._parts_f, 3, np.float64), _stack(self._parts_fi, 5, np.int64)),
            (_stack(self._parts_o, 6, np.int64), _stack(self._parts_of, 3, np.float64)),
            self._in_flight() if final else none,
            _stack(self._parts_e, 4, np.float64),
        )

    def flush(self, final: bool) -> None:
        """Hand the rows so far to the stream and drop them (a streamed run); ``final``
        adds the orders still in flight."""
        stream = self.stream
        assert stream is not None
        columns = self._columns(final)
        for parts in (self._parts_f, self._parts_fi, self._parts_o, self._parts_of):
            parts.clear()
        self._parts_e.clear()
        self._waiting = 0
        eq_ts, eq_values = columns.equity_arrays()
        waiting, self.waiting = self.waiting, True  # the sink's time is not the strategy's
        try:
            stream.add(
                columns.order_lines(),
                columns.fill_lines(),
                columns.fill_arrays(),
                columns.equity_lines(),
                eq_ts,
                eq_values,
            )
        finally:
            self.waiting = waiting

    def result(self, status: str, error: str = "") -> RunResult:
        # the results (lines, hash, summary) are the engine's work, not the strategy's:
        # never under its per-call budget, however long a big run's take
        self.waiting = True
        if self.stream is not None:
            self.flush(final=True)
            return ended_result(self, status, error)
        return ended_result(self, status, error, columns=self._columns(final=True))

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
                if self.stream is not None and self._waiting >= self.flush_rows:
                    self.flush(final=False)
            if self.last_us is not None:
                last = point_of(
                    self.last_us, float(self._st_f[0]), self._pos.tolist(), self._mark.tolist()
                )
                self._parts_e.append(
                    np.array([[last.ts_us, last.equity, last.cash, last.gross_exposure]])
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
        self._waiting += nf + no + ne
        if nf:
            self._parts_f.append(out_f[:nf].copy())
            self._parts_fi.append(out_fi[:nf].copy())
        if no:
            self._parts_o.append(out_o[:no].copy())
            self._parts_of.append(out_of[:no].copy())
        if ne:
            self._parts_e.append(out_e[:ne].copy())

    def _in_flight(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Market orders submitted and not arrived: (rows of pq_i, their quantities)."""
        st = self._st_i
        slots = np.arange(int(st[3]), int(st[4])) % MAX_IN_FLIGHT
        return self._pq_i[slots], self._pq_f[slots]


def _stack(parts: list[np.ndarray[Any, Any]], width: int, dtype: Any) -> np.ndarray[Any, Any]:
    if not parts:
        return np.zeros((0, width), dtype)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


_FILL_LINE = (
    '{{"fee":{},"fill_id":{},"liquidity":"taker","order_id":{},"price":{},"qty":{},'
    '"side":"{}","symbol":{},"ts_us":{}}}'
)
_ORDER_LINE = (
    '{{"active_us":{},"avg_price":{},"cancel_requested_us":null,"done_us":{},'
    '"filled_qty":{},"order_id":{},"post_only":false,"price":null,"qty":{},"reason":{},'
    '"side":"{}","status":"{}","submitted_us":{},"symbol":{},"type":"market"}}'
)
_SIDE = {1: "buy", -1: "sell"}


class ColumnarResults:
    """A columnar run's orders, fills and equity points as arrays (``ResultColumns``).

    Canonical lines are built column by column (one ``repr`` per float, one format per
    row) — the same bytes as ``Order.canonical`` / ``Fill.canonical`` — and the objects
    only when asked for.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        fills: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
        orders: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
        in_flight: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
        equity: np.ndarray[Any, Any],
    ) -> None:
        self.symbols = tuple(symbols)
        self.f, self.fi = fills
        self.o, self.of = orders
        self.pending_i, self.pending_q = in_flight
        self.e = equity

    def fill_arrays(self) -> FillArrays:
        fi, f = self.fi, self.f
        return FillArrays(
            np.ascontiguousarray(fi[:, 2]),
            np.ascontiguousarray(fi[:, 3]),
            np.ascontiguousarray(f[:, 0]),
            np.ascontiguousarray(f[:, 1]),
            np.ascontiguousarray(f[:, 2]),
            np.ascontiguousarray(fi[:, 4]),
        )

    def equity_arrays(self) -> tuple[Int64Array, Float64Array]:
        return self.e[:, 0].astype(np.int64), np.ascontiguousarray(self.e[:, 1])

    def _names(self, sym: np.ndarray[Any, Any]) -> list[str]:
        encoded = [encode_str(s) for s in self.symbols]
        return [encoded[s] for s in sym.tolist()]

    def fill_lines(self) -> list[str]:
        fi, f = self.fi, self.f
        return list(
            map(
                _FILL_LINE.format,
                canonical_floats(f[:, 2]),
                canonical_ints(fi[:, 0]),
                canonical_ints(fi[:, 1]),
                canonical_floats(f[:, 0]),
                canonical_floats(f[:, 1]),
                [_SIDE[v] for v in fi[:, 3].tolist()],
                self._names(fi[:, 2]),
                canonical_ints(fi[:, 4]),
            )
        )

    def order_lines(self) -> list[str]:
        o, of = self.o, self.of
        filled = of[:, 1]
        avg = [
            "null" if q <= 0 else a
            for q, a in zip(
                filled.tolist(),
                canonical_floats(
                    np.divide(of[:, 2], filled, out=np.zeros(len(filled)), where=filled > 0)
                ),
                strict=True,
            )
        ]
        reasons = [
            encode_str(_reason(code, q))
            for code, q in zip(o[:, 5].tolist(), filled.tolist(), strict=True)
        ]
        done = list(
            map(
                _ORDER_LINE.format,
                canonical_ints(o[:, 4]),
                avg,
                canonical_ints(o[:, 4]),
                canonical_floats(filled),
                canonical_ints(o[:, 0]),
                canonical_floats(of[:, 0]),
                reasons,
                [_SIDE[v] for v in o[:, 2].tolist()],
                [_STATUS[c].value for c in o[:, 5].tolist()],
                canonical_ints(o[:, 3]),
                self._names(o[:, 1]),
            )
        )
        # still in flight at the end: submitted, later ids than every arrived order
        return done + [order.canonical() for order in self._pending()]

    def equity_lines(self) -> list[str]:
        e = self.e
        return list(
            map(
                '{{"cash":{},"equity":{},"gross_exposure":{},"ts_us":{}}}'.format,
                canonical_floats(e[:, 2]),
                canonical_floats(e[:, 1]),
                canonical_floats(e[:, 3]),
                canonical_ints(e[:, 0].astype(np.int64)),
            )
        )

    def fills(self) -> list[Fill]:
        names = self.symbols
        return [
            Fill(fid, oid, names[s], side, px, qty, fee, "taker", ts)
            for (fid, oid, s, side, ts), (px, qty, fee) in zip(
                self.fi.tolist(), self.f.tolist(), strict=True
            )
        ]

    def orders(self) -> list[Order]:
        names = self.symbols
        done = [
            Order(
                oid,
                names[s],
                side,
                OrderType.MARKET,
                qty,
                None,
                False,
                sub,
                _STATUS[code],
                active_us=due,
                done_us=due,
                filled_qty=filled,
                notional=notional,
                reason=_reason(code, filled),
            )
            for (oid, s, side, sub, due, code), (qty, filled, notional) in zip(
                self.o.tolist(), self.of.tolist(), strict=True
            )
        ]
        return done + self._pending()

    def _pending(self) -> list[Order]:
        return [
            Order(oid, self.symbols[s], side, OrderType.MARKET, qty, None, False, sub)
            for (oid, s, side, sub, _due), qty in zip(
                self.pending_i.tolist(), self.pending_q.tolist(), strict=True
            )
        ]

    def equity(self) -> list[EquityPoint]:
        return [EquityPoint(int(ts), eq, cash, expo) for ts, eq, cash, expo in self.e.tolist()]


def _reason(code: int, filled: float) -> str:
    if code == 4:
        return "book depth exhausted" if filled > 0 else "no liquidity"
    return _REASON[code]
