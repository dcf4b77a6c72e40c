"""A local MEXC contract exchange: ``/edge`` plus ``/api/v1/contract/depth/{symbol}`` and
``/api/v1/contract/detail?symbol=`` (each symbol's ``contractSize``: ``contract_sizes``,
else ``default_contract_size``; ``None`` there means the symbol has no detail).

It speaks the documented shapes: ``sub.deal`` / ``sub.depth`` acknowledged by
``rs.sub.*`` or refused by ``rs.error``, ``push.deal`` without trade ids,
``push.depth`` whose ``version`` grows by one per update, ``ping`` → ``pong``,
and it closes a client that sends nothing for ``client_timeout_s`` (a minute on
the real exchange).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ticktape.feeds.fakes._server import BookExchange, FakeConn, SymbolBook

TICK = 0.5
CLIENT_TIMEOUT_S = 60.0


@dataclass
class SentDeal:
    symbol: str
    ts_ms: int
    price: float
    qty: float
    side: int  # 1 buy, 2 sell


@dataclass
class _Symbol(SymbolBook):
    version: int = 10_000


class FakeMexc(BookExchange[_Symbol]):
    def __init__(
        self,
        *,
        max_age_s: float | None = None,
        client_timeout_s: float = CLIENT_TIMEOUT_S,
        contract_sizes: dict[str, float] | None = None,
        default_contract_size: float | None = 1.0,
    ) -> None:
        super().__init__(max_age_s=max_age_s)
        self._client_timeout_s = client_timeout_s
        self.contract_sizes = dict(contract_sizes or {})
        self.default_contract_size = default_contract_size
        self.detail_requests = 0
        self.busy_details = 0  # answer this many contract-detail requests 429 (too many)
        self.deals: list[SentDeal] = []
        self.pings = 0

    def client_timeout_s(self) -> float | None:
        return self._client_timeout_s

    @property
    def ws_url(self) -> str:
        return f"{self.ws_base}/edge"

    def _new_symbol(self) -> _Symbol:
        return _Symbol(price=60_000.0, tick=TICK, seed_qty=10.0)

    # ------------------------------------------------------------------ protocol

    async def on_client_message(self, conn: FakeConn, msg: Any) -> None:
        now = int(time.time() * 1000)
        method = msg.get("method") if isinstance(msg, dict) else None
        if method == "ping":
            self.pings += 1
            await conn.ws.send(json.dumps({"channel": "pong", "data": now}))
            return
        if method in ("sub.deal", "sub.depth", "sub.depth.full"):
            symbol = (msg.get("param") or {}).get("symbol", "")
            if symbol in self.refused:
                reply = {
                    "channel": "rs.error",
                    "data": f"Contract [{symbol}] not exists",
                    "ts": now,
                }
                await conn.ws.send(json.dumps(reply))
                return
            self._sym(symbol)
            kinds = {"sub.deal": "trades", "sub.depth": "depth", "sub.depth.full": "depth.full"}
            conn.subs.add((symbol, kinds[method]))
            await conn.ws.send(
                json.dumps({"channel": f"rs.{method}", "data": "success", "ts": now})
            )
            return
        await conn.ws.send(json.dumps({"channel": "rs.error", "data": "unknown method", "ts": now}))

    def rest(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path == "/api/v1/contract/detail":
            return self._detail(query.get("symbol", ""))
        prefix = "/api/v1/contract/depth/"
        if not path.startswith(prefix):
            return 404, {"success": False, "code": 404}
        return self.serve_snapshot(path[len(prefix) :], query)

    def _detail(self, symbol: str) -> tuple[int, Any]:
        self.detail_requests += 1
        if self.busy_details > 0:
            self.busy_details -= 1
            return 429, {"success": False, "code": 510, "message": "too many requests"}
        size = self.contract_sizes.get(symbol, self.default_contract_size)
        if size is None:
            return 200, {"success": False, "code": 1001, "message": "contract not exists"}
        base, _, quote = symbol.partition("_")
        data = {
            "symbol": symbol,
            "displayNameEn": f"{symbol} PERPETUAL",
            "baseCoin": base,
            "quoteCoin": quote,
            "settleCoin": quote,
            "contractSize": size,
            "priceUnit": TICK,
            "volUnit": 1,
            "minVol": 1,
        }
        return 200, {"success": True, "code": 0, "data": data}

    def _snapshot(self, state: _Symbol, limit: int) -> dict[str, Any]:
        bids, asks = state.top(limit)
        return {
            "success": True,
            "code": 0,
            "data": {
                "asks": [[p, q, 1] for p, q in asks],
                "bids": [[p, q, 1] for p, q in bids],
                "version": state.version,
                "timestamp": int(time.time() * 1000),
            },
        }

    # ------------------------------------------------------------------ scripting

    async def send_deals(
        self, symbol: str, n: int, *, per_message: int = 1, same: bool = False
    ) -> list[SentDeal]:
        """``n`` deals, ``per_message`` to a push; ``same``: identical time, price and size."""
        state = self._sym(symbol)
        out: list[SentDeal] = []
        for _ in range(n):
            state.step += 1
            k = 0 if same else state.step
            out.append(
                SentDeal(
                    symbol,
                    int(time.time() * 1000),
                    state.price + (k % 7 - 3) * TICK,
                    float(1 + k % 5),
                    1 + k % 2,
                )
            )
        if same:
            out = [SentDeal(symbol, out[0].ts_ms, d.price, d.qty, d.side) for d in out]
        self.deals.extend(out)
        for i in range(0, n, per_message):
            chunk = [
                {"p": d.price, "v": d.qty, "T": d.side, "O": 1, "M": 2, "t": d.ts_ms}
                for d in out[i : i + per_message]
            ]
            data: Any = chunk[0] if per_message == 1 else chunk
            push = {"channel": "push.deal", "data": data, "symbol": symbol, "ts": chunk[-1]["t"]}
            await self.broadcast(symbol, "trades", push)
        return out

    def _next_depth(self, symbol: str) -> dict[str, Any]:
        state = self._sym(symbol)
        state.version += 1
        bid_px, bid_qty, ask_px, ask_qty = state.move()
        return {
            "channel": "push.depth",
            "data": {
                "asks": [[ask_px, ask_qty, 1]],
                "bids": [[bid_px, bid_qty, 0 if bid_qty == 0 else 1]],
                "version": state.version,
            },
            "symbol": symbol,
            "ts": int(time.time() * 1000),
        }

    async def send_depth(self, symbol: str, n: int) -> None:
        for _ in range(n):
            await self.broadcast(symbol, "depth", self._next_depth(symbol))

    async def send_full_depth(self, symbol: str, limit: int) -> None:
        """One ``push.depth.full``: the top ``limit`` levels of the book as it is now."""
        state = self._sym(symbol)
        state.version += 1
        bids, asks = state.top(limit)
        data = {
            "asks": [[p, q, 1] for p, q in asks],
            "bids": [[p, q, 1] for p, q in bids],
            "version": state.version,
        }
        now = int(time.time() * 1000)
        push = {"channel": "push.depth.full", "data": data, "symbol": symbol, "ts": now}
        await self.broadcast(symbol, "depth.full", push)
