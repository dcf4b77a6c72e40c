"""The MEXC futures (contract) connector: ``sub.deal`` and the versioned ``sub.depth`` book.

One connection carries every symbol. Subscriptions are sent in order and their
acknowledgements (``rs.sub.*``) or refusals (``rs.error``) come back in the same
order, so a refusal names its symbol: the feed ends with
:class:`~ticktape.feeds.contract.SubscriptionRefused` rather than recording
without it. The client pings every ``ping_interval_s`` (MEXC closes a silent
client after a minute).

The book follows MEXC's incremental procedure: depth pushes are subscribed with
``"compress": false`` so versions are contiguous; they are buffered while a REST
snapshot (``/api/v1/contract/depth/{symbol}``) is fetched; pushes at or below the
snapshot's version are dropped and the first applied one must be
``version + 1`` — otherwise the snapshot is stale and fetched again. Once in
sync every push must be the previous version + 1; a jump is a sequence break
whose lost-message count the versions give, and the book is rebuilt.

Quantities: MEXC publishes deal and book volumes in contracts. At its first
connection the feed asks ``/api/v1/contract/detail`` for each symbol's
``contractSize`` (base asset per contract) and stores base-asset quantities
(contracts * size, exact for sizes of 10^-k or whole numbers, else rounded to
12 decimals), the unit Binance publishes, so the
two exchanges compare. A symbol without a usable detail is refused
(:class:`~ticktape.feeds.contract.SubscriptionRefused`, channel
``contract.detail``); a detail request that fails on the network or answers
418/429/5xx is retried as a failed connection is.

``push.deal`` has no trade id, so ticktape numbers each symbol's deals in the
order received (``first_trade_ids`` continues a resumed recording). The number
is the deduplication key: two distinct deals sharing a timestamp, price and size
keep distinct numbers and are both stored. Without exchange ids a rotation
overlap cannot be deduplicated, so MEXC connections are not rotated (the
contract endpoint documents no connection lifetime).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from ticktape.domain import DataType
from ticktape.feeds._ws import BookSync, Conn, Link, StreamFeed, keep_last
from ticktape.feeds.book import LocalBook
from ticktape.feeds.contract import GapCause, book_row, now_us
from ticktape.feeds.mexc._parse import (
    DepthData,
    MalformedMessage,
    NoContractDetail,
    parse_contract_size,
    parse_deals,
    parse_depth,
    parse_depth_snapshot,
)
from ticktape.feeds.settings import StreamSettings

log = logging.getLogger(__name__)

WS_URL = "wss://contract.mexc.com/edge"
REST_URL = "https://api.mexc.com"
PING_INTERVAL_S = 15.0  # the server drops a client silent for 60 s
SNAPSHOT_LIMIT = 1000
SNAPSHOT_TIMEOUT_S = 10.0
MAX_BUFFERED_PUSHES = 10_000
FULL_DEPTH_LIMITS = (5, 10, 20)  # the sizes sub.depth.full offers
QTY_DECIMALS = 12  # base-asset quantities (contracts * contractSize) are rounded so


def base_quantity(size: float) -> tuple[float, float, bool]:
    """How to turn contracts into base-asset quantities for a ``contractSize``: as
    ``(multiplier, divisor, rounded)`` — ``q * multiplier / divisor``, rounded to
    ``QTY_DECIMALS`` only where neither is exact. A size of 10^-k divides by 10^k, which
    gives the double nearest the decimal value (2 contracts of 0.0001 → 0.0002, not
    0.00020000000000000001) without a ``round`` per quantity (the hot path)."""
    if size >= 1 and size.is_integer():
        return size, 1.0, False
    inverse = 1 / size
    if abs(inverse - round(inverse)) < 1e-9 * inverse:
        return 1.0, float(round(inverse)), False
    return size, 1.0, True


def full_depth_fits(depth: int) -> bool:
    """Whether ``sub.depth.full`` (at most 20 levels) can serve a book of ``depth``."""
    return depth <= FULL_DEPTH_LIMITS[-1]


@dataclass(frozen=True)
class MexcEndpoints:
    ws: str = WS_URL
    rest: str = REST_URL


@dataclass
class _BookSync(BookSync[DepthData]):
    snapshot_version: int | None = None
    version: int = 0


class MexcFeed(StreamFeed):
    exchange = "mexc"
    default_ping_interval_s = PING_INTERVAL_S

    def __init__(
        self,
        session_id: str,
        symbols: tuple[str, ...],
        *,
        data_types: tuple[DataType, ...] = (DataType.TRADES, DataType.ORDERBOOK),
        depth: int = 10,
        settings: StreamSettings | None = None,
        endpoints: MexcEndpoints | None = None,
        first_trade_ids: dict[str, int] | None = None,
        snapshot_limit: int = SNAPSHOT_LIMIT,
        full_depth: bool = False,
    ) -> None:
        super().__init__(
            session_id, tuple(symbols), data_types=data_types, depth=depth, settings=settings
        )
        # sub.depth.full pushes whole top-of-book snapshots (5, 10 or 20 levels): no local
        # book, no snapshot fetches, no version chain to keep — when the depth allows.
        self.full_limit: int | None = None
        if full_depth:
            fits = [n for n in FULL_DEPTH_LIMITS if n >= depth]
            if not fits:
                raise ValueError(f"mexc: sub.depth.full serves at most 20 levels, not {depth}")
            self.full_limit = fits[0]
        self.endpoints = endpoints or MexcEndpoints()
        self.snapshot_limit = snapshot_limit
        self._next_id = {s: (first_trade_ids or {}).get(s, 1) for s in self.symbols}
        self._http = httpx.AsyncClient(base_url=self.endpoints.rest, timeout=SNAPSHOT_TIMEOUT_S)
        self.contract_sizes: dict[str, float] = {}  # base asset per contract, per symbol
        self._scale: dict[str, tuple[float, float, bool]] = {}  # base_quantity() of each
        self.rest_url = self.endpoints.rest

    def links(self) -> list[Link]:
        streams = tuple((s, dt) for s in self.symbols for dt in self.data_types)
        return [Link("edge", self.endpoints.ws, streams)]

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _contract_sizes(self) -> bool:
        """Fetch every symbol's ``contractSize`` once; False if a symbol has none (refused).
        A network failure raises ``OSError``: the connection is retried with backoff."""
        for symbol in self.symbols:
            if symbol in self.contract_sizes:
                continue
            await self.rest_slot()
            try:
                resp = await self._http.get("/api/v1/contract/detail", params={"symbol": symbol})
                if resp.status_code in (418, 429) or resp.status_code >= 500:  # busy, not "no"
                    raise OSError(f"contract detail: HTTP {resp.status_code}")
                body = resp.json() if resp.content else None
            except (httpx.HTTPError, ValueError) as exc:
                raise OSError(f"contract detail: {exc}") from exc
            try:
                self.contract_sizes[symbol] = size = parse_contract_size(body, symbol)
                self._scale[symbol] = base_quantity(size)
            except NoContractDetail as exc:
                self.refuse(symbol, "contract.detail", f"{exc} (HTTP {resp.status_code})")
                return False
        return True

    def _base(self, symbol: str, levels: list[tuple[float, float]]) -> list[tuple[float, float]]:
        mul, div, rounded = self._scale[symbol]
        if rounded:
            return [(p, round(q * mul, QTY_DECIMALS)) for p, q in levels]
        if div != 1.0:
            return [(p, q / div) for p, q in levels]
        return [(p, q * mul) for p, q in levels]

    def _base_qty(self, symbol: str, qty: float) -> float:
        mul, div, rounded = self._scale[symbol]
        if rounded:
            return round(qty * mul, QTY_DECIMALS)
        return qty / div if div != 1.0 else qty * mul

    def put_top(self, conn: Conn, symbol: str, book: LocalBook, ts_us: int, recv_us: int) -> None:
        """The top of the (contract-quantity) book, stored in base-asset quantities (the
        book's cached row with its quantities scaled: the pads stay 0)."""
        if self._primary.get(conn.link.name) is not conn:
            return
        d = self.depth
        row = book.row(d)  # a new list: scaling it in place leaves the book's cache alone
        mul, div, rounded = self._scale[symbol]
        for lo in (d, 3 * d):
            hi = lo + d
            if rounded:
                row[lo:hi] = [round(q * mul, QTY_DECIMALS) for q in row[lo:hi]]
            elif div != 1.0:
                row[lo:hi] = [q / div for q in row[lo:hi]]
            elif mul != 1.0:
                row[lo:hi] = [q * mul for q in row[lo:hi]]
        self.put_book_row(symbol, ts_us, row, recv_us)

    async def subscribe(self, conn: Conn) -> None:
        if not await self._contract_sizes():
            conn.state["acks"] = deque()  # refused: nothing subscribed, the feed ends
            return
        pending: deque[tuple[str, str]] = deque()
        conn.state["acks"] = pending
        conn.state["books"] = {}
        for symbol in self.symbols:
            if DataType.TRADES in self.data_types:
                pending.append(("deal", symbol))
                await conn.send_json({"method": "sub.deal", "param": {"symbol": symbol}})
            if DataType.ORDERBOOK in self.data_types and self.full_limit is not None:
                pending.append(("depth.full", symbol))
                param_full = {"symbol": symbol, "limit": self.full_limit}
                await conn.send_json({"method": "sub.depth.full", "param": param_full})
            elif DataType.ORDERBOOK in self.data_types:
                conn.state["books"][symbol] = _BookSync()
                pending.append(("depth", symbol))
                param = {"symbol": symbol, "compress": False}
                await conn.send_json({"method": "sub.depth", "param": param})
        for symbol in conn.state["books"]:
            conn.spawn(self._fetch_snapshot(conn, symbol))

    def is_ready(self, conn: Conn) -> bool:
        books: dict[str, _BookSync] = conn.state.get("books", {})
        return (
            "acks" in conn.state
            and not conn.state["acks"]
            and all(b.synced for b in books.values())
        )

    async def probe(self, conn: Conn) -> None:
        await conn.send_json({"method": "ping"})  # answered by a ``pong`` message

    # ------------------------------------------------------------------ messages

    async def on_message(self, conn: Conn, raw: str | bytes, recv_us: int) -> None:
        self._dispatch(conn, raw, recv_us)
        await self.settle()

    async def on_messages(self, conn: Conn, raws: list[bytes], recv_us: int) -> None:
        # Every message is handled without an await (snapshots are fetched by helper
        # tasks); the reader waits only while items wait for the queue.
        dispatch = self._dispatch
        overflow = self._overflow
        for raw in raws:
            dispatch(conn, raw, recv_us)
            if overflow:
                await self.settle()

    def _dispatch(self, conn: Conn, raw: str | bytes, recv_us: int) -> None:
        """Handle one message now; malformed ones are counted, never raised."""
        try:
            msg = orjson.loads(raw)
            if not isinstance(msg, dict):
                raise MalformedMessage("not an object")
            channel = msg.get("channel")
            if channel == "push.deal":
                self._on_deals(msg, recv_us)
            elif channel == "push.depth":
                self._on_depth(conn, msg, recv_us)
            elif channel == "push.depth.full" and self.full_limit is not None:
                self._on_full_depth(conn, msg, recv_us)
            elif channel == "pong":
                pass
            elif isinstance(channel, str) and channel.startswith("rs.sub."):
                self._on_ack(conn, channel[len("rs.sub.") :], msg)
            elif channel == "rs.error":
                self._on_refusal(conn, msg)
            else:
                raise MalformedMessage(f"unexpected channel {str(channel)[:40]!r}")
        except orjson.JSONDecodeError:
            self.malformed("invalid JSON", raw)
        except MalformedMessage as exc:
            self.malformed(exc.kind, raw)

    def _on_ack(self, conn: Conn, kind: str, msg: dict[str, Any]) -> None:
        pending: deque[tuple[str, str]] = conn.state["acks"]
        if not pending or pending[0][0] != kind:
            raise MalformedMessage("acknowledgement of nothing asked")
        _, symbol = pending.popleft()
        if msg.get("data") != "success":
            self.refuse(symbol, f"sub.{kind}", str(msg.get("data")))

    def _on_refusal(self, conn: Conn, msg: dict[str, Any]) -> None:
        pending: deque[tuple[str, str]] = conn.state["acks"]
        if not pending:
            raise MalformedMessage("rs.error with nothing asked")
        kind, symbol = pending.popleft()
        self.refuse(symbol, f"sub.{kind}", str(msg.get("data")))

    def _on_deals(self, msg: dict[str, Any], recv_us: int) -> None:
        symbol = msg.get("symbol")
        if symbol not in self._next_id:
            raise MalformedMessage("deal of a symbol not subscribed")
        for deal in parse_deals(msg):
            trade_id = self._next_id[symbol]
            self._next_id[symbol] = trade_id + 1
            qty = self._base_qty(symbol, deal.qty)
            self.put_trade(symbol, deal.ts_us, trade_id, deal.price, qty, deal.side, recv_us)

    def _on_full_depth(self, conn: Conn, msg: dict[str, Any], recv_us: int) -> None:
        symbol = msg.get("symbol")
        if not isinstance(symbol, str) or symbol not in self._books:
            raise MalformedMessage("depth of a symbol not subscribed")
        push = parse_depth(msg)
        versions: dict[str, int] = conn.state.setdefault("full_versions", {})
        if push.version <= versions.get(symbol, -1):
            self.counters.out_of_order += 1
            return
        versions[symbol] = push.version
        if self.is_primary(conn):
            bids = self._base(symbol, sorted(push.bids, reverse=True)[: self.depth])
            asks = self._base(symbol, sorted(push.asks)[: self.depth])
            self.put_book_row(symbol, push.ts_us, book_row(bids, asks, self.depth), recv_us)

    # ------------------------------------------------------------------ book procedure

    def _on_depth(self, conn: Conn, msg: dict[str, Any], recv_us: int) -> None:
        symbol = msg.get("symbol")
        books: dict[str, _BookSync] = conn.state.get("books", {})
        sync = books.get(symbol) if isinstance(symbol, str) else None
        if sync is None or not isinstance(symbol, str):
            raise MalformedMessage("depth of a symbol not subscribed")
        push = parse_depth(msg)
        if sync.synced:
            if push.version <= sync.version:
                self.counters.out_of_order += 1
                return
            if push.version != sync.version + 1:
                self._break(conn, symbol, sync, push)
                return
            self._apply(sync, push)
        elif sync.snapshot_version is not None:
            if not self._bridge(conn, symbol, sync, push):
                return
        else:
            keep_last(sync.buffer, push, MAX_BUFFERED_PUSHES)
            return
        self.put_top(conn, symbol, sync.book, push.ts_us, recv_us)

    def _apply(self, sync: _BookSync, push: DepthData) -> None:
        sync.book.apply(push.bids, push.asks)
        sync.version = push.version

    def _bridge(self, conn: Conn, symbol: str, sync: _BookSync, push: DepthData) -> bool:
        assert sync.snapshot_version is not None
        if push.version <= sync.snapshot_version:
            return False
        if push.version != sync.snapshot_version + 1:  # updates between snapshot and stream lost
            self.counters.resyncs += 1
            sync.snapshot_version = None
            sync.buffer = [push]
            conn.spawn(self._fetch_snapshot(conn, symbol, attempt=1))
            return False
        self._apply(sync, push)
        sync.snapshot_version = None
        sync.synced = True
        return True

    def _break(self, conn: Conn, symbol: str, sync: _BookSync, push: DepthData) -> None:
        self.counters.sequence_breaks += 1
        lost = push.version - sync.version - 1
        if self.is_primary(conn):
            why = f"version {push.version} after {sync.version}"
            self.open_gap(symbol, DataType.ORDERBOOK, GapCause.SEQUENCE_BREAK, why, lost=lost)
        sync.synced = False
        sync.book.clear()
        sync.buffer = [push]
        conn.spawn(self._fetch_snapshot(conn, symbol))

    async def _fetch_snapshot(self, conn: Conn, symbol: str, attempt: int = 0) -> None:
        snap = await self.fetch_snapshot(
            conn,
            symbol,
            lambda: self._http.get(
                f"/api/v1/contract/depth/{symbol}", params={"limit": self.snapshot_limit}
            ),
            parse_depth_snapshot,
            attempt,
        )
        if snap is None:
            return
        sync: _BookSync = conn.state["books"][symbol]
        sync.book.reset(snap.bids, snap.asks)
        sync.snapshot_version = snap.version
        buffered, sync.buffer = sync.buffer, []
        last_ts = snap.ts_us
        for i, push in enumerate(buffered):
            if sync.synced:
                if push.version <= sync.version:
                    continue
                if push.version != sync.version + 1:
                    self._break(conn, symbol, sync, push)
                    sync.buffer.extend(buffered[i + 1 :])
                    return
                self._apply(sync, push)
                last_ts = push.ts_us
            elif sync.snapshot_version is None:  # stale snapshot: a new fetch is under way
                sync.buffer.extend(buffered[i + 1 :])
                return
            elif self._bridge(conn, symbol, sync, push):
                last_ts = push.ts_us
        if sync.synced:
            await self.emit_top(conn, symbol, sync.book, last_ts, now_us())
