"""MEXC futures (contract): the connector and its message parsers."""

from ticktape.feeds.mexc._connector import (
    REST_URL,
    WS_URL,
    MexcEndpoints,
    MexcFeed,
    base_quantity,
    full_depth_fits,
)
from ticktape.feeds.mexc._parse import (
    Deal,
    DepthData,
    MalformedMessage,
    NoContractDetail,
    parse_contract_size,
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
    "NoContractDetail",
    "base_quantity",
    "full_depth_fits",
    "parse_contract_size",
    "parse_deals",
    "parse_depth",
    "parse_depth_snapshot",
]
