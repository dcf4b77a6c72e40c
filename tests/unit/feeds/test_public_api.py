"""The feed packages' public names, pinned: changing them is a decision, not an accident."""

from __future__ import annotations

import ticktape.feeds.binance
import ticktape.feeds.fakes
import ticktape.feeds.mexc


def test_public_names() -> None:
    assert set(ticktape.feeds.binance.__all__) == {
        "REST_URL", "WS_MARKET_URL", "WS_PUBLIC_URL", "AggTrade", "BinanceEndpoints",
        "BinanceFeed", "DepthSnapshot", "DepthUpdate", "MalformedMessage", "parse_agg_trade",
        "parse_depth_snapshot", "parse_depth_update", "unwrap",
    }  # fmt: skip
    assert set(ticktape.feeds.mexc.__all__) == {
        "REST_URL", "WS_URL", "Deal", "DepthData", "MalformedMessage", "MexcEndpoints",
        "MexcFeed", "parse_deals", "parse_depth", "parse_depth_snapshot",
    }  # fmt: skip
    assert set(ticktape.feeds.fakes.__all__) == {
        "FakeBinance", "FakeConn", "FakeExchange", "FakeMexc", "SentDeal", "SentTrade",
    }  # fmt: skip
    for module in (ticktape.feeds.binance, ticktape.feeds.mexc, ticktape.feeds.fakes):
        for name in module.__all__:
            assert hasattr(module, name)
