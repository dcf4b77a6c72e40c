"""MEXC contract message parsers, on samples written from the documented shapes."""

from __future__ import annotations

import json

import pytest

from ticktape.feeds.contract import SIDE_BUY, SIDE_SELL
from ticktape.feeds.mexc import (
    MalformedMessage,
    NoContractDetail,
    base_quantity,
    full_depth_fits,
    parse_contract_size,
    parse_deals,
    parse_depth,
    parse_depth_snapshot,
)

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


# GET /api/v1/contract/detail?symbol=BTC_USDT, abridged from the documented example
DETAIL = """{"success":true,"code":0,"data":{"symbol":"BTC_USDT","displayName":"BTC_USDT永续",
"displayNameEn":"BTC_USDT PERPETUAL","positionOpenType":3,"baseCoin":"BTC","quoteCoin":"USDT",
"settleCoin":"USDT","contractSize":0.0001,"minLeverage":1,"maxLeverage":500,"priceScale":1,
"volScale":0,"amountScale":4,"priceUnit":0.1,"volUnit":1,"minVol":1,"maxVol":400000,
"state":0,"apiAllowed":false}}"""

# without ?symbol= the data is a list of contracts
DETAILS = """{"success":true,"code":0,"data":[
{"symbol":"CLO_USDT","baseCoin":"CLO","contractSize":10,"volUnit":1},
{"symbol":"BTC_USDT","baseCoin":"BTC","contractSize":0.0001,"volUnit":1}]}"""


def test_contract_size_from_the_documented_detail() -> None:
    assert parse_contract_size(json.loads(DETAIL), "BTC_USDT") == 0.0001
    assert parse_contract_size(json.loads(DETAILS), "CLO_USDT") == 10.0
    assert parse_contract_size(json.loads(DETAILS), "BTC_USDT") == 0.0001


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"success": False, "code": 1001, "message": "contract not exists"}, "refused"),
        ({"success": True, "code": 0, "data": None}, "no contract detail"),
        ({"success": True, "code": 0, "data": []}, "no contract detail"),
        ({"success": True, "data": {"symbol": "ETH_USDT", "contractSize": 0.01}}, "no contract"),
        ({"success": True, "data": {"symbol": "BTC_USDT"}}, "without a contractSize"),
        ({"success": True, "data": {"symbol": "BTC_USDT", "contractSize": "x"}}, "without a"),
        ({"success": True, "data": {"symbol": "BTC_USDT", "contractSize": 0}}, "contractSize 0"),
        ({"success": True, "data": {"symbol": "BTC_USDT", "contractSize": -1}}, "contractSize -1"),
        (["not", "an", "object"], "refused"),
        (None, "refused"),
    ],
)
def test_a_missing_or_unusable_contract_detail_is_refused(body: object, why: str) -> None:
    with pytest.raises(NoContractDetail, match=why):
        parse_contract_size(body, "BTC_USDT")


@pytest.mark.parametrize(("depth", "fits"), [(1, True), (5, True), (20, True), (21, False)])
def test_full_depth_serves_books_of_at_most_20_levels(depth: int, fits: bool) -> None:
    assert full_depth_fits(depth) is fits


@pytest.mark.parametrize("size", [0.0001, 0.001, 0.01, 0.025, 0.5, 1.0, 10.0, 100.0, 0.3, 0.0007])
def test_contracts_to_base_quantities_equal_the_decimal_product(size: float) -> None:
    """Whatever path a size takes (divide by 10^k, multiply by a whole number, or
    multiply and round), the stored quantity is the double nearest contracts * size."""
    mul, div, rounded = base_quantity(size)
    for contracts in [*range(0, 2_000), 12_345.0, 400_000.0, 0.5, 2.5]:
        q = float(contracts)
        got = round(q * mul, 12) if rounded else q * mul / div
        assert got == round(q * size, 12), (size, q)
    assert (base_quantity(0.0001), base_quantity(10.0)) == (
        (1.0, 10_000.0, False),
        (10.0, 1.0, False),
    )
    assert base_quantity(0.3)[2] is True  # no exact path: rounded
