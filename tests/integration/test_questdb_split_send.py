"""A lost owner's last send that lands in one tick table before the seal and in the other
after it, reproduced on a real server.

One ILP request carries both tick tables, and QuestDB commits each table as a WAL
transaction of its own; the ``questdb`` client also retries a request for seconds after
the owner's ownership check. So the request of an owner that lost its lease can be
half in when its session is sealed. Here the half is made exact with the backend's
testing hook :attr:`~ticktape.store.questdb.QuestDBTickStore.split_send`: the store's own
writer sends the trades of its last block, then waits on a gate before the order books;
the session is sealed and reaped meanwhile; then the books really land. The seal must
cut both tables at the same batch — the last one complete in every table — count what
it keeps, and say what it cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.conftest import Run, _drop_tables, isolated_questdb_url
from tests.integration.questdb_fencing import counts, half_sent, reap, start
from ticktape.feeds.sim import SimExchange
from ticktape.store import RetryingStore, open_store
from ticktape.store.base import Seal, TickQuery
from ticktape.store.questdb import Fence, QuestDBAddress, QuestDBTickStore
from ticktape.ticks import BookBatch, TickBatch, TickCounts, TradeBatch

pytestmark = pytest.mark.questdb

START_US = 1_700_000_000_000_000
LIMIT = 10_000
RATE = 400  # 100 trades and 20 snapshots a block


async def _stored(store: RetryingStore, session_id: str) -> tuple[list[int], list[int]]:
    """Trade ids and snapshot times as every reader sees them."""
    trades = await store.ticks.read_trades(TickQuery(session_id, limit=LIMIT))
    books = await store.ticks.read_orderbook(TickQuery(session_id, limit=LIMIT))
    return [t.trade_id for t in trades], [int(b.ts.timestamp() * 1e6) for b in books]


def _feed(session_id: str) -> SimExchange:
    return SimExchange(session_id, ("BTC_USDT",), rate_per_s=RATE, start_us=START_US)


def _ids(batches: list[TickBatch]) -> list[int]:
    return [int(i) for b in batches if isinstance(b, TradeBatch) for i in b.trade_id]


async def _keeps_exactly(
    reaper: RetryingStore,
    session_id: str,
    reaped: tuple[Seal, Any],
    kept: list[TickBatch],
    fence_at: int,
    cut: list[TickBatch],
) -> None:
    """The reap's seal ended both tables at block ``fence_at`` and cut the trades of
    ``cut`` (sends whose books were held), and keeps exactly ``kept``: its counts, the
    reaped stats, the store's count and every row a reader sees."""
    seal, session = reaped
    fence = Fence.load(seal.fence or "")
    assert (fence.trades, fence.orderbook) == (fence_at, fence_at)
    assert seal.counts == counts(kept)
    assert seal.cut == TickCounts(counts(cut).trades, 0)
    assert (session.stats.trades, session.stats.orderbook) == (
        seal.counts.trades,
        seal.counts.orderbook,
    )
    assert await reaper.ticks.count(session_id) == seal.counts
    ids, books = await _stored(reaper, session_id)
    assert sorted(ids) == _ids(kept)
    assert sorted(books) == [int(t) for b in kept if isinstance(b, BookBatch) for t in b.ts_us]


def test_a_send_landing_across_the_seal_is_cut_in_both_tables_at_the_same_batch(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    lost, reaper = stores

    async def scenario() -> None:
        session = await start(lost, make_session, "lost")
        feed = _feed(session.id)
        kept = feed.next_block() + feed.next_block()  # blocks 0 and 1: acknowledged
        await lost.ticks.write(kept, owner="lost")
        last = feed.next_block()  # block 2: in flight when the owner is lost
        with half_sent(lost) as half:
            late = asyncio.create_task(lost.ticks.write(last, owner="lost"))
            await half.held.wait()
            seal, reaped = await reap(reaper, session)
            half.gate.set()  # the order books of block 2 land after the seal
            await late
        await reaper.ticks.wait_visible(30)

        # both tables end at block 1, the last complete one, and the trades that were
        # in are cut: stats = rows, and the rows are blocks 0-1 in both tables
        await _keeps_exactly(reaper, session.id, (seal, reaped), kept, 1, last)
        assert seal.note() == (
            "the owner's last write had landed in part and was left out: "
            f"{counts(last).trades} trades, 0 book snapshots"
        )
        events = await reaper.sessions.list_events(session.id)
        assert events[-1].reason == "owner_lost" and events[-1].detail == seal.note()
        ticks = reaper.inner.ticks
        assert isinstance(ticks, QuestDBTickStore)
        assert await ticks.fenced(session.id) == counts(last)  # all of block 2, both tables
        # a resume continues right after the cut, in both tables
        position = await reaper.ticks.position(session.id)
        assert position.last_trade_ids == {"BTC_USDT": max(_ids(kept))}
        assert position.last_ts is not None
        newest = max(int(np.max(b.ts_us)) for b in kept)
        assert int(position.last_ts.timestamp() * 1e6) == newest

    run(scenario())


def _illiquid(session_id: str) -> tuple[list[TickBatch], list[TickBatch]]:
    """A real feed's shape: trades in blocks 0-1 only, books in blocks 0-9 (acknowledged),
    then block 10 with both (the last send)."""
    feed = _feed(session_id)
    early: list[TickBatch] = []
    for n in range(10):
        block = feed.next_block()
        early += block if n < 2 else [b for b in block if isinstance(b, BookBatch)]
    return early, feed.next_block()


def test_a_lost_owners_seal_keeps_every_complete_block_of_a_feed_whose_trades_stopped(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """The cut is the last batch complete in every table, not the lower of the tables'
    last batches: here books of blocks 2-9 have no trades beside them and are all kept."""
    lost, reaper = stores

    async def scenario() -> None:
        # everything acknowledged: the seal is the per-table one (trades 1, books 9)
        whole = await start(lost, make_session, "lost")
        early, last = _illiquid(whole.id)
        for n in range(0, len(early), 3):  # several sends, as a writer makes them
            await lost.ticks.write(early[n : n + 3], owner="lost")
        seal, _ = await reap(reaper, whole)
        fence = Fence.load(seal.fence or "")
        assert (fence.trades, fence.orderbook) == (1, 9)
        assert seal.counts == counts(early) and seal.cut == TickCounts()
        assert seal.note() == ""

        # the same, then block 10's trades land before the seal and its books after it
        session = await start(lost, make_session, "lost")
        early, last = _illiquid(session.id)
        for n in range(0, len(early), 3):
            await lost.ticks.write(early[n : n + 3], owner="lost")
        with half_sent(lost) as half:
            late = asyncio.create_task(lost.ticks.write(last, owner="lost"))
            await half.held.wait()
            seal, reaped = await reap(reaper, session)
            half.gate.set()
            await late
        await reaper.ticks.wait_visible(30)
        # cut at block 9, not 1: books 2-9 are complete
        await _keeps_exactly(reaper, session.id, (seal, reaped), early, 9, last)

    run(scenario())


def test_tick_tables_made_before_the_send_columns_get_them_at_open(
    questdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """A store whose tick tables lack the send columns opens (they are added) and seals
    its rows of before as complete (NULLs)."""
    url = isolated_questdb_url(questdb_url)
    address = QuestDBAddress.from_url(url)
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        for table, key, columns in (
            ("trades", "trade_id", "trade_id LONG, price DOUBLE, qty DOUBLE, side SYMBOL"),
            ("orderbook", "level", "level INT, bid_price DOUBLE, bid_qty DOUBLE, "
             "ask_price DOUBLE, ask_qty DOUBLE"),
        ):  # fmt: skip
            conn.execute(
                f"CREATE TABLE {address.prefix}{table} (session_id SYMBOL, symbol SYMBOL, "
                f"{columns}, ts TIMESTAMP, tenure LONG, batch_seq LONG, recv_us LONG) "
                f"TIMESTAMP(ts) PARTITION BY DAY WAL "
                f"DEDUP UPSERT KEYS(ts, session_id, symbol, {key}, tenure)"
            )
    store = open_store(url)
    run(store.open())
    try:
        present = set()
        with psycopg.connect(address.conninfo, autocommit=True) as conn:
            for table in ("trades", "orderbook"):
                rows = conn.execute(
                    f"SELECT \"column\" FROM table_columns('{address.prefix}{table}')"
                ).fetchall()
                present |= {(table, str(r[0])) for r in rows}
        for table in ("trades", "orderbook"):
            for column in ("send_id", "send_first", "send_trades", "send_books"):
                assert (table, column) in present
        second = open_store(url)  # a second open finds them there and adds nothing
        run(second.open())
        run(second.close())

        async def scenario() -> None:
            session = await start(store, make_session, "owner")
            block = _feed(session.id).next_block()
            await store.ticks.write(block, owner="owner")
            seal, _ = await reap(store, session)
            assert seal.counts == counts(block) and seal.cut == TickCounts()

        run(scenario())
    finally:
        run(store.close())
        _drop_tables(url)


def test_a_table_that_lacks_an_older_send_than_the_newest_is_cut_before_it(
    stores: tuple[RetryingStore, RetryingStore],
    questdb_url: str,
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """A table can lack sends older than the newest one (its WAL applied fewer of them,
    past the reconciler's patience): the books of blocks 2 and 3 are held while their
    trades are in (block 3 sent through a second handle of the same owner, as the next
    send). The seal cuts both tables before block 2, not only before block 3."""
    lost, reaper = stores
    other = open_store(lost.url)
    run(other.open())

    async def scenario() -> None:
        session = await start(lost, make_session, "lost")
        feed = _feed(session.id)
        kept = feed.next_block() + feed.next_block()
        await lost.ticks.write(kept, owner="lost")
        held, newest = feed.next_block(), feed.next_block()
        with half_sent(lost) as half, half_sent(other) as next_half:
            late = asyncio.create_task(lost.ticks.write(held, owner="lost"))
            await half.held.wait()
            later = asyncio.create_task(other.ticks.write(newest, owner="lost"))
            await next_half.held.wait()
            seal, reaped = await reap(reaper, session)
            half.gate.set()
            next_half.gate.set()
            await late
            await later
        await reaper.ticks.wait_visible(30)
        await _keeps_exactly(reaper, session.id, (seal, reaped), kept, 1, held + newest)

    try:
        run(scenario())
    finally:
        run(other.close())


def test_an_owners_acknowledged_seal_leaves_out_the_check_an_unacknowledged_one_cuts(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """``seal(acknowledged=True)`` (every send of the tenure acknowledged, then visible)
    counts what the checked seal counts without checking the last send; an owner whose
    last write is unanswered (in flight, as after a timeout) seals unacknowledged, and
    that seal checks and cuts as a reaper's does."""
    owner, _ = stores
    ticks = owner.inner.ticks
    assert isinstance(ticks, QuestDBTickStore)

    async def scenario() -> None:
        whole = await start(owner, make_session, "owner")
        early, _ = _illiquid(whole.id)
        for n in range(0, len(early), 3):
            await owner.ticks.write(early[n : n + 3], owner="owner")
        await owner.ticks.wait_visible(30)
        checks = ticks.seal_checks
        skipped = await owner.ticks.seal(whole.id, acknowledged=True)
        assert ticks.seal_checks == checks
        checked = await owner.ticks.seal(whole.id)
        assert ticks.seal_checks == checks + 1
        assert skipped == checked
        assert skipped.counts == counts(early) and skipped.cut == TickCounts()
        assert Fence.load(skipped.fence or "") == Fence.load(checked.fence or "")

        session = await start(owner, make_session, "owner")
        feed = _feed(session.id)
        kept = feed.next_block() + feed.next_block()
        await owner.ticks.write(kept, owner="owner")
        last = feed.next_block()
        with half_sent(owner) as half:
            unanswered = asyncio.create_task(owner.ticks.write(last, owner="owner"))
            await half.held.wait()
            await owner.ticks.wait_visible(30)
            seal = await owner.ticks.seal(session.id)  # acknowledged=False: a write is out
            half.gate.set()
            await unanswered
        assert ticks.seal_checks == checks + 2
        fence = Fence.load(seal.fence or "")
        assert (fence.trades, fence.orderbook) == (1, 1)
        assert seal.counts == counts(kept)
        assert seal.cut == TickCounts(counts(last).trades, 0)

    run(scenario())


def test_sessions_sealed_together_are_each_cut_before_their_own_lacking_send(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """One grouped seal of three sessions, the older-send check over all of them in one
    query per table with each session's bounds applied to its own sends: ``never`` has
    no book row at all (both its sends' books held), ``older`` lacks the books of an
    older send than its newest, ``illiquid`` (trades in blocks 0-1 only, books 0-9, all
    acknowledged, sent after ``older``'s kept blocks) lacks nothing."""
    lost, reaper = stores
    other = open_store(lost.url)
    run(other.open())
    reaper_ticks = reaper.inner.ticks
    assert isinstance(reaper_ticks, QuestDBTickStore)

    async def scenario() -> None:
        never, older, illiquid = [await start(lost, make_session, "lost") for _ in range(3)]
        never_feed, older_feed = _feed(never.id), _feed(older.id)
        kept = older_feed.next_block() + older_feed.next_block()
        await lost.ticks.write(kept, owner="lost")
        early, _ = _illiquid(illiquid.id)
        for n in range(0, len(early), 3):
            await lost.ticks.write(early[n : n + 3], owner="lost")
        never_blocks = never_feed.next_block(), never_feed.next_block()
        held, newest = older_feed.next_block(), older_feed.next_block()
        with half_sent(lost) as half, half_sent(other) as next_half:
            late = asyncio.create_task(lost.ticks.write(held + never_blocks[0], owner="lost"))
            await half.held.wait()
            later = asyncio.create_task(other.ticks.write(newest + never_blocks[1], owner="lost"))
            await next_half.held.wait()
            await reaper.ticks.wait_visible(30)
            groups: list[list[str]] = []
            reaper_ticks.on_count_group = groups.append
            try:
                seals = await asyncio.gather(
                    *(reaper.ticks.seal(s.id) for s in (never, older, illiquid))
                )
            finally:
                reaper_ticks.on_count_group = None
            half.gate.set()
            next_half.gate.set()
            await late
            await later
        assert groups == [sorted(s.id for s in (never, older, illiquid))]  # one query
        fences = [Fence.load(seal.fence or "") for seal in seals]
        # never: cut from its first batch, nothing kept
        assert (fences[0].trades, fences[0].orderbook) == (-1, -1)
        assert seals[0].counts == TickCounts()
        assert seals[0].cut == TickCounts(counts([*never_blocks[0], *never_blocks[1]]).trades, 0)
        # older: cut before the older send its books lack
        assert (fences[1].trades, fences[1].orderbook) == (1, 1)
        assert seals[1].counts == counts(kept)
        assert seals[1].cut == TickCounts(counts(held).trades + counts(newest).trades, 0)
        # illiquid: every table at its own last batch, nothing cut
        assert (fences[2].trades, fences[2].orderbook) == (1, 9)
        assert seals[2].counts == counts(early) and seals[2].cut == TickCounts()

    try:
        run(scenario())
    finally:
        run(other.close())
