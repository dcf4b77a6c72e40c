"""MEXC contract message parsers, on samples written from the documented shapes."""

from __future__ import annotations

import json

import pytest

from ticktape.feeds.contract import SIDE_BUY, SIDE_SELL
from ticktape.feeds.mexc import MalformedMessage, parse_deals, parse_depth, parse_depth_snapshot

DEAL = """{"channel":"push.deal","data":{"M":1,"O":1,"T":1,"p":6866.5,"t":1587442049632,
"v":2096},"symbol":"BTC_USDT","ts":1587442022003}"""

DEALS = """{"channel":"push.deal","symbol":"BTC_USDT","ts":1587442022010,"data":[
{"M":2,"O":3,"T":2,"p":6866.0,"t":1587442049633,"v":5},
{"M":2,"O":3,"T":1,"p":6866.0,"t":1587442049632,"v":5},
{"M":2,"O":3,"T":1,"p":6866.0,"t":1587442049632,"v":5}]}"""

DEPTH = """{"channel":"push.depth","data":{"asks":[[6859.5,3251,1]],"bids":[[6858.0,0,0]],
"version":96801927},"symbol":"BTC_USDT","ts":1587442022003}"""

SNAPSHOT = """{"success":true,"code":0,"data":{"asks":[[108779.2,3240,1],[108779.3,3884,1]],
"bids":[[108779.1,3240,1],[108779,3884,1]],"version":28111438870,"timestamp":1761879567135}}"""


def test_single_deal_every_field() -> None:
    (deal,) = parse_deals(json.loads(DEAL))
    assert deal.ts_us == 1587442049632 * 1000  # the deal's own time t, not the push time
    assert deal.price == 6866.5
    assert deal.qty == 2096.0
    assert deal.side == SIDE_BUY  # T=1


def test_deal_list_is_ordered_by_time_and_keeps_identical_deals() -> None:
    deals = parse_deals(json.loads(DEALS))
    assert [d.ts_us // 1000 for d in deals] == [1587442049632, 1587442049632, 1587442049633]
    # Two deals with the same time, price, size and side are two trades, both kept.
    assert deals[0] == deals[1]
    assert deals[2].side == SIDE_SELL  # T=2


def test_depth_push_every_field() -> None:
    push = parse_depth(json.loads(DEPTH))
    assert push.version == 96801927
    assert push.ts_us == 1587442022003 * 1000
    assert push.asks == [(6859.5, 3251.0)]  # [price, quantity, order count]
    assert push.bids == [(6858.0, 0.0)]  # quantity 0 removes the level


def test_snapshot_every_field() -> None:
    snap = parse_depth_snapshot(json.loads(SNAPSHOT))
    assert snap.version == 28111438870
    assert snap.ts_us == 1761879567135 * 1000
    assert snap.bids == [(108779.1, 3240.0), (108779.0, 3884.0)]
    assert snap.asks[0] == (108779.2, 3240.0)


def test_refused_snapshot_is_malformed() -> None:
    with pytest.raises(MalformedMessage):
        parse_depth_snapshot({"success": False, "code": 1001, "message": "contract not exists"})


@pytest.mark.parametrize(
    "message",
    [
        {"channel": "push.deal", "symbol": "BTC_USDT"},
        {"channel": "push.deal", "data": {"p": 1, "v": 1, "T": 3, "t": 1}},  # unknown side
        {"channel": "push.deal", "data": {"p": "x", "v": 1, "T": 1, "t": 1}},
    ],
)
def test_malformed_deals(message: dict[str, object]) -> None:
    with pytest.raises(MalformedMessage):
        parse_deals(message)


@pytest.mark.parametrize(
    "message",
    [
        {"channel": "push.depth", "data": {"asks": [], "bids": []}},  # no version
        {"channel": "push.depth", "data": {"asks": [[1.0]], "bids": [], "version": 1}},
        {"channel": "push.depth", "data": "nonsense"},
    ],
)
def test_malformed_depth(message: dict[str, object]) -> None:
    with pytest.raises(MalformedMessage):
        parse_depth(message)
