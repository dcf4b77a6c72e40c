"""What every fake exchange shares: one local port for its WebSocket and its REST snapshots.

A fake exchange is scripted from the test (or benchmark) that owns it: it sends
exactly what it is told to, records what it sent, and can misbehave on demand —
drop every connection, go silent, refuse a subscription, send malformed text,
serve a stale snapshot, close connections at a (compressed) maximum age.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


@dataclass
class FakeConn:
    ws: ServerConnection
    opened: float = field(default_factory=time.monotonic)
    subs: set[tuple[str, str]] = field(default_factory=set)  # (symbol, "trades"|"depth")
    silent: bool = False
    messages_in: list[Any] = field(default_factory=list)


class FakeExchange(ABC):
    """A local exchange; ``async with`` starts it on a free port and stops it."""

    def __init__(self, *, max_age_s: float | None = None) -> None:
        self.max_age_s = max_age_s  # close connections this old (the exchange's lifetime)
        self.conns: list[FakeConn] = []
        self.connections_total = 0
        self.refused: set[str] = set()
        self.snapshot_requests = 0
        self._server: Server | None = None
        self._changed = asyncio.Condition()
        self.port = 0

    async def __aenter__(self) -> FakeExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            ping_interval=None,
            compression=None,
            max_queue=None,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        for conn in list(self.conns):
            conn.ws.transport.abort()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._server.wait_closed()
            self._server = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ protocol (subclass)

    @abstractmethod
    def rest(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        """Answer a REST request: status and JSON body."""

    @abstractmethod
    async def on_client_message(self, conn: FakeConn, msg: Any) -> None:
        """Handle a parsed message from a client."""

    def client_timeout_s(self) -> float | None:
        """Close a client that sends nothing for this long (None: never)."""
        return None

    # ------------------------------------------------------------------ scripting

    async def wait_for(self, predicate: Any, within_s: float = 10.0) -> None:
        """Wait until ``predicate()`` is true (re-checked whenever the exchange's state changes)."""
        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(predicate)

    async def changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def subscribed(self, symbol: str, kind: str) -> list[FakeConn]:
        return [c for c in self.conns if (symbol, kind) in c.subs and not c.silent]

    async def wait_subscribed(
        self, symbols: tuple[str, ...], kinds: tuple[str, ...], connections: int = 1
    ) -> None:
        def ready() -> bool:
            return all(len(self.subscribed(s, k)) >= connections for s in symbols for k in kinds)

        await self.wait_for(ready)

    async def broadcast(self, symbol: str, kind: str, payload: Any) -> int:
        """Send to every connection subscribed; how many got it."""
        text = json.dumps(payload, separators=(",", ":"))
        sent = 0
        for conn in self.subscribed(symbol, kind):
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(text)
                sent += 1
        return sent

    async def send_raw(self, text: str) -> int:
        """Send ``text`` as is (malformed JSON, say) to every connection; returns the
        messages delivered."""
        sent = 0
        for conn in list(self.conns):
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(text)
                sent += 1
        return sent

    async def drop(self) -> None:
        """Cut every connection without a closing handshake, as a network failure does."""
        for conn in list(self.conns):
            conn.ws.transport.abort()
        await self.wait_for(lambda: not self.conns)

    async def go_silent(self) -> None:
        """Current connections stay open but go quiet both ways, as a black-holed network does."""
        for conn in self.conns:
            conn.silent = True
            conn.ws.transport.pause_reading()  # not even protocol pings are answered

    # ------------------------------------------------------------------ server side

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        url = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        status, body = self.rest(url.path, query)
        await self.changed()
        response = connection.respond(status, json.dumps(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        conn = FakeConn(ws)
        self.conns.append(conn)
        self.connections_total += 1
        await self.changed()
        ager = asyncio.create_task(self._age_out(conn)) if self.max_age_s else None
        try:
            while True:
                timeout = self.client_timeout_s()
                try:
                    async with asyncio.timeout(timeout):
                        raw = await ws.recv()
                except TimeoutError:
                    await ws.close(1000, "no ping from the client")
                    break
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                conn.messages_in.append(msg)
                if not conn.silent:
                    await self.on_client_message(conn, msg)
                await self.changed()
        except ConnectionClosed:
            pass
        finally:
            if ager is not None:
                ager.cancel()
            self.conns.remove(conn)
            await self.changed()

    async def _age_out(self, conn: FakeConn) -> None:
        assert self.max_age_s is not None
        await asyncio.sleep(self.max_age_s)
        await conn.ws.close(1000, "connection lifetime reached")


@dataclass
class SymbolBook:
    """One symbol's true book on a fake exchange: 20 levels a side around ``price``,
    ``tick`` apart (prices rounded to 0.1, which both fakes' ticks are multiples of),
    moved one level a side per depth update."""

    price: float = 100.0
    tick: float = 0.1
    seed_qty: float = 1.0  # level i (1..20) starts with i x this
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    step: int = 0  # counts trades and depth updates: what the next ones look like
    stale: list[dict[str, Any]] = field(default_factory=list)  # snapshots to serve instead

    def seed(self) -> None:
        for i in range(1, 21):
            self.bids[round(self.price - i * self.tick, 1)] = self.seed_qty * i
            self.asks[round(self.price + i * self.tick, 1)] = self.seed_qty * i

    def move(self) -> tuple[float, float, float, float]:
        """The next update, applied: (bid price, bid qty, ask price, ask qty); qty 0 removes."""
        self.step += 1
        k = self.step
        bid_px = round(self.price - (1 + k % 20) * self.tick, 1)
        ask_px = round(self.price + (1 + (k * 7) % 20) * self.tick, 1)
        bid_qty = 0.0 if k % 9 == 0 else float(k % 13 + 1)
        ask_qty = float(k % 11 + 1)
        for side, px, qty in ((self.bids, bid_px, bid_qty), (self.asks, ask_px, ask_qty)):
            if qty:
                side[px] = qty
            else:
                side.pop(px, None)
        return bid_px, bid_qty, ask_px, ask_qty

    def top(self, limit: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best ``limit`` bids (highest first) and asks (lowest first)."""
        return (
            sorted(self.bids.items(), reverse=True)[:limit],
            sorted(self.asks.items())[:limit],
        )


S = TypeVar("S", bound=SymbolBook)


class BookExchange(FakeExchange, Generic[S]):
    """A fake exchange that keeps a true book per symbol (:class:`SymbolBook`), so that
    its REST snapshots agree with the depth updates it sent."""

    def __init__(self, *, max_age_s: float | None = None) -> None:
        super().__init__(max_age_s=max_age_s)
        self.symbols: dict[str, S] = {}

    @abstractmethod
    def _new_symbol(self) -> S:
        """A symbol's state before its book is seeded."""

    @abstractmethod
    def _next_depth(self, symbol: str) -> dict[str, Any]:
        """The next depth message of ``symbol`` (its book moved by it)."""

    @abstractmethod
    def _snapshot(self, state: S, limit: int) -> dict[str, Any]:
        """The REST snapshot body of a book as it is now."""

    def _sym(self, symbol: str) -> S:
        state = self.symbols.get(symbol)
        if state is None:
            state = self.symbols[symbol] = self._new_symbol()
            state.seed()
        return state

    def serve_snapshot(self, symbol: str, query: dict[str, str]) -> tuple[int, Any]:
        """The answer to a snapshot request: a stale one if scripted, else the book now."""
        self.snapshot_requests += 1
        state = self._sym(symbol)
        if state.stale:
            return 200, state.stale.pop(0)
        return 200, self._snapshot(state, int(query.get("limit", 1000)))

    def encoded_depth(self, symbol: str, n: int) -> list[str]:
        """The next ``n`` depth messages, encoded but not sent (to blast them, say)."""
        return [json.dumps(self._next_depth(symbol), separators=(",", ":")) for _ in range(n)]

    def skip_depth(self, symbol: str, n: int) -> None:
        """Depth updates that change the book but are never sent (a sequence break)."""
        for _ in range(n):
            self._next_depth(symbol)

    def stale_snapshot(self, symbol: str, times: int = 1) -> None:
        """The next ``times`` snapshots are the book as it is now, however late they are asked."""
        state = self._sym(symbol)
        state.stale.extend(self._snapshot(state, 1000) for _ in range(times))

    def book(self, symbol: str, depth: int) -> tuple[list[tuple[float, float]], ...]:
        """The true top of the book."""
        return self._sym(symbol).top(depth)
