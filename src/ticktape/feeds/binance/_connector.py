"""The Binance USD-M futures connector: aggTrade and the depth@100ms diff book.

Two links, because Binance routes its USD-M streams by kind: depth streams are
served under ``/public`` (high-frequency data) and aggTrade under ``/market``.
Each link subscribes per symbol with JSON ``SUBSCRIBE`` requests (one id each, so
a refusal names its symbol), paced under the documented limit of 10 incoming
messages per second per connection; a connection carries at most 1024 streams.

The book is kept by the documented procedure, per symbol and per connection:
buffer the stream's events, fetch a REST snapshot, drop events with
``u < lastUpdateId``, require the first applied event to span ``lastUpdateId``
(``U <= lastUpdateId <= u``) — a snapshot that does not (it is stale or too new)
is fetched again — then require every event's ``pu`` to equal the previous
event's ``u``; a break opens a gap and the book is rebuilt the same way.

Trades are checked on the aggregate id ``a``: a jump is a sequence break with a
known count of lost messages; an id already seen (a reconnect or a rotation
overlap) is dropped and counted. Connections are rotated make-before-break
before Binance's 24-hour limit. The server's ping frames are answered as soon as
they are read (:mod:`ticktape.feeds.wire`).

Trades and depth updates that follow an in-sync book are handled without an
``await`` per message (``on_messages``); the reader waits only while items wait
for room in the feed's queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from ticktape.domain import DataType
from ticktape.feeds._ws import BookSync, Conn, Link, StreamFeed, keep_last
from ticktape.feeds.binance._parse import (
    DepthSnapshot,
    DepthUpdate,
    MalformedMessage,
    parse_agg_trade,
    parse_depth_snapshot,
    parse_depth_update,
    unwrap,
)
from ticktape.feeds.contract import GapCause, now_us
from ticktape.feeds.settings import StreamSettings

log = logging.getLogger(__name__)

WS_PUBLIC_URL = "wss://fstream.binance.com/public/ws"  # depth streams
WS_MARKET_URL = "wss://fstream.binance.com/market/ws"  # aggTrade
REST_URL = "https://fapi.binance.com"
SNAPSHOT_LIMIT = 1000  # levels asked of /fapi/v1/depth (its largest)
ROTATE_AFTER_S = 23 * 3600.0  # Binance closes a connection after 24 h; rotate well before
SUBSCRIBE_INTERVAL_S = 0.125  # 8 requests/s, under the 10 incoming messages/s per connection
MAX_STREAMS_PER_CONNECTION = 1024
MAX_BUFFERED_EVENTS = 10_000  # depth events held while a snapshot is fetched
SNAPSHOT_TIMEOUT_S = 10.0


def depth_weight(limit: int) -> int:
    """The request weight of ``GET /fapi/v1/depth?limit=`` (Binance's documented table)."""
    if limit <= 50:
        return 2
    if limit <= 100:
        return 5
    if limit <= 500:
        return 10
    return 20


@dataclass(frozen=True)
class BinanceEndpoints:
    ws_public: str = WS_PUBLIC_URL
    ws_market: str = WS_MARKET_URL
    rest: str = REST_URL


@dataclass
class _BookSync(BookSync[DepthUpdate]):
    snapshot_id: int | None = None  # a snapshot is in the book, waiting for its bridging event
    last_u: int = 0
    fetch: asyncio.Task[None] | None = None


class BinanceFeed(StreamFeed):
    exchange = "binance"
    supports_rotation = True
    default_rotate_after_s = ROTATE_AFTER_S

    def __init__(
        self,
        session_id: str,
        symbols: tuple[str, ...],
        *,
        data_types: tuple[DataType, ...] = (DataType.TRADES, DataType.ORDERBOOK),
        depth: int = 10,
        settings: StreamSettings | None = None,
        endpoints: BinanceEndpoints | None = None,
        subscribe_interval_s: float = SUBSCRIBE_INTERVAL_S,
        snapshot_limit: int = SNAPSHOT_LIMIT,
        last_trade_ids: dict[str, int] | None = None,
    ) -> None:
        super().__init__(
            session_id,
            tuple(s.upper() for s in symbols),
            data_types=data_types,
            depth=depth,
            settings=settings,
        )
        if len(symbols) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"binance: at most {MAX_STREAMS_PER_CONNECTION} symbols per session")
        self.endpoints = endpoints or BinanceEndpoints()
        self.subscribe_interval_s = subscribe_interval_s
        self.snapshot_limit = snapshot_limit
        self.rest_url = self.endpoints.rest
        self.snapshot_weight = depth_weight(snapshot_limit)
        # A resumed recording continues after the stored aggregate ids: what is older is a
        # duplicate, and the jump to the first new id is what was lost meanwhile.
        self._last_agg: dict[str, int] = {s.upper(): i for s, i in (last_trade_ids or {}).items()}
        self._http = httpx.AsyncClient(base_url=self.endpoints.rest, timeout=SNAPSHOT_TIMEOUT_S)

    def links(self) -> list[Link]:
        out = []
        if DataType.TRADES in self.data_types:
            streams = tuple((s, DataType.TRADES) for s in self.symbols)
            out.append(Link("market", self.endpoints.ws_market, streams))
        if DataType.ORDERBOOK in self.data_types:
            streams = tuple((s, DataType.ORDERBOOK) for s in self.symbols)
            out.append(Link("public", self.endpoints.ws_public, streams))
        return out

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ subscribe

    async def subscribe(self, conn: Conn) -> None:
        pending: dict[int, str] = {}
        conn.state["acks"] = pending
        if conn.link.name == "public":
            conn.state["books"] = {s: _BookSync() for s in self.symbols}
        suffix = "@aggTrade" if conn.link.name == "market" else "@depth@100ms"
        for i, symbol in enumerate(self.symbols, start=1):
            if i > 1:
                await asyncio.sleep(self.subscribe_interval_s)
            pending[i] = symbol
            request = {"method": "SUBSCRIBE", "params": [symbol.lower() + suffix], "id": i}
            await conn.send_json(request)
        if conn.link.name == "public":
            for symbol, sync in conn.state["books"].items():
                sync.fetch = conn.spawn(self._fetch_snapshot(conn, symbol))

    def is_ready(self, conn: Conn) -> bool:
        if conn.state.get("acks") or "acks" not in conn.state:
            return False
        books: dict[str, _BookSync] = conn.state.get("books", {})
        return all(b.synced for b in books.values())

    # ------------------------------------------------------------------ messages

    async def on_message(self, conn: Conn, raw: str | bytes, recv_us: int) -> None:
        slow = self._dispatch(conn, raw, recv_us)
        if slow is not None:
            await slow
        await self.settle()

    async def on_messages(self, conn: Conn, raws: list[bytes], recv_us: int) -> None:
        # The hot path: a trade, or a depth update that follows the book, is handled without
        # an await; the reader waits only for the rest and while items wait for the queue.
        dispatch = self._dispatch
        overflow = self._overflow
        for raw in raws:
            slow = dispatch(conn, raw, recv_us)
            if slow is not None:
                await slow
            if overflow:
                await self.settle()

    def _dispatch(
        self, conn: Conn, raw: str | bytes, recv_us: int
    ) -> Coroutine[Any, Any, None] | None:
        """Handle a message now, or return what must be awaited to handle it."""
        try:
            d = unwrap(orjson.loads(raw))
            event = d.get("e")
            if event == "aggTrade":
                self._on_trade(d, recv_us)
            elif event == "depthUpdate":
                return self._on_depth_now(conn, parse_depth_update(d), recv_us)
            elif "id" in d and ("result" in d or "error" in d):
                self._on_reply(conn, d)
            else:
                raise MalformedMessage(f"unexpected event {str(event)[:40]!r}")
        except orjson.JSONDecodeError:
            self.malformed("invalid JSON", raw)
        except MalformedMessage as exc:
            self.malformed(exc.kind, raw)
        return None

    def _on_reply(self, conn: Conn, d: dict[str, Any]) -> None:
        acks: dict[int, str] = conn.state.get("acks", {})
        symbol = acks.pop(d["id"], None)
        if symbol is None:
            raise MalformedMessage("reply to an unknown request")
        error = d.get("error")
        if error:
            self.refuse(symbol, conn.link.name, str(error.get("msg", error)))

    def _on_trade(self, d: dict[str, Any], recv_us: int) -> None:
        t = parse_agg_trade(d)
        if t.symbol not in self._trades:
            raise MalformedMessage("trade of a symbol not subscribed")
        last = self._last_agg.get(t.symbol)
        lost = None
        if last is not None:
            if t.agg_id <= last:
                self.duplicate(t.symbol)
                return
            lost = t.agg_id - last - 1
        self._last_agg[t.symbol] = t.agg_id
        self.put_trade(t.symbol, t.ts_us, t.agg_id, t.price, t.qty, t.side, recv_us, lost)

    # ------------------------------------------------------------------ book procedure

    def _on_depth_now(
        self, conn: Conn, ev: DepthUpdate, recv_us: int
    ) -> Coroutine[Any, Any, None] | None:
        """An update that follows a book in sync is applied and snapshotted here; anything
        else (buffering, bridging, a break) is returned to be awaited."""
        books: dict[str, _BookSync] = conn.state.get("books", {})
        sync = books.get(ev.symbol)
        if sync is None:
            raise MalformedMessage("depth of a symbol not subscribed")
        if sync.synced and ev.prev_final_id == sync.last_u:
            sync.book.apply(ev.bids, ev.asks)
            sync.last_u = ev.final_id
            self.put_top(conn, ev.symbol, sync.book, ev.ts_us, recv_us)
            return None
        return self._on_depth(conn, sync, ev, recv_us)

    async def _on_depth(self, conn: Conn, sync: _BookSync, ev: DepthUpdate, recv_us: int) -> None:
        if sync.synced:
            if ev.prev_final_id != sync.last_u:
                why = f"pu {ev.prev_final_id} != {sync.last_u}"
                await self._break(conn, ev.symbol, sync, [ev], why)
                return
            self._apply(sync, ev)
        elif sync.snapshot_id is not None:
            if not await self._bridge(conn, ev.symbol, sync, ev):
                return
        else:
            keep_last(sync.buffer, ev, MAX_BUFFERED_EVENTS)
            return
        await self.emit_top(conn, ev.symbol, sync.book, ev.ts_us, recv_us)

    def _apply(self, sync: _BookSync, ev: DepthUpdate) -> None:
        sync.book.apply(ev.bids, ev.asks)
        sync.last_u = ev.final_id

    async def _bridge(self, conn: Conn, symbol: str, sync: _BookSync, ev: DepthUpdate) -> bool:
        """Apply ``ev`` to a fresh snapshot if the procedure allows; True when now in sync."""
        assert sync.snapshot_id is not None
        if ev.final_id < sync.snapshot_id:
            return False  # older than the snapshot: drop
        # The documented rule is U <= lastUpdateId; an event starting right after the snapshot
        # (U == lastUpdateId + 1) bridges it too: no update lies between them.
        if ev.first_id > sync.snapshot_id + 1:  # the snapshot is older than the stream
            self.counters.resyncs += 1
            sync.snapshot_id = None
            sync.buffer = [ev]
            self._start_fetch(conn, symbol, sync, attempt=1)
            return False
        self._apply(sync, ev)
        sync.snapshot_id = None
        sync.synced = True
        return True

    async def _break(
        self, conn: Conn, symbol: str, sync: _BookSync, events: list[DepthUpdate], why: str
    ) -> None:
        """``events[0]`` does not follow the book: rebuild it from a snapshot, keep ``events``."""
        self.counters.sequence_breaks += 1
        if self.is_primary(conn):
            self.open_gap(symbol, DataType.ORDERBOOK, GapCause.SEQUENCE_BREAK, why)
        sync.synced = False
        sync.book.clear()
        sync.buffer = list(events)
        self._start_fetch(conn, symbol, sync)

    def _start_fetch(self, conn: Conn, symbol: str, sync: _BookSync, attempt: int = 0) -> None:
        if sync.fetch is not None and not sync.fetch.done():
            return
        sync.fetch = conn.spawn(self._fetch_snapshot(conn, symbol, attempt))

    async def _fetch_snapshot(self, conn: Conn, symbol: str, attempt: int = 0) -> None:
        snap = await self.fetch_snapshot(
            conn,
            symbol,
            lambda: self._http.get(
                "/fapi/v1/depth", params={"symbol": symbol, "limit": self.snapshot_limit}
            ),
            parse_depth_snapshot,
            attempt,
        )
        if snap is None:
            return
        sync: _BookSync = conn.state["books"][symbol]
        sync.fetch = None  # this fetch is done: a stale snapshot may start the next one
        await self._install(conn, symbol, sync, snap)

    async def _install(self, conn: Conn, symbol: str, sync: _BookSync, snap: DepthSnapshot) -> None:
        if conn.closed:
            return
        sync.book.reset(snap.bids, snap.asks)
        sync.snapshot_id = snap.last_update_id
        buffered, sync.buffer = sync.buffer, []
        for i, ev in enumerate(buffered):
            if sync.synced:
                if ev.prev_final_id != sync.last_u:
                    why = f"pu {ev.prev_final_id} != {sync.last_u}"
                    await self._break(conn, symbol, sync, buffered[i:], why)
                    return
                self._apply(sync, ev)
            elif sync.snapshot_id is None:  # the snapshot was stale: a new one is on its way
                sync.buffer.extend(buffered[i:])
                return
            else:
                await self._bridge(conn, symbol, sync, ev)
        if sync.synced:
            ts = buffered[-1].ts_us if buffered else snap.ts_us
            await self.emit_top(conn, symbol, sync.book, ts, now_us())
