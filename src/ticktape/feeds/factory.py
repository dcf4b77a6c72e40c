"""The feed of a session: one constructor per ``exchange``, endpoints from the settings.

The collect runner asks :func:`build_feed` for the feed of a session and then
only speaks the feed contract (:mod:`ticktape.feeds.contract`). ``sim`` is the
simulated exchange behind :class:`~ticktape.feeds.simulated.SimFeed`;
``binance`` and ``mexc`` are the WebSocket connectors, pointed at the endpoints
of :class:`~ticktape.config.FeedEndpoints` (the production ones unless
``TICKTAPE_BINANCE_*`` / ``TICKTAPE_MEXC_*`` say otherwise — the tests point
them at the local fake exchanges).

A resumed recording passes a :class:`~ticktape.feeds.sim.ResumePoint`: the
simulated exchange continues after it; a connector numbers (MEXC) or
deduplicates (Binance) its trades after the stored ids and opens a ``restart``
gap on every stream from the newest stored tick, closed by the stream's first
new row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ticktape.config import FeedEndpoints
from ticktape.domain import Session
from ticktape.feeds._ws import FeedCounters, StreamFeed
from ticktape.feeds.binance import BinanceEndpoints, BinanceFeed
from ticktape.feeds.contract import Feed, now_us
from ticktape.feeds.mexc import MexcEndpoints, MexcFeed, full_depth_fits
from ticktape.feeds.settings import StreamSettings
from ticktape.feeds.sim import ResumePoint, SimExchange
from ticktape.feeds.simulated import SimFeed


@dataclass
class BuiltFeed:
    """A session's feed and what the runner needs to know about it."""

    feed: Feed
    start_us: int  # the feed's first possible tick time (the end of a resume gap)
    counters: FeedCounters = field(default_factory=FeedCounters)  # shared with a connector
    connector: StreamFeed | None = None  # None for the simulated exchange
    #: The simulated exchange behind ``feed`` (None for a connector): a paced one is fed
    #: by the instance's driver (feeds/simdriver.py) instead of being pulled through ``feed``.
    sim: SimExchange | None = None


def stream_settings(endpoints: FeedEndpoints) -> StreamSettings:
    return StreamSettings(
        stale_after_s=endpoints.stale_after_s, reconnect_max_s=endpoints.reconnect_max_s
    )


def build_feed(
    session: Session,
    endpoints: FeedEndpoints,
    resume: ResumePoint | None = None,
    *,
    remaining_s: float | None = None,
) -> BuiltFeed:
    """The feed recording ``session`` (``resume``: where its stored recording ends;
    ``remaining_s``: how long it will run at most, if it has a duration — the simulated
    exchange generates no more than that needs)."""
    cfg = session.config
    if session.exchange == "sim":
        exchange = SimExchange(
            session.id,
            session.symbols,
            data_types=session.data_types,
            depth=cfg.book_depth,
            seed=cfg.seed,
            rate_per_s=cfg.rate_per_s,
            book_every=cfg.book_every,
            resume=resume,
            duration_s=remaining_s,
        )
        return BuiltFeed(SimFeed(exchange), exchange.start_us, sim=exchange)
    last_ids = dict(resume.last_trade_ids) if resume is not None else {}
    connector: StreamFeed
    if session.exchange == "binance":
        connector = BinanceFeed(
            session.id,
            session.symbols,
            data_types=session.data_types,
            depth=cfg.book_depth,
            settings=stream_settings(endpoints),
            endpoints=BinanceEndpoints(
                ws_public=f"{endpoints.binance_ws_url}/public/ws",
                ws_market=f"{endpoints.binance_ws_url}/market/ws",
                rest=endpoints.binance_rest_url,
            ),
            last_trade_ids=last_ids,
        )
    elif session.exchange == "mexc":
        connector = MexcFeed(
            session.id,
            session.symbols,
            data_types=session.data_types,
            depth=cfg.book_depth,
            settings=stream_settings(endpoints),
            endpoints=MexcEndpoints(ws=endpoints.mexc_ws_url, rest=endpoints.mexc_rest_url),
            first_trade_ids={s: i + 1 for s, i in last_ids.items()},
            # whole-book snapshots straight from the exchange when they are deep enough
            full_depth=endpoints.mexc_full_depth and full_depth_fits(cfg.book_depth),
        )
    else:
        raise ValueError(f"no feed for exchange {session.exchange!r}")
    if resume is not None:
        connector.resume_after(resume.after_us)
    return BuiltFeed(connector, now_us(), connector.counters, connector)
