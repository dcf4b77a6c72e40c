"""Binance USD-M futures messages, read into plain tuples.

Shapes (Binance USDⓈ-M futures WebSocket market streams and REST market data):

- ``aggTrade``: ``{"e":"aggTrade","E":event ms,"s":"BTCUSDT","a":aggregate id,
  "p":"price","q":"qty","f":first trade id,"l":last trade id,"T":trade ms,
  "m":buyer is maker}``. ``m`` true means the taker sold.
- ``depthUpdate``: ``{"e":"depthUpdate","E":event ms,"T":transaction ms,"s":...,
  "U":first update id,"u":final update id,"pu":previous event's final id,
  "b":[["price","qty"],...],"a":[...]}``; a quantity is the level's new total,
  ``"0"`` removes the level.
- REST ``GET /fapi/v1/depth``: ``{"lastUpdateId":...,"E":...,"T":...,
  "bids":[["price","qty"],...],"asks":[...]}``.
- Combined streams wrap an event as ``{"stream":"<name>","data":{...}}``; replies to
  ``SUBSCRIBE`` are ``{"result":null,"id":N}`` or ``{"error":{"code":..,"msg":..},"id":N}``.

Every parser raises :class:`MalformedMessage` (with a short kind) on anything
that does not match, so the connector can count it and carry on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ticktape.feeds.contract import SIDE_BUY, SIDE_SELL


class MalformedMessage(ValueError):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


# Named tuples, one per message: cheaper to build than frozen dataclasses (hot path).
class AggTrade(NamedTuple):
    symbol: str
    agg_id: int
    ts_us: int  # trade time
    price: float
    qty: float
    side: int  # the taker's side


class DepthUpdate(NamedTuple):
    symbol: str
    first_id: int  # U
    final_id: int  # u
    prev_final_id: int  # pu
    ts_us: int  # transaction time
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


class DepthSnapshot(NamedTuple):
    last_update_id: int
    ts_us: int
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


def _levels(raw: Any) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q in raw]


def parse_agg_trade(d: dict[str, Any]) -> AggTrade:
    try:
        return AggTrade(
            d["s"],
            int(d["a"]),
            int(d["T"]) * 1000,
            float(d["p"]),
            float(d["q"]),
            SIDE_SELL if d["m"] else SIDE_BUY,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage("aggTrade fields") from exc


def parse_depth_update(d: dict[str, Any]) -> DepthUpdate:
    try:
        return DepthUpdate(
            d["s"],
            int(d["U"]),
            int(d["u"]),
            int(d["pu"]),
            int(d.get("T") or d["E"]) * 1000,
            _levels(d["b"]),
            _levels(d["a"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage("depthUpdate fields") from exc


def parse_depth_snapshot(d: Any) -> DepthSnapshot:
    try:
        return DepthSnapshot(
            int(d["lastUpdateId"]),
            int(d.get("T") or d.get("E") or 0) * 1000,
            _levels(d["bids"]),
            _levels(d["asks"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage("depth snapshot") from exc


def unwrap(d: Any) -> dict[str, Any]:
    """The event of a raw or combined-stream message."""
    if not isinstance(d, dict):
        raise MalformedMessage("not an object")
    data = d.get("data")
    if "stream" in d and isinstance(data, dict):
        return data
    return d
