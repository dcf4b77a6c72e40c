"""The MEXC contract connector against a local exchange that speaks its protocol."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

from tests.integration.feeds.helpers import FAST, Recorder
from ticktape.domain import DataType
from ticktape.feeds.contract import SIDE_BUY, SIDE_SELL, EventKind, GapCause, SubscriptionRefused
from ticktape.feeds.fakes import FakeMexc, SentDeal
from ticktape.feeds.limits import shared_limiter
from ticktape.feeds.mexc import MexcEndpoints, MexcFeed
from ticktape.feeds.settings import StreamSettings
from ticktape.testing import eventually

SYM = "BTC_USDT"
DEPTH = 5
KINDS = ("trades", "depth")

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def make_feed(fx: FakeMexc, settings: StreamSettings = FAST, **kw: Any) -> MexcFeed:
    return MexcFeed(
        "s-1",
        (SYM,),
        depth=DEPTH,
        settings=settings,
        endpoints=MexcEndpoints(fx.ws_url, fx.http_url),
        **kw,
    )


def rows(sent: list[SentDeal], first_id: int) -> list[tuple[int, int, float, float, int]]:
    side = {1: SIDE_BUY, 2: SIDE_SELL}
    return [
        (d.ts_ms * 1000, first_id + i, d.price, d.qty, side[d.side]) for i, d in enumerate(sent)
    ]


async def started(fx: FakeMexc, rec: Recorder) -> None:
    await fx.wait_subscribed((SYM,), KINDS)
    await fx.wait_for(lambda: fx.snapshot_requests >= 1)
    await fx.send_depth(SYM, 1)
    await rec.wait(lambda: bool(rec.books(SYM)))


def test_deals_are_numbered_per_symbol_and_identical_deals_are_all_kept(run: Run) -> None:
    async def scenario() -> None:
        async with FakeMexc() as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            sent = await fx.send_deals(SYM, 10)
            twins = await fx.send_deals(SYM, 6, per_message=3, same=True)
            await rec.wait(lambda: len(rec.trades(SYM)) == 16)
            assert [r[:5] for r in rec.trades(SYM)] == rows(sent + twins, first_id=1)
            # Six deals with one time, price, size and side: six rows, six distinct keys.
            assert len({r[1] for r in rec.trades(SYM)[10:]}) == 6
            assert rec.gaps() == []

    run(scenario())


def test_resumed_numbering_continues_after_the_stored_id(run: Run) -> None:
    async def scenario() -> None:
        feed_kw = {"first_trade_ids": {SYM: 501}}
        async with FakeMexc() as fx, Recorder(make_feed(fx, **feed_kw)) as rec:
            await started(fx, rec)
            sent = await fx.send_deals(SYM, 3)
            await rec.wait(lambda: len(rec.trades(SYM)) == 3)
            assert [r[:5] for r in rec.trades(SYM)] == rows(sent, first_id=501)

    run(scenario())


def test_book_follows_versions_and_a_jump_is_a_gap_with_its_lost_count(run: Run) -> None:
    async def scenario() -> None:
        async with FakeMexc() as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            await fx.send_depth(SYM, 20)
            await rec.wait(lambda: rec.books(SYM)[-1][1:] == fx.book(SYM, DEPTH))
            n_before = len(rec.books(SYM))
            last_ts = rec.books(SYM)[-1][0]
            fx.skip_depth(SYM, 4)
            await fx.send_depth(SYM, 1)
            await rec.keep_moving(lambda: fx.send_depth(SYM, 1), lambda: bool(rec.gaps()))
            (gap,) = rec.gaps(DataType.ORDERBOOK)
            assert (gap.cause, gap.lost, gap.start_us) == (GapCause.SEQUENCE_BREAK, 4, last_ts)
            assert all(ts >= gap.end_us for ts, _, _ in rec.books(SYM)[n_before:])
            assert [e.symbol for e in rec.events(EventKind.RESYNCED)] == [SYM]
            await rec.keep_moving(
                lambda: fx.send_depth(SYM, 1),
                lambda: rec.books(SYM)[-1][1:] == fx.book(SYM, DEPTH),
            )

    run(scenario())


def test_stale_snapshot_is_fetched_again(run: Run) -> None:
    async def scenario() -> None:
        async with FakeMexc() as fx:
            fx.stale_snapshot(SYM)
            async with Recorder(make_feed(fx)) as rec:
                await fx.wait_subscribed((SYM,), KINDS)
                await fx.wait_for(lambda: fx.snapshot_requests >= 1)
                fx.skip_depth(SYM, 2)  # the stale snapshot misses these
                await fx.send_depth(SYM, 2)
                await fx.wait_for(lambda: fx.snapshot_requests >= 2)
                await fx.send_depth(SYM, 2)
                await rec.wait(lambda: bool(rec.books(SYM)))
                await rec.wait(lambda: rec.books(SYM)[-1][1:] == fx.book(SYM, DEPTH))
                assert rec.feed.counters.resyncs >= 1
                assert rec.gaps() == []

    run(scenario())


def test_drop_gives_gaps_and_recording_resumes(run: Run) -> None:
    async def scenario() -> None:
        async with FakeMexc() as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            before = await fx.send_deals(SYM, 4)
            await rec.wait(lambda: len(rec.trades(SYM)) == 4)
            await fx.drop()
            await fx.wait_subscribed((SYM,), KINDS)
            after = await fx.send_deals(SYM, 4)
            await rec.keep_moving(lambda: fx.send_depth(SYM, 1), lambda: len(rec.gaps()) == 2)
            await rec.wait(lambda: len(rec.trades(SYM)) == 8)
            trade_gap = rec.gaps(DataType.TRADES)[0]
            assert trade_gap.cause is GapCause.DISCONNECT
            assert trade_gap.lost is None  # MEXC deals carry no ids: the loss is unknown
            assert (trade_gap.start_us, trade_gap.end_us) == (
                before[-1].ts_ms * 1000,
                after[0].ts_ms * 1000,
            )
            assert [r[1] for r in rec.trades(SYM)] == list(range(1, 9))
            assert rec.gaps(DataType.ORDERBOOK)[0].cause is GapCause.DISCONNECT

    run(scenario())


def test_a_drop_before_a_break_is_resolved_joins_the_breaks_gap(run: Run) -> None:
    async def scenario() -> None:
        async with FakeMexc() as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            await fx.send_depth(SYM, 3)
            await rec.wait(lambda: rec.books(SYM)[-1][1:] == fx.book(SYM, DEPTH))
            last_ts = rec.books(SYM)[-1][0]
            fx.skip_depth(SYM, 4)
            await fx.send_depth(SYM, 1)  # the jump: the book waits for an update to resync

            async def broken() -> bool:
                return rec.feed.counters.sequence_breaks == 1

            await eventually(broken, timeout_s=10, what="the sequence break")
            n_before = len(rec.books(SYM))
            await fx.drop()
            await fx.wait_subscribed((SYM,), KINDS)
            await rec.keep_moving(
                lambda: fx.send_depth(SYM, 1), lambda: bool(rec.gaps(DataType.ORDERBOOK))
            )
            # One gap, from the last book before the break to the first after the
            # reconnect: the stream was never out of it, and no book was yielded inside.
            (gap,) = rec.gaps(DataType.ORDERBOOK)
            assert (gap.cause, gap.lost, gap.start_us) == (GapCause.SEQUENCE_BREAK, 4, last_ts)
            await rec.wait(lambda: len(rec.books(SYM)) > n_before)  # the row that closed it
            assert all(ts >= gap.end_us for ts, _, _ in rec.books(SYM)[n_before:])
            await fx.send_deals(SYM, 1)  # the trades' own gap is the drop's
            await rec.wait(lambda: bool(rec.gaps(DataType.TRADES)))
            assert [g.cause for g in rec.gaps(DataType.TRADES)] == [GapCause.DISCONNECT]
            assert rec.feed.counters.reconnects == 1

    run(scenario())


def test_client_pings_keep_the_connection(run: Run) -> None:
    async def scenario() -> None:
        settings = dataclasses.replace(FAST, ping_interval_s=0.05)
        async with FakeMexc(client_timeout_s=0.4) as fx, Recorder(make_feed(fx, settings)) as rec:
            await started(fx, rec)
            # Far longer than the server's patience with a silent client: pings keep it open.
            await fx.wait_for(lambda: fx.pings >= 20)
            assert fx.connections_total == 1
            assert rec.events(EventKind.DISCONNECTED) == []

    run(scenario())


def test_refused_subscription_fails_the_feed(run: Run) -> None:
    async def scenario() -> None:
        async with FakeMexc() as fx:
            fx.refused.add(SYM)
            async with Recorder(make_feed(fx)) as rec:
                await asyncio.wait_for(rec.ended.wait(), 10)
            assert isinstance(rec.error, SubscriptionRefused)
            assert (rec.error.symbol, rec.error.channel) == (SYM, "sub.deal")

    run(scenario())


def test_malformed_messages_are_counted_not_fatal(run: Run) -> None:
    async def scenario() -> None:
        async with FakeMexc() as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            await fx.send_raw("]]")
            await fx.send_raw('{"channel":"push.deal","symbol":"BTC_USDT","data":{"T":9}}')
            await fx.send_raw('{"channel":"push.surprise"}')
            sent = await fx.send_deals(SYM, 2)
            await rec.wait(lambda: len(rec.trades(SYM)) == 2)
            assert [r[:5] for r in rec.trades(SYM)] == rows(sent, first_id=1)
            assert rec.feed.counters.malformed == {
                "invalid JSON": 1,
                "push.deal fields": 1,
                "unexpected channel 'push.surprise'": 1,
            }

    run(scenario())


def test_rotation_is_refused_for_mexc() -> None:
    import pytest

    with pytest.raises(ValueError, match="rotation is not built"):
        MexcFeed("s", (SYM,), settings=StreamSettings(rotate_after_s=10.0))


def test_stop_while_the_exchange_is_silent_is_prompt(run: Run) -> None:
    async def scenario() -> None:
        async with FakeMexc() as fx:
            rec = Recorder(make_feed(fx))
            async with rec:
                await started(fx, rec)
                await fx.go_silent()  # not even the closing handshake will be answered
            # Leaving the block stopped the feed within the Recorder's bound (10 s), far
            # below the WebSocket library's own close timeout plus a 10 s stall.
            assert rec.ended.is_set() and rec.error is None

    run(scenario())


def test_full_depth_mode_records_the_pushed_snapshots(run: Run) -> None:
    async def scenario() -> None:
        async with FakeMexc() as fx, Recorder(make_feed(fx, full_depth=True)) as rec:
            await fx.wait_subscribed((SYM,), ("trades", "depth.full"))
            assert fx.snapshot_requests == 0  # no REST snapshot needed in this mode
            for _ in range(3):
                fx.skip_depth(SYM, 2)  # the book moves between pushes
                await fx.send_full_depth(SYM, 10)
            await rec.wait(lambda: len(rec.books(SYM)) == 3)
            assert rec.books(SYM)[-1][1:] == fx.book(SYM, DEPTH)
            await fx.drop()
            await fx.wait_subscribed((SYM,), ("trades", "depth.full"))
            await fx.send_full_depth(SYM, 10)
            await rec.wait(lambda: bool(rec.gaps(DataType.ORDERBOOK)))
            (gap,) = rec.gaps(DataType.ORDERBOOK)
            assert gap.cause is GapCause.DISCONNECT
            assert gap.start_us == rec.books(SYM)[2][0]

    run(scenario())


def test_full_depth_mode_refuses_a_depth_it_cannot_serve() -> None:
    import pytest

    with pytest.raises(ValueError, match="at most 20 levels"):
        MexcFeed("s", (SYM,), depth=50, full_depth=True)


def test_connection_lifetime_end_is_a_gap_and_a_reconnect(run: Run) -> None:
    async def scenario() -> None:
        async with FakeMexc(max_age_s=0.5) as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            before = await fx.send_deals(SYM, 2)
            await rec.wait(lambda: len(rec.trades(SYM)) == 2)
            await fx.wait_for(lambda: fx.connections_total >= 2)  # closed at its lifetime
            await fx.wait_subscribed((SYM,), KINDS)
            after = await fx.send_deals(SYM, 2)
            await rec.wait(lambda: len(rec.trades(SYM)) == 4 and bool(rec.gaps(DataType.TRADES)))
            gap = rec.gaps(DataType.TRADES)[0]
            assert gap.cause is GapCause.DISCONNECT
            assert "lifetime" in gap.detail  # the exchange's close reason is kept
            assert (gap.start_us, gap.end_us) == (before[-1].ts_ms * 1000, after[0].ts_ms * 1000)

    run(scenario())


def test_connections_closed_right_away_back_off_instead_of_hammering(run: Run) -> None:
    async def scenario() -> None:
        # Every connection ends 50 ms after it opens, subscribed and ready (trades only):
        # it never served long enough to count as healthy, so the backoff grows.
        trades_only = {"data_types": (DataType.TRADES,)}
        async with FakeMexc(max_age_s=0.05) as fx, Recorder(make_feed(fx, **trades_only)) as rec:
            await rec.wait(lambda: len(rec.events(EventKind.DISCONNECTED)) >= 5)
            assert rec.feed.counters.backoff_attempt >= 5

    run(scenario())


def _in_base(levels: list[tuple[float, float]], size: float) -> list[tuple[float, float]]:
    return [(p, round(q * size, 12)) for p, q in levels]


def test_contract_volumes_are_stored_in_base_asset_units(run: Run) -> None:
    """Deal and book volumes come in contracts; the feed asks the contract detail once and
    stores contracts * contractSize (the base asset), in both book modes."""
    size = 0.0001  # BTC_USDT's documented contractSize

    async def scenario() -> None:
        fake = FakeMexc(contract_sizes={SYM: size})
        async with fake as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            sent = await fx.send_deals(SYM, 8)
            await fx.send_depth(SYM, 5)
            await rec.wait(lambda: len(rec.trades(SYM)) == 8)
            assert [r[3] for r in rec.trades(SYM)] == [round(d.qty * size, 12) for d in sent]
            assert rec.trades(SYM)[0][3] == sent[0].qty / 10_000  # e.g. 2 contracts: 0.0002
            bids, asks = fx.book(SYM, DEPTH)
            expected = (_in_base(bids, size), _in_base(asks, size))
            await rec.wait(lambda: tuple(rec.books(SYM)[-1][1:]) == expected)
            await fx.drop()  # a reconnect does not ask again
            await fx.wait_subscribed((SYM,), KINDS)
            assert fx.detail_requests == 1
        fake = FakeMexc(contract_sizes={SYM: 10.0})
        async with fake as fx, Recorder(make_feed(fx, full_depth=True)) as rec:
            await fx.wait_subscribed((SYM,), ("trades", "depth.full"))
            await fx.send_full_depth(SYM, 10)
            await rec.wait(lambda: len(rec.books(SYM)) == 1)
            bids, asks = fx.book(SYM, DEPTH)
            assert tuple(rec.books(SYM)[0][1:]) == (_in_base(bids, 10.0), _in_base(asks, 10.0))

    run(scenario())


def test_a_symbol_without_contract_detail_is_refused_clearly(run: Run) -> None:
    async def scenario() -> None:
        async with FakeMexc(default_contract_size=None) as fx:
            rec = Recorder(make_feed(fx))
            async with rec:
                await asyncio.wait_for(rec.ended.wait(), 10)
            assert isinstance(rec.error, SubscriptionRefused)
            assert (rec.error.symbol, rec.error.channel) == (SYM, "contract.detail")
            assert "contract not exists" in rec.error.reason
            assert fx.subscribed(SYM, "trades") == []  # nothing was subscribed

    run(scenario())


def test_reconnects_past_the_connection_budget_wait_and_a_stop_stays_prompt(run: Run) -> None:
    """The per-IP connection budget is shared and enforced: past it, the reconnect waits
    for the window (here an hour) instead of connecting, and a stop does not wait."""
    budget = (2, 3600.0)
    settings = dataclasses.replace(FAST, connect_limit=budget)

    async def scenario() -> None:
        async with FakeMexc() as fx:
            rec = Recorder(make_feed(fx, settings))
            async with rec:
                await started(fx, rec)  # attempt 1
                await fx.drop()
                await fx.wait_subscribed((SYM,), KINDS)  # attempt 2: within the budget
                await fx.drop()  # attempt 3 must wait for the window
                limiter = shared_limiter("connect", "mexc", fx.ws_url, budget)

                async def waiting() -> bool:
                    return limiter.waiting == 1

                await eventually(waiting, timeout_s=10, what="the reconnect to wait")
                assert fx.conns == [] and limiter.used() == 2
            assert rec.ended.is_set() and rec.error is None  # stopped within the bound

    run(scenario())


def test_a_busy_contract_detail_is_retried_not_refused(run: Run) -> None:
    """429 (or 5xx) from the detail endpoint means "later", not "no such contract"."""

    async def scenario() -> None:
        fake = FakeMexc(contract_sizes={SYM: 0.5})
        fake.busy_details = 2
        async with fake as fx, Recorder(make_feed(fx)) as rec:
            await started(fx, rec)
            assert fx.detail_requests == 3 and rec.error is None
            sent = await fx.send_deals(SYM, 2)
            await rec.wait(lambda: len(rec.trades(SYM)) == 2)
            assert [r[3] for r in rec.trades(SYM)] == [d.qty * 0.5 for d in sent]

    run(scenario())
