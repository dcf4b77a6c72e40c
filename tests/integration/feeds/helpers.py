"""Run a feed in the background and look at what it yielded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ticktape.domain import DataType
from ticktape.feeds.contract import EventKind, FeedBooks, FeedEvent, FeedItem, FeedTrades, Gap
from ticktape.feeds.settings import StreamSettings

FAST = StreamSettings(
    stale_after_s=3.0,
    reconnect_base_s=0.01,
    reconnect_max_s=0.1,
    batch_rows=50,
    batch_interval_s=0.01,
)


class Recorder:
    """``async with Recorder(feed) as rec``: the feed runs until the block ends."""

    def __init__(self, feed: Any) -> None:
        self.feed = feed
        self.items: list[FeedItem] = []
        self.stop = asyncio.Event()
        self.error: BaseException | None = None
        self.ended = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 10.0)

    async def _run(self) -> None:
        try:
            async for item in self.feed.items(self.stop):
                self.items.append(item)
                async with self._changed:
                    self._changed.notify_all()
        except Exception as exc:
            self.error = exc
        finally:
            self.ended.set()
            async with self._changed:
                self._changed.notify_all()

    async def wait(self, predicate: Callable[[], bool], within_s: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checked after every item the feed yields."""
        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(lambda: predicate() or self.ended.is_set())
        if not predicate():
            raise AssertionError(f"feed ended early: {self.error!r}")

    async def keep_moving(
        self, move: Callable[[], Awaitable[object]], predicate: Callable[[], bool], tries: int = 50
    ) -> None:
        """A market that keeps moving: ``move()`` until ``predicate()`` holds.

        A book resyncs only once an update follows its snapshot, as on a live market.
        """
        for _ in range(tries):
            if predicate():
                return
            await move()
            with contextlib.suppress(TimeoutError):
                await self.wait(predicate, within_s=0.2)
        assert predicate()

    # ------------------------------------------------------------------ views

    def events(self, kind: EventKind) -> list[FeedEvent]:
        return [i for i in self.items if isinstance(i, FeedEvent) and i.kind is kind]

    def gaps(self, data_type: DataType | None = None) -> list[Gap]:
        out = [e.gap for e in self.events(EventKind.GAP) if e.gap is not None]
        return [g for g in out if data_type is None or g.data_type is data_type]

    def trades(self, symbol: str) -> list[tuple[int, int, float, float, int, int]]:
        """(ts_us, trade_id, price, qty, side, recv_us) rows, in the order yielded."""
        rows = []
        for i in self.items:
            if isinstance(i, FeedTrades) and i.batch.symbol == symbol:
                b = i.batch
                for k in range(len(b)):
                    rows.append(
                        (
                            int(b.ts_us[k]),
                            int(b.trade_id[k]),
                            float(b.price[k]),
                            float(b.qty[k]),
                            int(b.side[k]),
                            int(i.recv_us[k]),
                        )
                    )
        return rows

    def books(self, symbol: str) -> list[tuple[int, list[tuple[float, float]], list[Any]]]:
        """(ts_us, bids, asks) snapshots, levels with zero price (a thin book) left out."""
        out = []
        for i in self.items:
            if isinstance(i, FeedBooks) and i.batch.symbol == symbol:
                b = i.batch
                for k in range(len(b)):
                    bids = [
                        (float(p), float(q))
                        for p, q in zip(b.bid_price[k], b.bid_qty[k], strict=True)
                        if p > 0
                    ]
                    asks = [
                        (float(p), float(q))
                        for p, q in zip(b.ask_price[k], b.ask_qty[k], strict=True)
                        if p > 0
                    ]
                    out.append((int(b.ts_us[k]), bids, asks))
        return out

    def position(self, item_type: type, symbol: str) -> list[int]:
        """Indexes in ``items`` of the items of a type for a symbol."""
        return [
            n
            for n, i in enumerate(self.items)
            if isinstance(i, item_type)
            and getattr(i, "batch", None) is not None
            and i.batch.symbol == symbol
        ]
