"""MEXC futures (contract): the connector and its message parsers."""

from ticktape.feeds.mexc._connector import REST_URL, WS_URL, MexcEndpoints, MexcFeed
from ticktape.feeds.mexc._parse import (
    Deal,
    DepthData,
    MalformedMessage,
    parse_deals,
    parse_depth,
    parse_depth_snapshot,
)

__all__ = [
    "REST_URL",
    "WS_URL",
    "Deal",
    "DepthData",
    "MalformedMessage",
    "MexcEndpoints",
    "MexcFeed",
    "parse_deals",
    "parse_depth",
    "parse_depth_snapshot",
]
