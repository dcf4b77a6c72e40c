"""The Binance USD-M connector against a local exchange that speaks its protocol."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

from tests.integration.feeds.helpers import FAST, Recorder
from ticktape.domain import DataType
from ticktape.feeds.binance import BinanceEndpoints, BinanceFeed
from ticktape.feeds.contract import (
    SIDE_BUY,
    SIDE_SELL,
    EventKind,
    FeedEvent,
    FeedTrades,
    GapCause,
    SubscriptionRefused,
)
from ticktape.feeds.fakes import FakeBinance, SentTrade
from ticktape.feeds.settings import StreamSettings

SYM = "BTCUSDT"
DEPTH = 5
KINDS = ("trades", "depth")

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def make_feed(fx: FakeBinance, settings: StreamSettings = FAST, **kw: Any) -> BinanceFeed:
    endpoints = BinanceEndpoints(fx.ws_public, fx.ws_market, fx.http_url)
    return BinanceFeed(
        "s-1",
        (SYM,),
        depth=DEPTH,
        settings=settings,
        endpoints=endpoints,
        subscribe_interval_s=0.0,
        **kw,
    )


def rows(sent: list[SentTrade]) -> list[tuple[int, int, float, float, int]]:
    side = {True: SIDE_SELL, False: SIDE_BUY}
    return [(t.ts_ms * 1000, t.agg_id, t.price, t.qty, side[t.buyer_maker]) for t in sent]


async def started(fx: FakeBinance, rec: Recorder) -> None:
    """Subscribed, and the book in sync (a first snapshot came out)."""
    await fx.wait_subscribed((SYM,), KINDS)
    await fx.send_depth(SYM, 1)
    await rec.wait(lambda: bool(rec.books(SYM)))


def test_trades_and_books_arrive_as_sent(run: Run) -> None:
    async def scenario() -> None:
        async with FakeBinance() as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            sent = await fx.send_trades(SYM, 120)
            await fx.send_depth(SYM, 30)
            await rec.wait(lambda: len(rec.trades(SYM)) == 120 and len(rec.books(SYM)) >= 31)
            got = rec.trades(SYM)
            assert [r[:5] for r in got] == rows(sent)
            assert all(recv >= ts for ts, *_, recv in got)  # receive time after exchange time
            ts, bids, asks = rec.books(SYM)[-1]
            assert (bids, asks) == fx.book(SYM, DEPTH)
            # The exchange's millisecond, made unique by microseconds (snapshots are keyed by time).
            exchange_ms = fx.depth_events[-1]["T"]
            assert exchange_ms * 1000 <= ts < (exchange_ms + 1) * 1000
            assert not rec.gaps()
            assert rec.feed.counters.malformed == {}

    run(scenario())


def test_agg_id_jump_is_a_sequence_break_with_the_lost_count(run: Run) -> None:
    async def scenario() -> None:
        async with FakeBinance() as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            before = await fx.send_trades(SYM, 10)
            fx.skip_trades(SYM, 7)
            after = await fx.send_trades(SYM, 5)
            await rec.wait(lambda: len(rec.trades(SYM)) == 15)
            (gap,) = rec.gaps(DataType.TRADES)
            assert gap.cause is GapCause.SEQUENCE_BREAK
            assert gap.lost == 7
            assert gap.start_us == before[-1].ts_ms * 1000
            assert gap.end_us == after[0].ts_ms * 1000
            assert rec.feed.counters.sequence_breaks == 1

    run(scenario())


def test_drop_gives_a_gap_per_stream_and_recording_resumes(run: Run) -> None:
    async def scenario() -> None:
        async with FakeBinance() as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            before = await fx.send_trades(SYM, 10)
            await fx.send_depth(SYM, 3)
            await rec.wait(lambda: len(rec.trades(SYM)) == 10 and len(rec.books(SYM)) >= 4)
            books_before = len(rec.books(SYM))
            last_book_ts = rec.books(SYM)[-1][0]
            await fx.drop()
            fx.skip_trades(SYM, 4)  # trades while the client was away
            fx.skip_depth(SYM, 6)
            await fx.wait_subscribed((SYM,), KINDS)
            after = await fx.send_trades(SYM, 5)
            await rec.keep_moving(lambda: fx.send_depth(SYM, 1), lambda: len(rec.gaps()) == 2)
            await rec.wait(lambda: len(rec.trades(SYM)) == 15)
            trade_gap = rec.gaps(DataType.TRADES)[0]
            assert trade_gap.cause is GapCause.DISCONNECT
            assert trade_gap.lost == 4
            assert (trade_gap.start_us, trade_gap.end_us) == (
                before[-1].ts_ms * 1000,
                after[0].ts_ms * 1000,
            )
            (book_gap,) = rec.gaps(DataType.ORDERBOOK)
            assert book_gap.cause is GapCause.DISCONNECT
            assert book_gap.start_us == last_book_ts
            # No book inside the gap; the first one after it is at its end, then resynced.
            await rec.wait(lambda: len(rec.books(SYM)) > books_before)
            after_books = rec.books(SYM)[books_before:]
            assert after_books[0][0] == book_gap.end_us
            assert all(ts >= book_gap.end_us for ts, _, _ in after_books)
            resynced = rec.events(EventKind.RESYNCED)
            assert [e.symbol for e in resynced] == [SYM]
            assert rec.feed.counters.reconnects == 2  # both links

    run(scenario())


def test_depth_pu_break_resyncs_the_book_and_stores_none_inside(run: Run) -> None:
    async def scenario() -> None:
        async with FakeBinance() as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            await fx.send_depth(SYM, 5)
            await rec.wait(lambda: len(rec.books(SYM)) >= 6)
            n_before = len(rec.books(SYM))
            last_ts = rec.books(SYM)[-1][0]
            fx.skip_depth(SYM, 2)
            await fx.send_depth(SYM, 1)  # its pu is not the client's last u
            await rec.keep_moving(lambda: fx.send_depth(SYM, 1), lambda: bool(rec.gaps()))
            (gap,) = rec.gaps(DataType.ORDERBOOK)
            assert gap.cause is GapCause.SEQUENCE_BREAK
            assert gap.start_us == last_ts
            books = rec.books(SYM)
            assert all(ts >= gap.end_us for ts, _, _ in books[n_before:])
            assert rec.feed.counters.sequence_breaks == 1
            await rec.keep_moving(
                lambda: fx.send_depth(SYM, 1),
                lambda: rec.books(SYM)[-1][1:] == fx.book(SYM, DEPTH),
            )

    run(scenario())


def test_event_right_after_the_snapshot_bridges_it(run: Run) -> None:
    async def scenario() -> None:
        async with FakeBinance() as fx, Recorder(make_feed(fx)) as rec:
            await fx.wait_subscribed((SYM,), KINDS)
            await fx.wait_for(lambda: fx.snapshot_requests >= 1)
            await fx.send_depth(SYM, 1)  # U = lastUpdateId + 1: nothing lies between them
            await rec.wait(lambda: bool(rec.books(SYM)))
            assert rec.books(SYM)[-1][1:] == fx.book(SYM, DEPTH)
            assert (rec.feed.counters.resyncs, fx.snapshot_requests) == (0, 1)

    run(scenario())


def test_stale_snapshot_is_fetched_again(run: Run) -> None:
    async def scenario() -> None:
        async with FakeBinance() as fx:
            fx.stale_snapshot(SYM)  # the book as it is now ...
            fx.skip_depth(SYM, 2)  # ... misses these updates, which the stream will not repeat
            async with Recorder(make_feed(fx)) as rec:
                await fx.wait_subscribed((SYM,), KINDS)
                await fx.send_depth(SYM, 3)  # ... is older than every event the client gets
                await fx.wait_for(lambda: fx.snapshot_requests >= 2)
                await rec.keep_moving(
                    lambda: fx.send_depth(SYM, 1),
                    lambda: bool(rec.books(SYM)) and rec.books(SYM)[-1][1:] == fx.book(SYM, DEPTH),
                )
                assert rec.feed.counters.resyncs >= 1
                assert not rec.gaps()  # nothing was recorded yet: a first sync is no gap

    run(scenario())


def test_silent_connection_is_stale_then_replaced(run: Run) -> None:
    async def scenario() -> None:
        settings = dataclasses.replace(FAST, stale_after_s=0.5)
        async with FakeBinance() as fx, Recorder(make_feed(fx, settings)) as rec:
            await started(fx, rec)
            before = await fx.send_trades(SYM, 3)
            await fx.go_silent()
            await rec.wait(lambda: len(rec.events(EventKind.STALE)) >= 2)  # both links
            await fx.wait_subscribed((SYM,), KINDS)
            after = await fx.send_trades(SYM, 3)
            await rec.wait(lambda: len(rec.trades(SYM)) == 6 and bool(rec.gaps(DataType.TRADES)))
            gap = rec.gaps(DataType.TRADES)[0]
            assert gap.cause is GapCause.STALE
            assert (gap.start_us, gap.end_us, gap.lost) == (
                before[-1].ts_ms * 1000,
                after[0].ts_ms * 1000,
                0,
            )

    run(scenario())


def test_quiet_but_live_connection_is_not_stale(run: Run) -> None:
    async def scenario() -> None:
        settings = dataclasses.replace(FAST, stale_after_s=0.3)
        async with FakeBinance() as fx, Recorder(make_feed(fx, settings)) as rec:
            await started(fx, rec)
            # No data for several stall periods: the client's pings keep the link alive.
            for _ in range(4):
                fx_pings = [len(c.messages_in) for c in fx.conns]
                await asyncio.sleep(0.3)
                assert [len(c.messages_in) for c in fx.conns] == fx_pings
            assert rec.events(EventKind.STALE) == []
            assert fx.connections_total == 2

    run(scenario())


def test_refused_subscription_fails_the_feed(run: Run) -> None:
    async def scenario() -> None:
        async with FakeBinance() as fx:
            fx.refused.add(SYM)
            async with Recorder(make_feed(fx)) as rec:
                await asyncio.wait_for(rec.ended.wait(), 10)
            assert isinstance(rec.error, SubscriptionRefused)
            assert rec.error.symbol == SYM

    run(scenario())


def test_malformed_messages_are_counted_not_fatal(run: Run) -> None:
    async def scenario() -> None:
        async with FakeBinance() as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            await fx.send_raw("{not json")
            await fx.send_raw('{"e":"aggTrade","s":"BTCUSDT"}')
            await fx.send_raw("{not json either")
            sent = await fx.send_trades(SYM, 3)
            await rec.wait(lambda: len(rec.trades(SYM)) == 3)
            assert [r[:5] for r in rec.trades(SYM)] == rows(sent)
            # send_raw reaches both links' connections: each message is counted twice.
            assert rec.feed.counters.malformed == {"invalid JSON": 4, "aggTrade fields": 2}

    run(scenario())


def test_server_pings_are_answered(run: Run) -> None:
    async def scenario() -> None:
        async with FakeBinance() as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            assert await fx.ping_clients() == 2

    run(scenario())


def test_rotation_before_the_lifetime_loses_nothing(run: Run) -> None:
    async def scenario() -> None:
        settings = dataclasses.replace(FAST, rotate_after_s=0.4)
        async with FakeBinance(max_age_s=1.0) as fx, Recorder(make_feed(fx, settings)) as rec:
            await started(fx, rec)
            sent: list[SentTrade] = []
            while rec.feed.counters.rotations < 4:
                sent += await fx.send_trades(SYM, 5)
                await fx.send_depth(SYM, 1)
                n = len(sent)
                await rec.wait(lambda n=n: len(rec.trades(SYM)) == n)  # type: ignore[misc]
            assert [r[:5] for r in rec.trades(SYM)] == rows(sent)  # each exactly once
            assert rec.gaps() == []
            assert rec.feed.counters.reconnects == 0
            assert rec.books(SYM)[-1][1:] == fx.book(SYM, DEPTH)

    run(scenario())


def test_stop_during_reconnect_is_prompt(run: Run) -> None:
    async def scenario() -> None:
        settings = dataclasses.replace(FAST, reconnect_base_s=5.0, reconnect_max_s=5.0)
        fx = FakeBinance()
        await fx.start()
        rec = Recorder(make_feed(fx, settings))
        async with rec:
            await started(fx, rec)
            await fx.stop()  # the exchange is gone: the feed waits to reconnect
            await rec.wait(lambda: len(rec.events(EventKind.DISCONNECTED)) == 2)
        # Leaving the block stopped the feed well within its 5 s backoff (or it raised).
        assert rec.ended.is_set()
        # The gaps still open at the stop are yielded, ending when the feed ended.
        gaps = rec.gaps()
        assert {(g.data_type, g.cause) for g in gaps} == {
            (DataType.TRADES, GapCause.DISCONNECT),
            (DataType.ORDERBOOK, GapCause.DISCONNECT),
        }
        assert all(g.end_us >= g.start_us for g in gaps)

    run(scenario())


def test_several_symbols_keep_their_own_ids_books_and_gaps(run: Run) -> None:
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")

    async def scenario() -> None:
        async with FakeBinance() as fx:
            ends = BinanceEndpoints(fx.ws_public, fx.ws_market, fx.http_url)
            feed = BinanceFeed("s-1", symbols, depth=3, settings=FAST, endpoints=ends)
            async with Recorder(feed) as rec:
                await fx.wait_subscribed(symbols, KINDS)
                sent = {s: await fx.send_trades(s, 4) for s in symbols}
                fx.skip_trades("ETHUSDT", 2)
                sent["ETHUSDT"] += await fx.send_trades("ETHUSDT", 1)
                for s in symbols:
                    await rec.keep_moving(
                        lambda s=s: fx.send_depth(s, 1),  # type: ignore[misc]
                        lambda s=s: bool(rec.books(s)) and rec.books(s)[-1][1:] == fx.book(s, 3),  # type: ignore[misc]
                    )
                await rec.wait(lambda: sum(len(rec.trades(s)) for s in symbols) == 13)
                for s in symbols:
                    assert [r[:5] for r in rec.trades(s)] == rows(sent[s])
                (gap,) = rec.gaps()
                assert (gap.symbol, gap.lost) == ("ETHUSDT", 2)

    run(scenario())


def test_a_slow_consumer_back_pressures_without_loss_or_false_stalls(run: Run) -> None:
    async def scenario() -> None:
        settings = dataclasses.replace(FAST, stale_after_s=0.3, queue_items=2, batch_rows=5)
        async with FakeBinance() as fx:
            feed = make_feed(fx, settings)
            stop = asyncio.Event()
            gate = asyncio.Event()
            got: list[Any] = []
            changed = asyncio.Condition()

            async def slow_consumer() -> None:  # a store that stalls until ``gate`` opens
                async for item in feed.items(stop):
                    await gate.wait()
                    got.append(item)
                    async with changed:
                        changed.notify_all()

            def trade_ids() -> list[int]:
                return [int(x) for i in got if isinstance(i, FeedTrades) for x in i.batch.trade_id]

            task = asyncio.create_task(slow_consumer())
            await fx.wait_subscribed((SYM,), KINDS)
            # Far more than the queue holds, and than the WebSocket library buffers before it
            # stops reading the socket (then not even pongs get through).
            sent = await fx.send_trades(SYM, 3000)
            # The stall lasts several stale_after_s periods: time has to pass here.
            await asyncio.sleep(4 * settings.stale_after_s)
            assert feed.consumer_waits >= 1  # the reader waits for room: back-pressure
            gate.set()
            async with asyncio.timeout(10), changed:
                await changed.wait_for(lambda: len(trade_ids()) == 3000)
            stop.set()
            await asyncio.wait_for(task, 10)
            assert trade_ids() == [t.agg_id for t in sent]  # nothing lost, nothing twice
            kinds = [i.kind for i in got if isinstance(i, FeedEvent)]
            assert EventKind.STALE not in kinds  # a blocked reader is not a dead link
            assert EventKind.GAP not in kinds

    run(scenario())
