"""The per-event engine: replayed ticks → strategy handlers → fill simulator.

For each tick, in replay order (:mod:`._replay`): order arrivals and cancels due
at or before its time are carried out; the equity curve is sampled if an interval
boundary was passed; the tick is applied to the simulated market (a trade may fill
resting orders, a snapshot becomes the current book); fills go to ``on_fill``; then
the tick's handler runs. Strategy exceptions end the run as ``strategy_error`` with
the traceback; results up to that tick are kept.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ticktape.strategies._canonical import canonical_line
from ticktape.strategies._contract import Strategy
from ticktape.strategies._errors import StrategyFailed, StrategyTimeout
from ticktape.strategies._model import BookTick, SimConfig, TradeTick
from ticktape.strategies._replay import KIND_TRADE, Chunk, MergedChunk, Pacer
from ticktape.strategies._replay import merged_chunks as _merged
from ticktape.strategies._results import (
    FillArrays,
    ResultStream,
    RunResult,
    Sink,
    ended_result,
)
from ticktape.strategies._simulator import FillSimulator

PROGRESS_EVERY_MASK = 1023  # at full speed: progress and the stop flag every 1024 ticks
FLUSH_ROWS = 20_000  # a streamed run hands its rows out once this many are waiting


class Run:
    """State every engine shares with its guard: progress and a stop flag."""

    def __init__(
        self,
        symbols: Sequence[str],
        config: SimConfig,
        depth: int | None,
        sink: Sink | None = None,
        flush_rows: int = FLUSH_ROWS,
    ) -> None:
        self.symbols = tuple(symbols)
        self.config = config
        # a streamed run: rows go to ``sink`` in batches as the run goes, not kept
        self.stream = (
            None
            if sink is None
            else ResultStream(sink, config.initial_cash, config.equity_interval_us, len(symbols))
        )
        self.flush_rows = flush_rows
        self.depth = depth  # book levels replayed; None: as deep as the data
        self.ticks = 0  # replayed so far: the guard's sign of progress
        self.waiting = True  # reading the source or pacing: not the strategy's time
        self.first_us: int | None = None
        self.last_us: int | None = None
        self.stop = threading.Event()

    def chunks(self, source: Iterable[Chunk]) -> Iterator[MergedChunk]:
        """Merged chunks; ``waiting`` is set while the source is read."""
        merged = _merged(source, self.symbols, self.depth)
        while True:
            self.waiting = True
            chunk = next(merged, None)
            self.waiting = False
            if chunk is None:
                return
            if self.first_us is None:
                self.first_us = int(chunk.ts_us[0])
            yield chunk


def sample_due(sim: FillSimulator, ts: int, interval: int) -> None:
    nxt = sim.next_sample_us
    if nxt is None:
        sim.sample(ts)
    elif ts >= nxt:
        sim.sample(nxt)
    else:
        return
    sim.next_sample_us = (ts // interval + 1) * interval


class EventEngine(Run):
    """Runs a per-event :class:`Strategy` over replayed chunks."""

    def __init__(
        self,
        strategy: Strategy,
        symbols: Sequence[str],
        config: SimConfig,
        *,
        depth: int | None = None,
        sink: Sink | None = None,
        flush_rows: int = FLUSH_ROWS,
    ) -> None:
        super().__init__(symbols, config, depth, sink, flush_rows)
        self.strategy = strategy
        self.sim = FillSimulator(symbols, config)
        self._counted = 0  # ticks of the current chunk already added to ``ticks``
        self._orders_out = 0  # orders handed out (a streamed run): a prefix of sim.orders

    def flush(self, final: bool) -> None:
        """Hand the rows that are final to the stream: ended orders up to the first one
        still open (every order, at the end), fills and equity points; fills and points
        are dropped. Orders stay in the simulator for ``ctx.order`` lookups."""
        stream = self.stream
        assert stream is not None
        sim = self.sim
        orders = sim.orders
        k = self._orders_out
        if final:
            k = len(orders)
        else:
            while k < len(orders) and orders[k].is_done:
                k += 1
        order_lines = [o.canonical() for o in orders[self._orders_out : k]]
        self._orders_out = k
        fills = list(sim.fills)
        del sim.fills[:]
        points = list(sim.equity_points)
        del sim.equity_points[:]
        waiting, self.waiting = self.waiting, True  # the sink's time is not the strategy's
        try:
            stream.add(
                order_lines,
                [f.canonical() for f in fills],
                FillArrays.of(fills, self.symbols),
                [canonical_line(p.to_dict()) for p in points],
                np.array([p.ts_us for p in points], np.int64),
                np.array([p.equity for p in points], np.float64),
            )
        finally:
            self.waiting = waiting

    def _waiting_rows(self) -> int:
        sim = self.sim
        return len(sim.fills) + len(sim.equity_points) + len(sim.orders) - self._orders_out

    def result(self, status: str, error: str = "") -> RunResult:
        sim = self.sim
        # the results (lines, hash, summary) are the engine's work, not the strategy's:
        # never under its per-call budget, however long a big run's take
        self.waiting = True
        if self.stream is not None:
            self.flush(final=True)
            return ended_result(self, status, error)
        return ended_result(
            self,
            status,
            error,
            orders=list(sim.orders),
            fills=list(sim.fills),
            equity=list(sim.equity_points),
        )

    def run(self, source: Iterable[Chunk], pacer: Pacer | None = None) -> RunResult:
        sim = self.sim
        try:
            self.waiting = False
            self._call("on_start", self.strategy.on_start, sim)
            completed = True
            for chunk in self.chunks(source):
                if not self._replay(chunk, pacer):
                    completed = False
                    break
                if self.stream is not None and self._waiting_rows() >= self.flush_rows:
                    self.flush(final=False)
            if self.last_us is not None:
                sim.set_time(self.last_us)
                sim.sample(self.last_us)
            self._call("on_stop", self.strategy.on_stop, sim)
        except StrategyFailed as exc:
            return self.result("strategy_error", str(exc))
        except StrategyTimeout:
            return self.result("strategy_error", _timeout_message(traceback.format_exc()))
        return self.result("completed" if completed else "stopped")

    def _call(self, what: str, fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except Exception as exc:
            raise StrategyFailed(f"{what} raised:\n{traceback.format_exc()}") from exc

    def _replay(self, m: MergedChunk, pacer: Pacer | None) -> bool:
        """Replay one chunk; False if stopped before its end.

        The hot loop: per tick it only touches local lists unless there is work
        (orders due, resting orders on the symbol, a sample due, a handler)."""
        sim = self.sim
        strategy = self.strategy
        cls = type(strategy)
        on_trade = strategy.on_trade if cls.on_trade is not Strategy.on_trade else None
        on_book = strategy.on_book if cls.on_book is not Strategy.on_book else None
        on_fill = strategy.on_fill if cls.on_fill is not Strategy.on_fill else None
        names = self.symbols
        interval = self.config.equity_interval_us
        stop = self.stop
        tp, tq, tside = m.trade_price.tolist(), m.trade_qty.tolist(), m.trade_side.tolist()
        bpx, bq = m.bid_price.tolist(), m.bid_qty.tolist()
        apx, aq = m.ask_price.tolist(), m.ask_qty.tolist()
        actions = sim.pending_actions
        new_fills = sim.new_fills
        mark, traded, resting, books = sim.mark, sim.traded, sim.resting, sim.books
        next_sample = -1 if sim.next_sample_us is None else sim.next_sample_us
        done = 0
        last = self.last_us
        try:
            for ts, s, kind, r in zip(
                m.ts_us.tolist(), m.sym.tolist(), m.kind.tolist(), m.row.tolist(), strict=True
            ):
                if pacer is not None:
                    self.waiting = True
                    if not pacer.wait(ts):
                        return False
                    self.waiting = False
                elif not done & PROGRESS_EVERY_MASK:
                    self.ticks += done - self._counted
                    self._counted = done
                    if stop.is_set():
                        return False
                sim._now = ts
                if actions and actions[0][0] <= ts:
                    sim.process_due(ts)
                if ts >= next_sample:
                    sample_due(sim, ts, interval)
                    next_sample = sim.next_sample_us  # type: ignore[assignment]
                if kind == KIND_TRADE:
                    price = tp[r]
                    mark[s] = price
                    traded[s] = True
                    if resting[s]:
                        sim.check_resting(s, ts, price, tq[r], tside[r])
                    if new_fills:
                        self._deliver(on_fill)
                    if on_trade is not None:
                        try:
                            on_trade(sim, TradeTick(names[s], ts, price, tq[r], tside[r]))
                        except Exception as exc:
                            raise StrategyFailed(
                                f"on_trade raised at {ts} us:\n{traceback.format_exc()}"
                            ) from exc
                else:
                    book = BookTick(names[s], ts, bpx[r], bq[r], apx[r], aq[r])
                    books[s] = book
                    if not traded[s]:
                        mark[s] = (bpx[r][0] + apx[r][0]) / 2.0
                    if new_fills:
                        self._deliver(on_fill)
                    if on_book is not None:
                        try:
                            on_book(sim, book)
                        except Exception as exc:
                            raise StrategyFailed(
                                f"on_book raised at {ts} us:\n{traceback.format_exc()}"
                            ) from exc
                done += 1
                last = ts
        finally:
            self.ticks += done - self._counted
            self._counted = 0
            self.last_us = last
        return True

    def _deliver(self, on_fill: object) -> None:
        fills = list(self.sim.new_fills)
        self.sim.new_fills.clear()
        if on_fill is None:
            return
        for fill in fills:
            self._call("on_fill", on_fill, self.sim, fill)


def _timeout_message(tb: str) -> str:
    return f"the strategy did not return within its time budget; it was interrupted at:\n{tb}"
