"""Binance USD-M futures: the connector and its message parsers."""

from ticktape.feeds.binance._connector import (
    REST_URL,
    WS_MARKET_URL,
    WS_PUBLIC_URL,
    BinanceEndpoints,
    BinanceFeed,
    depth_weight,
)
from ticktape.feeds.binance._parse import (
    AggTrade,
    DepthSnapshot,
    DepthUpdate,
    MalformedMessage,
    parse_agg_trade,
    parse_depth_snapshot,
    parse_depth_update,
    unwrap,
)

__all__ = [
    "REST_URL",
    "WS_MARKET_URL",
    "WS_PUBLIC_URL",
    "AggTrade",
    "BinanceEndpoints",
    "BinanceFeed",
    "DepthSnapshot",
    "DepthUpdate",
    "MalformedMessage",
    "depth_weight",
    "parse_agg_trade",
    "parse_depth_snapshot",
    "parse_depth_update",
    "unwrap",
]
