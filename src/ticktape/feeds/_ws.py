"""The machinery every WebSocket connector shares: connections that never give up.

A feed has one or more *links* (a link is one logical connection: a URL and the
(symbol, data type) streams it carries). Each link runs its own loop:

    connect → subscribe → read … until the connection ends → gap → backoff → again

with unlimited attempts (capped exponential backoff, full jitter), a watchdog
that closes a connection silent for ``stale_after_s`` while subscribed, and —
where the connector supports it — make-before-break rotation: before the
exchange's connection lifetime runs out a second connection is opened and
subscribed, and only once it is *ready* (every subscription acknowledged, every
book rebuilt) does it take over and the old one close. Nothing is lost in the
hand-over: connectors deduplicate trades by the exchange's ids while both
connections deliver, and only the link's primary connection emits books.

The connector (a subclass of :class:`StreamFeed`) implements the protocol:
what to send to subscribe, how to read a message, when a connection is ready.
Gap bookkeeping lives here so every connector reports gaps the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ticktape.domain import DataType
from ticktape.feeds.book import LocalBook
from ticktape.feeds.contract import (
    BookBuilder,
    EventKind,
    FeedEvent,
    FeedItem,
    FeedQueue,
    Gap,
    GapCause,
    SubscriptionRefused,
    TradeBuilder,
    book_row,
    now_us,
    reconnect_delay,
)
from ticktape.feeds.limits import CONNECT_LIMITS, DEFAULT_LIMIT, REST_LIMITS, shared_limiter
from ticktape.feeds.settings import StreamSettings
from ticktape.feeds.wire import WireConnection, open_wire

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 2**20  # a larger message is a protocol error (the books are far smaller)
RECV_QUEUE_MESSAGES = 256  # messages received and not yet handled before TCP is no longer read


@dataclass
class FeedCounters:
    """What a feed counted, for the quality report and metrics."""

    messages: int = 0
    reconnects: int = 0
    sequence_breaks: int = 0
    resyncs: int = 0
    duplicates_dropped: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)  # per symbol
    out_of_order: int = 0
    rotations: int = 0
    backoff_attempt: int = 0  # the latest link's reconnect attempt level (0: at full speed)
    malformed: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Link:
    name: str
    url: str
    streams: tuple[tuple[str, DataType], ...]


class Conn:
    """One WebSocket connection of a link, with the connector's per-connection state."""

    def __init__(self, link: Link, ws: WireConnection, number: int) -> None:
        self.link = link
        self.ws = ws
        self.number = number
        self.opened = time.monotonic()
        self.last_message = time.monotonic()
        self.probed = time.monotonic()
        self.subscribed = False  # every subscription sent (stall detection starts)
        self.state: dict[str, Any] = {}  # the connector's own per-connection state
        self.reader: asyncio.Task[None] | None = None
        self.close_cause: tuple[GapCause, str] | None = None
        self.tasks: set[asyncio.Task[None]] = set()  # helpers (snapshot fetches) of this connection

    @property
    def closed(self) -> bool:
        return self.ws.close_code is not None or self.close_cause is not None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A helper task that lives no longer than this connection."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def send_json(self, message: object) -> None:
        await self.ws.send(json.dumps(message, separators=(",", ":")))


@dataclass
class BookSync(Generic[T]):
    """One symbol's diff book on one connection, while the connector rebuilds and keeps it:
    the events (of type ``T``) that arrive before it is in sync wait in ``buffer``."""

    book: LocalBook = field(default_factory=LocalBook)
    synced: bool = False
    buffer: list[T] = field(default_factory=list)


@dataclass
class _Pending:
    start_us: int
    cause: GapCause
    detail: str
    lost: int | None = None


class StreamFeed(ABC):
    """A feed made of WebSocket links (module docstring). Subclasses speak the protocol."""

    exchange = ""
    supports_rotation = False
    rest_url = ""  # the exchange's REST base (its budget is shared per host)
    snapshot_weight = 1  # what one book snapshot request costs in the REST budget
    default_rotate_after_s: float | None = None
    default_ping_interval_s: float | None = None

    def __init__(
        self,
        session_id: str,
        symbols: tuple[str, ...],
        *,
        data_types: tuple[DataType, ...] = (DataType.TRADES, DataType.ORDERBOOK),
        depth: int = 10,
        settings: StreamSettings | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("a feed needs at least one symbol")
        self.session_id = session_id
        self.symbols = symbols
        self.data_types = data_types
        self.depth = depth
        self.settings = settings or StreamSettings()
        self.rotate_after_s = (
            self.settings.rotate_after_s
            if self.settings.rotate_after_s is not None
            else self.default_rotate_after_s
        )
        if self.rotate_after_s is not None and not self.supports_rotation:
            raise ValueError(f"{self.exchange}: connection rotation is not built for this exchange")
        self.ping_interval_s = (
            self.settings.ping_interval_s
            if self.settings.ping_interval_s is not None
            else self.default_ping_interval_s
        )
        # Probe well within the stall limit: only a dead connection stays silent that long.
        self.probe_interval_s = self.settings.stale_after_s / 3
        if self.ping_interval_s is not None:
            self.probe_interval_s = min(self.probe_interval_s, self.ping_interval_s)
        self.counters = FeedCounters()
        self._queue = FeedQueue(self.settings.queue_items)
        self._trades = {s: TradeBuilder(session_id, s) for s in symbols}
        self._books = {s: BookBuilder(session_id, s, depth) for s in symbols}
        self._seq = 0
        self._last_ts: dict[tuple[str, DataType], int] = {}
        self._pending: dict[tuple[str, DataType], _Pending] = {}
        self._primary: dict[str, Conn] = {}
        self._conn_numbers = 0
        self._refused: SubscriptionRefused | None = None
        self._malformed_logged: set[str] = set()
        # Items made while the queue was full wait here, in order, until the reader that made
        # them has moved them into the queue (:meth:`settle`) before it reads on.
        self._overflow: deque[FeedItem] = deque()
        self._settling = asyncio.Lock()
        self.consumer_waits = 0  # readers waiting for room in the queue right now

    # ------------------------------------------------------------------ protocol (subclass)

    @abstractmethod
    def links(self) -> list[Link]: ...

    @abstractmethod
    async def subscribe(self, conn: Conn) -> None:
        """Send the link's subscriptions (the reader is already running)."""

    @abstractmethod
    async def on_message(self, conn: Conn, raw: str | bytes, recv_us: int) -> None:
        """Handle one message; malformed ones go to :meth:`malformed`, never raise."""

    async def on_messages(self, conn: Conn, raws: list[bytes], recv_us: int) -> None:
        """Handle the messages of one received chunk (all received at ``recv_us``).

        The default awaits :meth:`on_message` for each; a connector overrides it with a
        synchronous fast path (``put_*``), calling :meth:`settle` after each message
        so back-pressure holds.
        """
        for raw in raws:
            await self.on_message(conn, raw, recv_us)

    @abstractmethod
    def is_ready(self, conn: Conn) -> bool:
        """Every subscription acknowledged and every book of the connection in sync."""

    async def probe(self, conn: Conn) -> None:
        """Provoke an answer from the exchange so a quiet but live connection is never stale.

        The default sends a WebSocket ping frame and counts its pong as a message;
        an exchange with an application-level ping overrides this.
        """
        pong = await conn.ws.ping()

        def answered(done: asyncio.Future[float]) -> None:
            if not done.cancelled() and done.exception() is None:
                conn.last_message = time.monotonic()

        pong.add_done_callback(answered)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources the connector holds (HTTP clients)."""

    # ------------------------------------------------------------------ consumer side

    async def items(self, stop: asyncio.Event) -> AsyncIterator[FeedItem]:
        tasks = [
            asyncio.create_task(self._link_loop(link, stop), name=f"{self.exchange}-{link.name}")
            for link in self.links()
        ]
        tasks.append(asyncio.create_task(self._flush_loop(stop), name=f"{self.exchange}-flush"))
        stopper = asyncio.create_task(self._close_on(stop))
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    break
                yield item
                if stop.is_set() and self._queue.qsize() == 0:
                    break
            if self._refused is not None:
                raise self._refused
        finally:
            stopper.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(stopper, *tasks, return_exceptions=True)
            for conn in list(self._primary.values()):
                await self._drop(conn)  # bounded: a black-holed peer cannot hold the stop up
            await self.aclose()
        for item in self._final_items():
            yield item

    async def _close_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._queue.close()

    def _final_items(self) -> list[FeedItem]:
        """What the feed still holds at its end: items not queued yet, gathered rows and the
        gaps still open."""
        out: list[FeedItem] = list(self._overflow)
        self._overflow.clear()
        for builders in (self._trades, self._books):
            for b in builders.values():
                if len(b):
                    out.append(b.take(self._next_seq()))
        end = now_us()
        for (symbol, dt), p in sorted(self._pending.items()):
            gap = Gap(symbol, dt, p.start_us, max(end, p.start_us), p.cause, p.lost, p.detail)
            out.append(FeedEvent(EventKind.GAP, end, symbol, dt, p.detail, gap))
        self._pending.clear()
        return out

    # ------------------------------------------------------------------ helpers for connectors

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    def put(self, item: FeedItem) -> None:
        """Hand an item on without waiting: into the queue, or — while it is full, or items
        wait before it — behind them in the overflow, which the reader that made it moves
        into the queue (:meth:`settle`) before it reads on."""
        if self._overflow or self._queue.full():
            self._overflow.append(item)
        else:
            self._queue.put_nowait(item)

    async def settle(self) -> None:
        """Wait until every item made so far is in the queue (back-pressure on the reader)."""
        overflow = self._overflow
        if not overflow:
            return
        self.consumer_waits += 1
        try:
            async with self._settling:  # one mover at a time keeps the items in order
                while overflow:
                    await self._queue.put(overflow[0])
                    overflow.popleft()
        finally:
            self.consumer_waits -= 1

    async def emit(self, item: FeedItem) -> None:
        """Hand an item on; while the consumer is behind, wait (back-pressure on the reader)."""
        self.put(item)
        if self._overflow:
            await self.settle()

    async def event(
        self,
        kind: EventKind,
        symbol: str | None = None,
        data_type: DataType | None = None,
        detail: str = "",
    ) -> None:
        await self.emit(FeedEvent(kind, now_us(), symbol, data_type, detail))

    def is_primary(self, conn: Conn) -> bool:
        return self._primary.get(conn.link.name) is conn

    async def emit_top(
        self, conn: Conn, symbol: str, book: LocalBook, ts_us: int, recv_us: int
    ) -> None:
        """The top ``depth`` levels of ``book`` as a snapshot, from the link's primary
        connection only (during a rotation both connections keep a book)."""
        self.put_top(conn, symbol, book, ts_us, recv_us)
        if self._overflow:
            await self.settle()

    def put_top(self, conn: Conn, symbol: str, book: LocalBook, ts_us: int, recv_us: int) -> None:
        """:meth:`emit_top` without waiting (the caller settles)."""
        if self._primary.get(conn.link.name) is conn:
            self.put_book_row(symbol, ts_us, book.row(self.depth), recv_us)

    async def fetch_snapshot(
        self,
        conn: Conn,
        symbol: str,
        get: Callable[[], Awaitable[httpx.Response]],
        parse: Callable[[Any], T],
        attempt: int = 0,
    ) -> T | None:
        """A REST book snapshot: ``parse`` of ``get()``'s JSON, asked again with capped
        backoff until it comes; None once ``conn`` closed. A non-zero ``attempt`` (a
        snapshot found stale) waits before the first request, as a retry does."""
        if attempt:
            await asyncio.sleep(reconnect_delay(attempt, 0.05, 1.0))
        while not conn.closed:
            try:
                await self.rest_slot(self.snapshot_weight)
                resp = await get()
                resp.raise_for_status()
                return parse(resp.json())
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("%s %s: depth snapshot failed: %s", self.exchange, symbol, exc)
                attempt += 1
                await asyncio.sleep(reconnect_delay(attempt, 0.25, 5.0))
        return None

    def duplicate(self, symbol: str) -> None:
        """A trade of ``symbol`` already seen was dropped (counted per symbol)."""
        self.counters.duplicates_dropped += 1
        per = self.counters.duplicates
        per[symbol] = per.get(symbol, 0) + 1

    async def rest_slot(self, weight: int = 1) -> None:
        """Wait for room under the exchange's per-IP REST budget (``ticktape.feeds.limits``)
        for a request of ``weight`` to :attr:`rest_url`."""
        limit = self.settings.rest_limit or REST_LIMITS.get(self.exchange, DEFAULT_LIMIT)
        limiter = shared_limiter("rest", self.exchange, self.rest_url, limit)
        waited = await limiter.acquire(min(weight, limiter.limit))  # a budget below one request
        if waited:
            log.warning("%s: REST rate limit, waited %.1fs", self.exchange, waited)

    def malformed(self, kind: str, raw: str | bytes) -> None:
        counts = self.counters.malformed
        counts[kind] = counts.get(kind, 0) + 1
        if kind not in self._malformed_logged:  # once per kind: a flood must not flood the log
            self._malformed_logged.add(kind)
            log.warning("%s: unexpected message (%s), counted: %.200r", self.exchange, kind, raw)

    def open_gap(
        self,
        symbol: str,
        data_type: DataType,
        cause: GapCause,
        detail: str = "",
        lost: int | None = None,
    ) -> None:
        """A gap starts now for this stream (kept open until data of its kind flows again);
        while one is already open, the new cause joins it (contract guarantee 1)."""
        key = (symbol, data_type)
        if key not in self._pending:
            start = self._last_ts.get(key, now_us())
            self._pending[key] = _Pending(start, cause, detail, lost)

    def resume_after(self, after_us: int, detail: str = "resumed by another instance") -> None:
        """A resumed recording: every stream starts inside a ``restart`` gap from ``after_us``
        (the newest stored tick), closed by its first row as any other gap is."""
        for symbol in self.symbols:
            for data_type in self.data_types:
                self._pending[(symbol, data_type)] = _Pending(after_us, GapCause.RESTART, detail)

    def gap_open(self, symbol: str, data_type: DataType) -> bool:
        return (symbol, data_type) in self._pending

    async def add_trade(
        self,
        symbol: str,
        ts_us: int,
        trade_id: int,
        price: float,
        qty: float,
        side: int,
        recv_us: int,
        lost: int | None = None,
    ) -> None:
        """One trade; ``lost`` is what the exchange's ids say is missing just before it."""
        self.put_trade(symbol, ts_us, trade_id, price, qty, side, recv_us, lost)
        if self._overflow:
            await self.settle()

    def put_trade(
        self,
        symbol: str,
        ts_us: int,
        trade_id: int,
        price: float,
        qty: float,
        side: int,
        recv_us: int,
        lost: int | None = None,
    ) -> None:
        """:meth:`add_trade` without waiting (the caller settles)."""
        key = (symbol, DataType.TRADES)
        last = self._last_ts.get(key)
        if last is not None and ts_us < last:
            self.counters.out_of_order += 1
        builder = self._trades[symbol]
        if self._pending or lost:
            pending = self._pending.pop(key, None)
            if pending is not None:
                if len(builder):
                    self.put(builder.take(self._next_seq()))
                if lost is None:
                    lost = pending.lost
                start, cause, detail = pending.start_us, pending.cause, pending.detail
                gap = Gap(symbol, key[1], start, ts_us, cause, lost, detail)
                self.put(FeedEvent(EventKind.GAP, recv_us, symbol, key[1], detail, gap))
            elif lost:
                self.counters.sequence_breaks += 1
                if len(builder):
                    self.put(builder.take(self._next_seq()))
                start = last if last is not None else ts_us
                gap = Gap(symbol, DataType.TRADES, start, ts_us, GapCause.SEQUENCE_BREAK, lost)
                self.put(FeedEvent(EventKind.GAP, recv_us, symbol, key[1], "", gap))
        if last is None or ts_us > last:
            self._last_ts[key] = ts_us
        if builder.add(ts_us, trade_id, price, qty, side, recv_us) >= self.settings.batch_rows:
            self.put(builder.take(self._next_seq()))

    async def add_book(
        self,
        symbol: str,
        ts_us: int,
        bids: list[tuple[float, float]],
        asks: list[tuple[float, float]],
        recv_us: int,
        lost: int | None = None,
    ) -> None:
        """A book snapshot from a book in sync; closes the stream's open gap (``resynced``)."""
        self.put_book_row(symbol, ts_us, book_row(bids, asks, self.depth), recv_us, lost)
        if self._overflow:
            await self.settle()

    def put_book_row(
        self, symbol: str, ts_us: int, row: list[float], recv_us: int, lost: int | None = None
    ) -> None:
        """:meth:`add_book` of a snapshot already laid out as :func:`book_row` does, without
        waiting (the caller settles)."""
        key = (symbol, DataType.ORDERBOOK)
        builder = self._books[symbol]
        if self._pending:
            pending = self._pending.pop(key, None)
            if pending is not None:
                if len(builder):
                    self.put(builder.take(self._next_seq()))
                if lost is None:
                    lost = pending.lost
                start, cause, detail = pending.start_us, pending.cause, pending.detail
                gap = Gap(symbol, key[1], start, ts_us, cause, lost, detail)
                self.put(FeedEvent(EventKind.GAP, recv_us, symbol, key[1], detail, gap))
                self.put(FeedEvent(EventKind.RESYNCED, recv_us, symbol, key[1]))
        last = self._last_ts.get(key)
        self._last_ts[key] = ts_us if last is None else max(last + 1, ts_us)
        if builder.add_row(ts_us, row, recv_us) >= self.settings.batch_rows:
            self.put(builder.take(self._next_seq()))

    def refuse(self, symbol: str, channel: str, reason: str) -> None:
        if self._refused is None:
            self._refused = SubscriptionRefused(symbol, channel, reason)
        self._queue.close()

    # ------------------------------------------------------------------ loops

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        interval = self.settings.batch_interval_s
        while not stop.is_set():
            await asyncio.sleep(interval / 2)
            due = time.monotonic() - interval
            for builders in (self._trades, self._books):
                for b in builders.values():
                    if len(b) and b.started <= due:
                        await self.emit(b.take(self._next_seq()))

    async def _sleep(self, stop: asyncio.Event, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()

    async def _open(self, link: Link) -> Conn:
        # every attempt counts against the exchange's per-IP connection limit
        limit = self.settings.connect_limit or CONNECT_LIMITS.get(self.exchange, DEFAULT_LIMIT)
        waited = await shared_limiter("connect", self.exchange, link.url, limit).acquire()
        if waited:
            log.warning(
                "%s %s: connection rate limit, waited %.1fs", self.exchange, link.name, waited
            )
        # No client pings of our own (liveness is the stall watchdog's job; the exchange
        # pings us), no compression, no proxy; frames are read in bulk (feeds/wire.py).
        ws = await open_wire(
            link.url,
            open_timeout=self.settings.open_timeout_s,
            max_size=MAX_MESSAGE_BYTES,
            high_water=RECV_QUEUE_MESSAGES,
        )
        self._conn_numbers += 1
        conn = Conn(link, ws, self._conn_numbers)
        conn.reader = asyncio.create_task(self._read(conn), name=f"{self.exchange}-read")
        try:
            await self.subscribe(conn)
        except BaseException:
            conn.reader.cancel()
            await ws.close()
            raise
        conn.subscribed = True
        return conn

    async def _read(self, conn: Conn) -> None:
        ws = conn.ws
        counters = self.counters
        with contextlib.suppress(ConnectionClosed):
            while True:
                for recv_us, raws in await ws.recv_batches():
                    conn.last_message = time.monotonic()
                    counters.messages += len(raws)
                    await self.on_messages(conn, raws, recv_us)

    async def _link_loop(self, link: Link, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                conn = await self._open(link)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
                log.warning("%s %s: connect failed: %s", self.exchange, link.name, exc)
                self._disconnected(link, GapCause.DISCONNECT, f"connect failed: {exc}")
                await self._sleep(stop, self._delay(attempt))
                attempt += 1
                self.counters.backoff_attempt = attempt
                continue
            self._primary[link.name] = conn
            await self.event(EventKind.CONNECTED, detail=f"{link.name} #{conn.number}")
            await self.event(EventKind.SUBSCRIBED, detail=f"{link.name} #{conn.number}")
            cause, detail, healthy = await self._serve(conn, stop)
            self._primary.pop(link.name, None)
            if stop.is_set() or self._refused is not None:
                return
            self.counters.reconnects += 1
            self._disconnected(link, cause, detail)
            await self.event(EventKind.DISCONNECTED, detail=f"{link.name}: {cause}: {detail}")
            # Back off from zero only after a connection that served well for a while: one
            # that the exchange closes right after subscribing must not make us reconnect at
            # full speed (exchanges limit connection attempts per IP, and ban past them).
            attempt = 0 if healthy else attempt + 1
            self.counters.backoff_attempt = attempt
            await self._sleep(stop, self._delay(attempt))

    def _delay(self, attempt: int) -> float:
        s = self.settings
        return reconnect_delay(attempt, s.reconnect_base_s, s.reconnect_max_s)

    def _disconnected(self, link: Link, cause: GapCause, detail: str) -> None:
        for symbol, dt in link.streams:
            self.open_gap(symbol, dt, cause, detail)

    async def _serve(self, conn: Conn, stop: asyncio.Event) -> tuple[GapCause, str, bool]:
        """Run a link's connections (rotating them) until one ends: why, and was it healthy.

        Healthy: ready (subscribed, books in sync) when it ended, after serving for at
        least ``healthy_after_s``.
        """
        served_since = time.monotonic()
        candidate: asyncio.Task[Conn] | None = None
        next_rotation = None if self.rotate_after_s is None else conn.opened + self.rotate_after_s
        tick = min(1.0, self.settings.stale_after_s / 6, self.probe_interval_s)
        if next_rotation is not None:
            tick = min(tick, max(0.01, self.rotate_after_s or 1.0) / 4)
        try:
            while True:
                assert conn.reader is not None
                done, _ = await asyncio.wait({conn.reader}, timeout=tick)
                now = time.monotonic()
                if done or stop.is_set():
                    healthy = (
                        self.is_ready(conn) and now - served_since >= self.settings.healthy_after_s
                    )
                    if conn.close_cause is not None:
                        return (*conn.close_cause, healthy)
                    code = conn.ws.close_code
                    why = f"closed by the exchange (code {code} {conn.ws.close_reason!r})"
                    return GapCause.DISCONNECT, why, healthy
                if self.consumer_waits:
                    # The reader waits for the consumer, not for the exchange: its silence
                    # says nothing about the link (the backlog is read once the consumer
                    # catches up; if the exchange gives up on us, that is a disconnect gap).
                    conn.last_message = now
                if now - conn.last_message > self.settings.stale_after_s:
                    silent = now - conn.last_message
                    detail = f"no message for {silent:.1f}s"
                    await self.event(EventKind.STALE, detail=f"{conn.link.name}: {detail}")
                    conn.close_cause = (GapCause.STALE, detail)
                    await self._drop(conn)
                    continue
                if now - conn.probed >= self.probe_interval_s:
                    conn.probed = now
                    with contextlib.suppress(ConnectionClosed):
                        await self.probe(conn)
                if next_rotation is not None and now >= next_rotation and candidate is None:
                    candidate = asyncio.create_task(self._candidate(conn.link))
                if candidate is not None and candidate.done():
                    new = candidate.result() if not candidate.exception() else None
                    candidate = None
                    if new is None:
                        next_rotation = now + self.settings.reconnect_max_s
                        continue
                    self._primary[conn.link.name] = new
                    self.counters.rotations += 1
                    old, conn = conn, new
                    old.close_cause = (GapCause.DISCONNECT, "rotated")
                    await self._drop(old)
                    await self.event(EventKind.CONNECTED, detail=f"rotated to #{new.number}")
                    next_rotation = new.opened + (self.rotate_after_s or 0.0)
        finally:
            if candidate is not None:
                candidate.cancel()
                with contextlib.suppress(BaseException):
                    spare = await candidate
                    await self._drop(spare)
            await self._drop(conn)

    async def _candidate(self, link: Link) -> Conn:
        """A new connection for a rotation: opened, subscribed and ready, or it raises."""
        conn = await self._open(link)
        deadline = time.monotonic() + self.settings.ready_timeout_s
        while not self.is_ready(conn):
            if time.monotonic() > deadline or (conn.reader and conn.reader.done()):
                await self._drop(conn)
                raise TimeoutError("rotation candidate not ready")
            await asyncio.sleep(0.01)
        return conn

    async def _drop(self, conn: Conn) -> None:
        if conn.close_cause is None:
            conn.close_cause = (GapCause.DISCONNECT, "closed by ticktape")
        helpers = list(conn.tasks)
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        try:
            async with asyncio.timeout(1.0):
                await conn.ws.close()
        except Exception:
            pass
        finally:
            conn.ws.transport.abort()  # a peer that never answered the close must not linger
        if conn.reader is not None and not conn.reader.done():
            conn.reader.cancel()
            await asyncio.gather(conn.reader, return_exceptions=True)


def keep_last(buffer: list[T], item: T, limit: int) -> None:
    """Append ``item`` to ``buffer``, dropping the oldest once it holds ``limit`` (a book
    procedure's bridge check then sees that the buffer lost its start)."""
    if len(buffer) >= limit:
        buffer.pop(0)
    buffer.append(item)
