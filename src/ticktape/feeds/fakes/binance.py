"""A local Binance USD-M futures exchange: ``/public/ws``, ``/market/ws``, ``/fapi/v1/depth``.

It speaks the documented shapes (JSON ``SUBSCRIBE`` with ids, ``aggTrade`` and
``depthUpdate`` events, the REST depth snapshot) and keeps a true book per
symbol so that its snapshots agree with the updates it sent. Each depth event
covers ``updates_per_event`` update ids (``U``..``u``) and names the previous
event's ``u`` as ``pu``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from ticktape.feeds.fakes._server import BookExchange, FakeConn, SymbolBook

TICK = 0.1


@dataclass
class SentTrade:
    symbol: str
    agg_id: int
    ts_ms: int
    price: float
    qty: float
    buyer_maker: bool


@dataclass
class _Symbol(SymbolBook):
    next_agg: int = 1_000
    update_id: int = 5_000  # the book's last update id


class FakeBinance(BookExchange[_Symbol]):
    def __init__(self, *, max_age_s: float | None = None, updates_per_event: int = 3) -> None:
        super().__init__(max_age_s=max_age_s)
        self.updates_per_event = updates_per_event
        self.trades: list[SentTrade] = []
        self.depth_events: list[dict[str, Any]] = []

    def _new_symbol(self) -> _Symbol:
        return _Symbol(price=100.0, tick=TICK)

    @property
    def ws_public(self) -> str:
        return f"{self.ws_base}/public/ws"

    @property
    def ws_market(self) -> str:
        return f"{self.ws_base}/market/ws"

    # ------------------------------------------------------------------ protocol

    async def on_client_message(self, conn: FakeConn, msg: Any) -> None:
        if not isinstance(msg, dict) or msg.get("method") != "SUBSCRIBE":
            await conn.ws.send('{"error":{"code":2,"msg":"Invalid request"},"id":null}')
            return
        for stream in msg.get("params", []):
            name, _, kind = stream.partition("@")
            symbol = name.upper()
            if symbol in self.refused:
                reply = {"error": {"code": 2, "msg": f"Invalid symbol {symbol}"}, "id": msg["id"]}
                await conn.ws.send(_dumps(reply))
                return
            self._sym(symbol)
            conn.subs.add((symbol, "trades" if kind == "aggTrade" else "depth"))
        await conn.ws.send(_dumps({"result": None, "id": msg["id"]}))

    def rest(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path != "/fapi/v1/depth" or "symbol" not in query:
            return 400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbol'"}
        return self.serve_snapshot(query["symbol"], query)

    def _snapshot(self, state: _Symbol, limit: int) -> dict[str, Any]:
        now = int(time.time() * 1000)
        bids, asks = state.top(limit)
        return {
            "lastUpdateId": state.update_id,
            "E": now,
            "T": now,
            "bids": [[str(p), str(q)] for p, q in bids],
            "asks": [[str(p), str(q)] for p, q in asks],
        }

    # ------------------------------------------------------------------ scripting

    async def send_trades(self, symbol: str, n: int) -> list[SentTrade]:
        state = self._sym(symbol)
        out = []
        for _ in range(n):
            state.step += 1
            t = SentTrade(
                symbol,
                state.next_agg,
                int(time.time() * 1000),
                round(state.price + (state.step % 7 - 3) * TICK, 1),
                float(1 + state.step % 5),
                state.step % 2 == 0,
            )
            state.next_agg += 1
            self.trades.append(t)
            out.append(t)
            await self.broadcast(symbol, "trades", _agg_trade(t))
        return out

    async def resend_trades(self, trades: list[SentTrade]) -> int:
        """Send trades already sent again, as they were (the client must drop them as
        duplicates); returns the messages delivered."""
        delivered = 0
        for t in trades:
            delivered += await self.broadcast(t.symbol, "trades", _agg_trade(t))
        return delivered

    def skip_trades(self, symbol: str, n: int) -> None:
        """Trades that happen but are never sent: the client sees ``a`` jump by ``n``."""
        self._sym(symbol).next_agg += n

    def _next_depth(self, symbol: str) -> dict[str, Any]:
        state = self._sym(symbol)
        first = state.update_id + 1
        last = state.update_id + self.updates_per_event
        pu = state.update_id
        state.update_id = last
        bid_px, bid_qty, ask_px, ask_qty = state.move()
        now = int(time.time() * 1000)
        return {
            "e": "depthUpdate",
            "E": now,
            "T": now,
            "s": symbol,
            "U": first,
            "u": last,
            "pu": pu,
            "b": [[str(bid_px), str(bid_qty)]],
            "a": [[str(ask_px), str(ask_qty)]],
        }

    async def send_depth(self, symbol: str, n: int) -> None:
        for _ in range(n):
            event = self._next_depth(symbol)
            self.depth_events.append(event)
            await self.broadcast(symbol, "depth", event)

    async def ping_clients(self, within_s: float = 5.0) -> int:
        """Send a ping frame to every connection; how many answered with a pong in time."""
        answered = 0
        for conn in list(self.conns):
            waiter = await conn.ws.ping()
            try:
                async with asyncio.timeout(within_s):
                    await waiter
                answered += 1
            except TimeoutError:
                pass
        return answered


def _agg_trade(t: SentTrade) -> dict[str, Any]:
    return {
        "e": "aggTrade",
        "E": t.ts_ms,
        "s": t.symbol,
        "a": t.agg_id,
        "p": str(t.price),
        "q": str(t.qty),
        "f": t.agg_id * 3,
        "l": t.agg_id * 3 + 2,
        "T": t.ts_ms,
        "m": t.buyer_maker,
    }


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
