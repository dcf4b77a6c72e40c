"""MEXC futures (contract) messages, read into plain tuples.

Shapes (MEXC contract WebSocket API, ``wss://contract.mexc.com/edge``, and its
REST market endpoints):

- subscribe ``{"method":"sub.deal","param":{"symbol":"BTC_USDT"}}``; acknowledged by
  ``{"channel":"rs.sub.deal","data":"success","ts":ms}``; a refusal is
  ``{"channel":"rs.error","data":"<reason>","ts":ms}``.
- ``push.deal``: ``{"channel":"push.deal","symbol":"BTC_USDT","ts":ms,"data":{"p":price,
  "v":quantity,"T":1 buy|2 sell,"O":open/close flag,"M":self-trade flag,"t":trade ms}}``;
  ``data`` may also be a list of such deals. A deal carries no trade id.
- ``push.depth`` (incremental, subscribed with ``"compress": false`` so that every
  version follows the previous one): ``{"channel":"push.depth","symbol":...,"ts":ms,
  "data":{"asks":[[price, quantity, order count],...],"bids":[...],"version":N}}``;
  a quantity is the level's new total, 0 removes the level.
- ``push.depth.full`` (``sub.depth.full`` with ``limit`` 5, 10 or 20): the same
  ``data`` holding the whole top of the book.
- REST ``GET /api/v1/contract/depth/{symbol}``: ``{"success":true,"code":0,"data":
  {"asks":[[price, quantity, order count],...],"bids":[...],"version":N,"timestamp":ms}}``.
- ping ``{"method":"ping"}`` → ``{"channel":"pong","data":ms}``; the server closes a
  connection that sends nothing for a minute.

- REST ``GET /api/v1/contract/detail?symbol=BTC_USDT``: ``{"success":true,"code":0,
  "data":{"symbol":"BTC_USDT","baseCoin":"BTC","quoteCoin":"USDT","contractSize":0.0001,
  "priceUnit":0.1,"volUnit":1,...}}`` (``data`` is a list of such objects without
  ``symbol``); an unknown contract answers ``success: false`` or no matching ``data``.

Quantities (``v`` of a deal, the second number of a depth level) are in
contracts; one contract is ``contractSize`` of the base asset, per symbol. The
connector converts them to base-asset quantities (see ``_connector.py``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ticktape.feeds.contract import SIDE_BUY, SIDE_SELL


class MalformedMessage(ValueError):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


# Named tuples, one per message: cheaper to build than frozen dataclasses (hot path).
class Deal(NamedTuple):
    ts_us: int
    price: float
    qty: float
    side: int


class DepthData(NamedTuple):
    version: int
    ts_us: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


def _levels(raw: Any) -> list[tuple[float, float]]:
    return [(float(level[0]), float(level[1])) for level in raw]


def _deal(d: dict[str, Any]) -> Deal:
    side = d["T"]
    if side not in (1, 2):
        raise MalformedMessage("deal side")
    return Deal(
        int(d["t"]) * 1000, float(d["p"]), float(d["v"]), SIDE_BUY if side == 1 else SIDE_SELL
    )


def parse_deals(msg: dict[str, Any]) -> list[Deal]:
    """The deals of a ``push.deal`` message, oldest first."""
    try:
        data = msg["data"]
        raw = data if isinstance(data, list) else [data]
        deals = [_deal(d) for d in raw]
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage("push.deal fields") from exc
    deals.sort(key=lambda d: d.ts_us)  # stable: deals at one millisecond keep their order
    return deals


def parse_depth(msg: dict[str, Any]) -> DepthData:
    """A ``push.depth`` / ``push.depth.full`` message."""
    try:
        data = msg["data"]
        return DepthData(
            int(data["version"]),
            int(msg.get("ts") or data.get("ts") or 0) * 1000,
            _levels(data.get("bids", ())),
            _levels(data.get("asks", ())),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise MalformedMessage("push.depth fields") from exc


def parse_depth_snapshot(body: Any) -> DepthData:
    """The REST depth snapshot's body."""
    try:
        if not body.get("success", False):
            raise MalformedMessage(f"depth snapshot refused (code {body.get('code')})")
        data = body["data"]
        return DepthData(
            int(data["version"]),
            int(data.get("timestamp") or 0) * 1000,
            _levels(data["bids"]),
            _levels(data["asks"]),
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise MalformedMessage("depth snapshot") from exc


class NoContractDetail(ValueError):
    """The exchange gave no usable contract detail for a symbol: it cannot be recorded."""


def parse_contract_size(body: Any, symbol: str) -> float:
    """``contractSize`` of ``symbol`` (base asset per contract) from a contract-detail body."""
    if not isinstance(body, dict) or not body.get("success", False):
        code = body.get("code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        raise NoContractDetail(f"contract detail refused (code {code}: {message})")
    data = body.get("data")
    rows = data if isinstance(data, list) else [data]
    for row in rows:
        if isinstance(row, dict) and row.get("symbol") == symbol:
            try:
                size = float(row["contractSize"])
            except (KeyError, TypeError, ValueError) as exc:
                raise NoContractDetail("contract detail without a contractSize") from exc
            if not size > 0 or size == float("inf"):
                raise NoContractDetail(f"contract detail with contractSize {size}")
            return size
    raise NoContractDetail("no contract detail for the symbol")
