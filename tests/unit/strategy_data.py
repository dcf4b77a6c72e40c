"""Tick data for the strategy tests: hand-written ticks and simulated sessions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ticktape.feeds.sim import SimExchange
from ticktape.strategies import BUY, Context, Strategy, StrategyParams, TradeTick
from ticktape.ticks import BookBatch, TickBatch, TradeBatch

T0 = 1_700_000_000_000_000  # µs
SYMBOLS = ("BTC_USDT", "ETH_USDT")


def trades(symbol: str, rows: Sequence[tuple[int, float, float, int]]) -> TradeBatch:
    """Trades from (ts offset µs, price, qty, aggressor side) rows."""
    return TradeBatch(
        session_id="t",
        symbol=symbol,
        ts_us=np.array([T0 + r[0] for r in rows], np.int64),
        trade_id=np.arange(1, len(rows) + 1, dtype=np.int64),
        price=np.array([r[1] for r in rows], np.float64),
        qty=np.array([r[2] for r in rows], np.float64),
        side=np.array([r[3] for r in rows], np.int8),
    )


Level = tuple[float, float]


def books(symbol: str, rows: Sequence[tuple[int, Sequence[Level], Sequence[Level]]]) -> BookBatch:
    """Snapshots from (ts offset µs, bids best first, asks best first) rows."""
    depth = max(max(len(b), len(a)) for _, b, a in rows)

    def side(levels: Sequence[Level], k: int) -> list[float]:
        return [
            levels[i][k] if i < len(levels) else (np.nan if k == 0 else 0.0) for i in range(depth)
        ]

    return BookBatch(
        session_id="t",
        symbol=symbol,
        ts_us=np.array([T0 + r[0] for r in rows], np.int64),
        bid_price=np.array([side(b, 0) for _, b, _ in rows]),
        bid_qty=np.array([side(b, 1) for _, b, _ in rows]),
        ask_price=np.array([side(a, 0) for _, _, a in rows]),
        ask_qty=np.array([side(a, 1) for _, _, a in rows]),
    )


def sim_blocks(
    n_blocks: int, *, symbols: Sequence[str] = SYMBOLS, seed: int = 7, rate_per_s: float = 2000.0
) -> list[list[TickBatch]]:
    ex = SimExchange("t", tuple(symbols), seed=seed, rate_per_s=rate_per_s, start_us=T0)
    return [ex.next_block() for _ in range(n_blocks)]


def rechunk(blocks: Sequence[Sequence[TickBatch]], window_us: int) -> Iterator[list[TickBatch]]:
    """The same ticks cut into consecutive windows of ``window_us`` exchange time."""
    flat = [b for block in blocks for b in block]
    lo = min(int(b.ts_us[0]) for b in flat)
    hi = max(int(b.ts_us[-1]) for b in flat)
    start = lo
    while start <= hi:
        end = start + window_us
        out: list[TickBatch] = []
        for b in flat:
            sel = (b.ts_us >= start) & (b.ts_us < end)
            if sel.any():
                out.append(_select(b, sel))
        yield out
        start = end


def _select(b: TickBatch, sel: np.ndarray) -> TickBatch:
    if isinstance(b, TradeBatch):
        return TradeBatch(
            b.session_id,
            b.symbol,
            b.ts_us[sel],
            b.trade_id[sel],
            b.price[sel],
            b.qty[sel],
            b.side[sel],
        )
    return BookBatch(
        b.session_id,
        b.symbol,
        b.ts_us[sel],
        b.bid_price[sel],
        b.bid_qty[sel],
        b.ask_price[sel],
        b.ask_qty[sel],
    )


class Scripted(Strategy):
    """Does what a test tells it at given tick times: ``script[(ts offset)] = fn(ctx)``."""

    name = "scripted"

    def __init__(self, script: dict[int, object], params: StrategyParams | None = None) -> None:
        super().__init__(params or StrategyParams())
        self.script = script
        self.fills: list[object] = []
        self.seen: list[tuple[str, int]] = []

    def _maybe(self, ctx: Context, ts_us: int) -> None:
        action = self.script.pop(ts_us - T0, None)
        if action is not None:
            action(ctx)  # type: ignore[operator]

    def on_trade(self, ctx: Context, trade: TradeTick) -> None:
        self.seen.append(("trade", trade.ts_us - T0))
        self._maybe(ctx, trade.ts_us)

    def on_book(self, ctx: Context, book: object) -> None:  # type: ignore[override]
        self.seen.append(("book", ctx.now_us - T0))
        self._maybe(ctx, ctx.now_us)

    def on_fill(self, ctx: Context, fill: object) -> None:  # type: ignore[override]
        self.fills.append(fill)


__all__ = ["BUY", "SYMBOLS", "T0", "Scripted", "books", "rechunk", "sim_blocks", "trades"]
