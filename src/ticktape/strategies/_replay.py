"""Replay: ticks of several symbols merged in exchange-time order, chunk by chunk.

A replay reads an iterator of **chunks**. A chunk is a list of tick batches (trades
and book snapshots of any of the chosen symbols) covering one stretch of exchange
time; chunks are consecutive — no tick of a chunk is earlier than a tick of the
chunk before it — so a store reader can stream a session of any length in bounded
pieces and only one chunk is ever merged in memory.

Within a chunk, ticks are ordered by exchange time; ties are broken by the symbol's
position in the replay's symbol list, then trades before book snapshots (a recorded
snapshot that shares its trade's timestamp was taken after that trade), then the
order in which they were recorded. The order is therefore a pure function of the
data, whatever the chunk boundaries.

Pacing: speed 0 delivers as fast as the consumer goes; speed N delivers each tick
at ``start + (ts - first_ts) / N`` of wall-clock time (:class:`Pacer`).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ticktape.errors import ValidationError
from ticktape.ticks import BookBatch, Float64Array, Int64Array, TickBatch, TradeBatch

SHORT_WAIT_S = 0.002  # pacing waits shorter than this sleep instead of waiting on the stop flag
KIND_TRADE = 0
KIND_BOOK = 1

Chunk = Sequence[TickBatch]


@dataclass(frozen=True, slots=True)
class MergedChunk:
    """One chunk's ticks in replay order, as columns.

    Event ``i`` is at ``ts_us[i]`` for symbol ``symbols[sym[i]]``; ``kind[i]`` says
    whether it is a trade (``row[i]`` indexes the ``trade_*`` columns) or a book
    snapshot (``row[i]`` indexes the ``book_*`` rows, shape ``(n_books, depth)``).
    """

    ts_us: Int64Array
    sym: Int64Array
    kind: Int64Array
    row: Int64Array
    trade_price: Float64Array
    trade_qty: Float64Array
    trade_side: Int64Array
    bid_price: Float64Array
    bid_qty: Float64Array
    ask_price: Float64Array
    ask_qty: Float64Array

    def __len__(self) -> int:
        return int(self.ts_us.shape[0])

    @property
    def depth(self) -> int:
        return int(self.bid_price.shape[1])


def _empty_f(depth: int) -> Float64Array:
    return np.empty((0, depth), dtype=np.float64)


def merge_chunk(chunk: Chunk, symbols: Sequence[str], depth: int) -> MergedChunk:
    """Merge one chunk's batches into replay order (module docstring).

    Batches of symbols not in ``symbols`` are left out. Book snapshots with fewer
    levels than ``depth`` are padded with NaN prices and zero quantities.
    """
    index = {s: i for i, s in enumerate(symbols)}
    trades = [b for b in chunk if isinstance(b, TradeBatch) and b.symbol in index and len(b)]
    books = [b for b in chunk if isinstance(b, BookBatch) and b.symbol in index and len(b)]
    n_t = sum(len(b) for b in trades)
    n_b = sum(len(b) for b in books)
    t_ts = np.concatenate([b.ts_us for b in trades]) if trades else np.empty(0, np.int64)
    t_sym = _cat([np.full(len(b), index[b.symbol], np.int64) for b in trades], np.int64)
    b_ts = np.concatenate([b.ts_us for b in books]) if books else np.empty(0, np.int64)
    b_sym = _cat([np.full(len(b), index[b.symbol], np.int64) for b in books], np.int64)
    ts = np.concatenate([t_ts, b_ts]).astype(np.int64, copy=False)
    sym = np.concatenate([t_sym, b_sym]).astype(np.int64, copy=False)
    kind = np.concatenate([np.zeros(n_t, np.int64), np.ones(n_b, np.int64)])
    row = np.concatenate([np.arange(n_t, dtype=np.int64), np.arange(n_b, dtype=np.int64)])
    order = np.lexsort((kind, sym, ts))  # stable: ties keep the recorded order
    return MergedChunk(
        ts_us=ts[order],
        sym=sym[order],
        kind=kind[order],
        row=row[order],
        trade_price=_cat([b.price for b in trades]),
        trade_qty=_cat([b.qty for b in trades]),
        trade_side=_cat([b.side for b in trades], np.int64),
        bid_price=_levels([b.bid_price for b in books], depth, np.nan),
        bid_qty=_levels([b.bid_qty for b in books], depth, 0.0),
        ask_price=_levels([b.ask_price for b in books], depth, np.nan),
        ask_qty=_levels([b.ask_qty for b in books], depth, 0.0),
    )


def _cat(parts: list[np.ndarray], dtype: type = np.float64) -> np.ndarray:
    if not parts:
        return np.empty(0, dtype)
    return np.ascontiguousarray(np.concatenate(parts), dtype=dtype)


def _levels(parts: list[np.ndarray], depth: int, pad: float) -> Float64Array:
    if not parts:
        return _empty_f(depth)
    out = []
    for p in parts:
        p = np.asarray(p, dtype=np.float64).reshape(len(p), -1)
        if p.shape[1] < depth:
            p = np.hstack([p, np.full((p.shape[0], depth - p.shape[1]), pad)])
        out.append(p[:, :depth])
    return np.ascontiguousarray(np.vstack(out))


def book_depth(chunk: Chunk, default: int = 1) -> int:
    """The deepest book snapshot in a chunk."""
    depths = [b.depth for b in chunk if isinstance(b, BookBatch) and len(b)]
    return max(depths, default=default)


def merged_chunks(
    chunks: Iterable[Chunk], symbols: Sequence[str], depth: int | None = None
) -> Iterator[MergedChunk]:
    """Merge every chunk, checking that chunks are consecutive in exchange time.

    With ``depth`` None each chunk keeps the depth of its deepest snapshot.
    """
    last_ts: int | None = None
    for chunk in chunks:
        merged = merge_chunk(chunk, symbols, depth if depth is not None else book_depth(chunk))
        if not len(merged):
            continue
        first = int(merged.ts_us[0])
        if last_ts is not None and first < last_ts:
            raise ValidationError(
                f"replay chunks overlap: a chunk starts at {first} us, before the previous "
                f"chunk's last tick at {last_ts} us",
                field="chunks",
            )
        last_ts = int(merged.ts_us[-1])
        yield merged


def pad_levels(levels: Float64Array, depth: int, pad: float) -> Float64Array:
    """``levels`` (n, d) widened to (n, depth) with ``pad``."""
    if levels.shape[1] >= depth:
        return levels
    extra = np.full((levels.shape[0], depth - levels.shape[1]), pad)
    return np.ascontiguousarray(np.hstack([levels, extra]))


class Pacer:
    """Delivers exchange time at ``speed`` x wall time (speed 0: no waiting).

    The first tick sets the origin. :meth:`wait` returns ``False`` if ``stop`` was
    set while waiting. ``lateness_s`` collects how late each paced tick was
    delivered beside its schedule (for the pacing benchmark), when asked to.
    """

    def __init__(
        self,
        speed: float,
        stop: threading.Event | None = None,
        *,
        record_lateness: bool = False,
    ) -> None:
        if speed < 0:
            raise ValidationError("speed must be 0 (as fast as possible) or > 0", field="speed")
        self.speed = speed
        self._wall_per_us = 1e-6 / speed if speed > 0 else 0.0
        self.stop = stop or threading.Event()
        self._origin_ts: int | None = None
        self._origin_wall = 0.0
        self.lateness_s: list[float] | None = [] if record_lateness else None

    def due(self, ts_us: int) -> float:
        """The wall-clock time (``time.monotonic``) at which ``ts_us`` is due."""
        if self._origin_ts is None:
            self._origin_ts = ts_us
            self._origin_wall = time.monotonic()
        return self._origin_wall + (ts_us - self._origin_ts) * self._wall_per_us

    def wait(self, ts_us: int) -> bool:
        if self.speed == 0:
            return not self.stop.is_set()
        due = self.due(ts_us)
        delay = due - time.monotonic()
        if delay > SHORT_WAIT_S:
            if self.stop.wait(delay):
                return False
        elif delay > 0:
            time.sleep(delay)  # cheaper than an Event wait; the flag is read just below
        if self.lateness_s is not None:
            self.lateness_s.append(max(0.0, time.monotonic() - due))
        return not self.stop.is_set()


_END = object()


class LiveSource:
    """Chunks handed from a live feed to a run on another thread (a paper session).

    The feed side calls :meth:`put` for each chunk — it blocks while ``max_chunks``
    are waiting, so a slow strategy holds the feed back instead of growing memory —
    and :meth:`close` at the end. The run iterates it like any source; while it
    waits for the next chunk the run counts as waiting, not as strategy time. The
    chunks must be consecutive in exchange time, as for a replay, so a run over a
    live feed and a backtest over what it recorded see the same ticks in the same
    order.
    """

    def __init__(self, max_chunks: int = 64) -> None:
        self._queue: queue.Queue[object] = queue.Queue(max_chunks)

    def put(self, chunk: Chunk, timeout: float | None = None) -> None:
        self._queue.put(chunk, timeout=timeout)

    def room(self, chunks: int) -> bool:
        """Room for ``chunks`` more now. For the one feed side that must not block (a
        paper session fed by the instance's sim driver): the room can only grow until it
        puts, as only the run takes."""
        q = self._queue
        return q.maxsize <= 0 or q.maxsize - q.qsize() >= chunks

    def put_nowait(self, chunk: Chunk) -> None:
        """Queue ``chunk`` now (``queue.Full`` if there is no room: check :meth:`room`)."""
        self._queue.put_nowait(chunk)

    def close(self) -> None:
        self._queue.put(_END)

    def abort(self) -> None:
        """End the source now if a reader may be waiting (the queue is not full); with a
        full queue nobody waits on it. For a run that was stopped: never blocks."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_END)

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            yield item  # type: ignore[misc]
