"""Binance USD-M message parsers, on samples written from the documented shapes."""

from __future__ import annotations

import json

import pytest

from ticktape.feeds.binance import (
    MalformedMessage,
    parse_agg_trade,
    parse_depth_snapshot,
    parse_depth_update,
    unwrap,
)
from ticktape.feeds.contract import SIDE_BUY, SIDE_SELL

AGG_TRADE = """{"e":"aggTrade","E":123456789,"s":"BTCUSDT","a":5933014,"p":"0.001",
"q":"100","f":100,"l":105,"T":123456785,"m":true}"""

DEPTH_UPDATE = """{"e":"depthUpdate","E":123456789,"T":123456788,"s":"BTCUSDT","U":157,
"u":160,"pu":149,"b":[["0.0024","10"]],"a":[["0.0026","100"],["0.0027","0"]]}"""

SNAPSHOT = """{"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,
"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}"""


def test_agg_trade_every_field() -> None:
    t = parse_agg_trade(json.loads(AGG_TRADE))
    assert t.symbol == "BTCUSDT"
    assert t.agg_id == 5933014
    assert t.ts_us == 123456785 * 1000  # the trade time T, not the event time E
    assert t.price == 0.001
    assert t.qty == 100.0
    assert t.side == SIDE_SELL  # buyer is maker: the taker sold


def test_agg_trade_taker_buy() -> None:
    d = json.loads(AGG_TRADE)
    d["m"] = False
    assert parse_agg_trade(d).side == SIDE_BUY


def test_depth_update_every_field() -> None:
    ev = parse_depth_update(json.loads(DEPTH_UPDATE))
    assert (ev.symbol, ev.first_id, ev.final_id, ev.prev_final_id) == ("BTCUSDT", 157, 160, 149)
    assert ev.ts_us == 123456788 * 1000  # transaction time
    assert ev.bids == [(0.0024, 10.0)]
    assert ev.asks == [(0.0026, 100.0), (0.0027, 0.0)]  # quantity 0: remove the level


def test_depth_update_without_transaction_time_uses_event_time() -> None:
    d = json.loads(DEPTH_UPDATE)
    del d["T"]
    assert parse_depth_update(d).ts_us == 123456789 * 1000


def test_snapshot_every_field() -> None:
    snap = parse_depth_snapshot(json.loads(SNAPSHOT))
    assert snap.last_update_id == 1027024
    assert snap.ts_us == 1589436922959 * 1000
    assert snap.bids == [(4.0, 431.0)]
    assert snap.asks == [(4.000002, 12.0)]


def test_combined_stream_wrapper_is_unwrapped() -> None:
    inner = json.loads(AGG_TRADE)
    assert unwrap({"stream": "btcusdt@aggTrade", "data": inner}) == inner
    assert unwrap(inner) == inner


@pytest.mark.parametrize(
    ("parser", "message"),
    [
        (parse_agg_trade, {"e": "aggTrade", "s": "BTCUSDT"}),
        (parse_agg_trade, {**json.loads(AGG_TRADE), "p": "not a number"}),
        (parse_depth_update, {**json.loads(DEPTH_UPDATE), "b": [["1"]]}),
        (parse_depth_update, {**json.loads(DEPTH_UPDATE), "pu": None}),
        (parse_depth_snapshot, {"bids": [], "asks": []}),
        (parse_depth_snapshot, ["not", "an", "object"]),
    ],
)
def test_malformed_messages_raise_malformed(parser: object, message: object) -> None:
    with pytest.raises(MalformedMessage):
        parser(message)  # type: ignore[operator]


def test_unwrap_rejects_non_objects() -> None:
    with pytest.raises(MalformedMessage):
        unwrap([1, 2])
