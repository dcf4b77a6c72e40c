"""The simulated exchange behind the feed contract, with scripted outages."""

from __future__ import annotations

import asyncio

from ticktape.domain import DataType
from ticktape.feeds.contract import EventKind, FeedBooks, FeedEvent, FeedItem, FeedTrades, GapCause
from ticktape.feeds.sim import SimExchange
from ticktape.feeds.simulated import SimFeed, SimOutage


def collect(feed: SimFeed, n_items: int) -> list[FeedItem]:
    async def scenario() -> list[FeedItem]:
        stop = asyncio.Event()
        out: list[FeedItem] = []
        async for item in feed.items(stop):
            out.append(item)
            if len(out) >= n_items:
                stop.set()
        return out

    return asyncio.run(scenario())


def test_sim_blocks_become_contract_items() -> None:
    sim = SimExchange("s", ("A",), rate_per_s=0, start_us=1_000_000)
    items = collect(SimFeed(sim), 12)
    assert [i.kind for i in items[:2] if isinstance(i, FeedEvent)] == [
        EventKind.CONNECTED,
        EventKind.SUBSCRIBED,
    ]
    trades = [i for i in items if isinstance(i, FeedTrades)]
    assert trades and all(len(t.recv_us) == len(t) for t in trades)
    assert not [i for i in items if isinstance(i, FeedEvent) and i.kind is EventKind.GAP]


def test_an_outage_is_a_gap_per_stream_with_the_lost_trades_and_no_book_inside() -> None:
    sim = SimExchange("s", ("A", "B"), rate_per_s=0, start_us=1_000_000)
    per_block = sim.block_events
    items = collect(SimFeed(sim, [SimOutage(first_block=2, blocks=3)]), 40)
    gaps = [i.gap for i in items if isinstance(i, FeedEvent) and i.gap is not None]
    assert {(g.symbol, g.data_type) for g in gaps} == {
        (s, dt) for s in ("A", "B") for dt in (DataType.TRADES, DataType.ORDERBOOK)
    }
    for gap in gaps:
        assert gap.cause is GapCause.DISCONNECT
        rows_ts = [
            int(t)
            for i in items
            if isinstance(i, FeedTrades | FeedBooks)
            and i.batch.symbol == gap.symbol
            and (DataType.TRADES if isinstance(i, FeedTrades) else DataType.ORDERBOOK)
            is gap.data_type
            for t in i.batch.ts_us
        ]
        assert gap.start_us in rows_ts and gap.end_us in rows_ts
        assert not [t for t in rows_ts if gap.start_us < t < gap.end_us]  # nothing inside
        if gap.data_type is DataType.TRADES:
            assert gap.lost == 3 * per_block
    trade_ids = [
        int(x)
        for i in items
        if isinstance(i, FeedTrades) and i.batch.symbol == "A"
        for x in i.batch.trade_id
    ]
    assert trade_ids[2 * per_block] - trade_ids[2 * per_block - 1] == 3 * per_block + 1
    resynced = [i for i in items if isinstance(i, FeedEvent) and i.kind is EventKind.RESYNCED]
    assert sorted(e.symbol or "" for e in resynced) == ["A", "B"]
