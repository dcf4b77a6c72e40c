"""Local fake exchanges that speak the real protocols, for tests and benchmarks.

They listen on 127.0.0.1 at a free port, serve the WebSocket stream and the REST
depth snapshot on that one port, and are scripted by their owner (see
:class:`FakeExchange`). Nothing here is used by a running ticktape server.
"""

from ticktape.feeds.fakes._server import FakeConn, FakeExchange
from ticktape.feeds.fakes.binance import FakeBinance, SentTrade
from ticktape.feeds.fakes.mexc import FakeMexc, SentDeal

__all__ = ["FakeBinance", "FakeConn", "FakeExchange", "FakeMexc", "SentDeal", "SentTrade"]
