"""QuestDB's fencing window, reproduced on a real server.

ILP cannot share a transaction with the session log, so a tick writer is checked
first and sends after. An owner paused between the two (SIGSTOP, a stall) can be
reaped and counted before its batch lands. Here the pause is made exact: the
send waits on a gate after the ownership check has passed, the session is reaped
(or claimed) meanwhile, then the gate opens and the late rows really land — the
raw table shows them — yet no count, read or position of the store includes them.

The pause uses the backend's documented testing hook,
:attr:`~ticktape.store.questdb.QuestDBTickStore.before_send`; the raw rows are
counted over a connection of the test's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.conftest import Run, isolated_questdb_url
from tests.integration.questdb_fencing import (
    HeldSend,
    claim,
    counts,
    paused_send,
    reap,
    start,
)
from ticktape.domain import DataType, SessionStatus
from ticktape.errors import LeaseLost, TransitionRace
from ticktape.feeds.sim import ResumePoint, SimExchange
from ticktape.store import RetryingStore, open_store
from ticktape.store.base import TickQuery
from ticktape.store.questdb import QuestDBAddress, QuestDBTickStore
from ticktape.ticks import Gap, GapCause, TickBatch, TickCounts, TradeBatch

pytestmark = pytest.mark.questdb

START_US = 1_700_000_000_000_000
BOOK_COLUMNS = ("bid_price", "bid_qty", "ask_price", "ask_qty")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _feed(session_id: str, resume: ResumePoint | None = None) -> SimExchange:
    return SimExchange(session_id, ("BTC_USDT",), rate_per_s=0, start_us=START_US, resume=resume)


async def _raw_trades(store: RetryingStore, session_id: str) -> int:
    """Rows physically in the trades table, fenced or not."""
    await store.ticks.wait_visible(30)
    address = QuestDBAddress.from_url(store.url)
    async with await psycopg.AsyncConnection.connect(address.conninfo, autocommit=True) as conn:
        cur = await conn.execute(
            f"SELECT count() FROM {address.prefix}trades WHERE session_id = %s", [session_id]
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _resume_point(store: RetryingStore, session_id: str) -> ResumePoint:
    """Where a new owner's feed resumes ``session_id``: after its stored last tick."""
    position = await store.ticks.position(session_id)
    assert position.last_ts is not None
    after_us = (position.last_ts - EPOCH) // timedelta(microseconds=1)
    return ResumePoint(after_us, dict(position.last_trade_ids), {})


def test_a_late_batch_after_the_reap_is_stored_but_never_counted(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    stale, reaper = stores

    async def scenario() -> None:
        session = await start(stale, make_session, "stale")
        feed = _feed(session.id)
        await stale.ticks.write(feed.next_block(), owner="stale")
        with paused_send(stale) as paused:
            await reap_while_paused(session, paused, feed.next_block())

    async def reap_while_paused(session: Any, paused: HeldSend, block: list[TickBatch]) -> None:
        late = asyncio.create_task(stale.ticks.write(block, owner="stale"))
        await paused.held.wait()  # the check passed; the send is held

        await reaper.ticks.wait_visible(30)  # as the reconciler does before sealing
        seal, reaped = await reap(reaper, session)
        position = await reaper.ticks.position(session.id)
        trades = await reaper.ticks.read_trades(TickQuery(session.id, limit=10_000))

        paused.gate.set()
        await late  # the late batch is acknowledged by QuestDB
        raw = await _raw_trades(reaper, session.id)
        assert raw > seal.counts.trades, "the late rows must really be in the table"

        assert await reaper.ticks.count(session.id) == seal.counts
        ticks = reaper.inner.ticks
        assert isinstance(ticks, QuestDBTickStore)
        late_trades = sum(len(b) for b in block if isinstance(b, TradeBatch))
        assert (await ticks.fenced(session.id)).trades == raw - seal.counts.trades == late_trades
        assert (reaped.stats.trades, reaped.stats.orderbook) == (
            seal.counts.trades,
            seal.counts.orderbook,
        )
        assert await reaper.ticks.read_trades(TickQuery(session.id, limit=10_000)) == trades
        assert await reaper.ticks.position(session.id) == position
        books = await reaper.ticks.read_orderbook(TickQuery(session.id, limit=10_000))
        assert len(books) == seal.counts.orderbook
        # the replay's columnar read (Parquet over HTTP) leaves the late rows out too,
        # and equals the same read over the PostgreSQL wire
        span = await reaper.ticks.span(session.id)
        assert span is not None
        window = await ticks.read_window(session.id, span[0], span[1] + 1)
        assert sum(len(b) for b in window) == seal.counts.trades + seal.counts.orderbook
        rows = await ticks.read_window_rows(session.id, span[0], span[1] + 1)
        _assert_same_batches(window, rows)

    run(scenario())


def _assert_same_batches(got: list[TickBatch], expected: list[TickBatch]) -> None:
    assert [(type(b), b.symbol) for b in got] == [(type(b), b.symbol) for b in expected]
    for a, b in zip(got, expected, strict=True):
        for name in ("ts_us", "trade_id", "price", "qty", "side", *BOOK_COLUMNS):
            if hasattr(a, name):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
                assert getattr(a, name).dtype == getattr(b, name).dtype


def test_a_late_batch_after_a_claim_never_replaces_the_new_owners_rows(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    stale, claimer = stores

    async def scenario() -> None:
        session = await start(stale, make_session, "stale")
        await stale.ticks.write(_feed(session.id).next_block(), owner="stale")
        await stale.ticks.wait_visible(30)
        resume = await _resume_point(claimer, session.id)
        # the stale owner's next block and the new owner's first one share their keys
        with paused_send(stale) as paused:
            await claim_while_paused(session, paused, resume)

    async def claim_while_paused(session: Any, paused: HeldSend, resume: ResumePoint) -> None:
        stale_feed = _feed(session.id, resume)
        stale_feed.blocks_emitted = 1  # the stale owner's second block...
        late = asyncio.create_task(stale.ticks.write(stale_feed.next_block(), owner="stale"))
        await paused.held.wait()

        await claimer.ticks.wait_visible(30)
        seal = await claimer.ticks.seal(session.id)
        claimed = await claim(claimer, session, "claimer", seal)
        mine = _feed(session.id, resume).next_block()  # ...and the new owner's first
        await claimer.ticks.write(mine, owner="claimer")
        await claimer.ticks.wait_visible(30)
        expected = seal.counts + counts(mine)
        assert await claimer.ticks.count(session.id) == expected
        before = await claimer.ticks.read_trades(TickQuery(session.id, limit=10_000))

        paused.gate.set()  # the late rows land after the new owner's, with the same keys
        await late
        assert await _raw_trades(claimer, session.id) > expected.trades

        assert await claimer.ticks.count(session.id) == expected
        assert await claimer.ticks.read_trades(TickQuery(session.id, limit=10_000)) == before

        final = await claimer.ticks.seal(session.id)
        stopped = await claimer.sessions.transition(
            session.id,
            expected_version=claimed.version,
            to_status=SessionStatus.COMPLETED,
            actor="claimer",
            reason="duration_reached",
            stats=final.counts.as_stats(0),
            lease_expires_at=None,
            seal=final,
        )
        assert stopped.stats.trades == (await claimer.ticks.count(session.id)).trades

    run(scenario())


async def _raw_gaps(store: RetryingStore, session_id: str) -> int:
    address = QuestDBAddress.from_url(store.url)
    async with await psycopg.AsyncConnection.connect(address.conninfo, autocommit=True) as conn:
        cur = await conn.execute(
            f"SELECT count() FROM {address.prefix}gaps WHERE session_id = %s", [session_id]
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


def _gap(start_us: int, cause: GapCause = GapCause.DISCONNECT) -> Gap:
    return Gap("BTC_USDT", DataType.TRADES, start_us, start_us + 1_000, cause, 3, "test")


def test_a_late_gap_row_after_the_reap_is_stored_but_never_read(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """Gap rows are fenced like ticks: an owner paused between its ownership check and
    the insert lands its row after the reap, and no read of the store includes it."""
    stale, reaper = stores
    ticks = stale.inner.ticks
    assert isinstance(ticks, QuestDBTickStore)

    async def scenario() -> None:
        session = await start(stale, make_session, "stale")
        kept = _gap(START_US)
        await stale.ticks.write_gaps(session.id, [kept], owner="stale")
        checked, gate = asyncio.Event(), asyncio.Event()

        async def hold() -> None:  # after the ownership check passed
            checked.set()
            await gate.wait()

        ticks.before_gap_write = hold
        try:
            late = asyncio.create_task(
                stale.ticks.write_gaps(session.id, [_gap(START_US + 5_000)], owner="stale")
            )
            await asyncio.wait_for(checked.wait(), 30)
            await reap(reaper, session)
            gate.set()
            await late  # the late row is written: the check had passed
        finally:
            ticks.before_gap_write = None
            gate.set()
        assert await _raw_gaps(reaper, session.id) == 2, "the late row must really be stored"
        assert await reaper.ticks.read_gaps(session.id) == [kept]
        assert await stale.ticks.read_gaps(session.id) == [kept]
        # and a write after the reap is refused outright
        with pytest.raises(LeaseLost):
            await stale.ticks.write_gaps(session.id, [_gap(START_US + 9_000)], owner="stale")

    run(scenario())


def test_gap_rows_of_a_claimed_session_stay_readable_across_tenures(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """The fence hides only rows written past the seal: the first owner's gaps written
    before the claim and the new owner's gaps (retried too) are all read, once each."""
    first, second = stores

    async def scenario() -> None:
        session = await start(first, make_session, "first")
        a = _gap(START_US)
        await first.ticks.write_gaps(session.id, [a], owner="first")
        await claim(second, session, "second")
        b = _gap(START_US + 2_000, GapCause.RESTART)
        await second.ticks.write_gaps(session.id, [b], owner="second")
        await second.ticks.write_gaps(session.id, [b], owner="second")  # a retried write
        assert await first.ticks.read_gaps(session.id) == [a, b]

    run(scenario())


def test_a_seal_from_an_earlier_tenure_is_refused(
    stores: tuple[RetryingStore, RetryingStore], run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """A seal taken before a claim cannot close the new owner's tenure."""
    store = stores[0]

    async def scenario() -> None:
        session = await start(store, make_session, "first")
        old_seal = await store.ticks.seal(session.id)
        claimed = await claim(store, session, "second", old_seal)
        with pytest.raises(TransitionRace):
            await store.sessions.transition(
                session.id,
                expected_version=claimed.version,
                to_status=SessionStatus.FAILED,
                actor="x",
                reason="owner_lost",
                stats=old_seal.counts.as_stats(0),
                seal=old_seal,
            )
        assert (await store.sessions.get_session(session.id)).status is SessionStatus.RUNNING

    run(scenario())


def test_the_tenure_is_a_dedup_key_of_the_tick_tables(questdb_url: str, run: Run[Any]) -> None:
    """A stale owner's late row never replaces a new owner's: ``tenure`` is a DEDUP key,
    ``batch_seq`` is not, and the session log carries the tenure and its fences."""
    url = isolated_questdb_url(questdb_url)
    store = open_store(url)
    run(store.open())
    run(store.close())
    address = QuestDBAddress.from_url(url)
    columns = {}
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        for table in ("session_log", "trades", "orderbook", "instances"):
            name = f"{address.prefix}{table}"
            rows = conn.execute(f"SELECT \"column\", upsertKey FROM table_columns('{name}')")
            columns[table] = {str(c): bool(k) for c, k in rows.fetchall()}
    assert {"tenure", "fences"} <= columns["session_log"].keys()
    for table in ("trades", "orderbook"):
        assert columns[table]["tenure"] is True
        assert columns[table]["batch_seq"] is False


def test_tables_of_a_pre_release_build_are_refused_with_one_clear_line(
    questdb_url: str, run: Run[Any]
) -> None:
    """No migration for builds that were never released: a session log without the
    ``tenure`` column (it was called ``epoch``) stops the store from opening, by name."""
    from ticktape.errors import StoreError

    url = isolated_questdb_url(questdb_url)
    address = QuestDBAddress.from_url(url)
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {address.prefix}session_log (id SYMBOL, epoch LONG, ts TIMESTAMP) "
            "TIMESTAMP(ts) PARTITION BY MONTH BYPASS WAL"
        )
    store = open_store(url)
    try:
        with pytest.raises(StoreError, match=r"session_log lacks column\(s\) row_seq, .*tenure"):
            run(store.open())
    finally:
        run(store.close())
        with psycopg.connect(address.conninfo, autocommit=True) as conn:
            for table in ("session_log", "trades", "orderbook", "result_summary", "instances"):
                conn.execute(f"DROP TABLE IF EXISTS {address.prefix}{table}")
            for table in ("orders", "fills", "equity"):
                conn.execute(f"DROP TABLE IF EXISTS {address.prefix}result_{table}")


def _counts_of(blocks: list[list[TickBatch]]) -> TickCounts:
    return counts([b for block in blocks for b in block])


def test_counts_and_positions_read_together_keep_out_only_each_sessions_own_late_rows(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """Counts, seals and positions of many sessions are read in one query per table,
    without a term per fenced session: the fences are applied only to the sessions found
    with rows past one. Here, read together and one by one: two claimed sessions whose
    stale owner landed a block after the claim, two claimed ones without late rows (one
    with rows of its new owner), two never claimed — each answer is its own."""
    stale, claimer = stores

    async def scenario() -> None:
        sessions = [await start(stale, make_session, "stale") for _ in range(6)]
        feeds = [_feed(s.id) for s in sessions]
        written = [[feed.next_block()] for feed in feeds]
        for blocks in written:
            await stale.ticks.write(blocks[0], owner="stale")
        await stale.ticks.wait_visible(30)
        expected: dict[str, TickCounts] = {}
        for i, session in enumerate(sessions[:4]):
            late_block = feeds[i].next_block() if i < 2 else None
            with paused_send(stale) as paused:
                late = None
                if late_block is not None:
                    late = asyncio.create_task(stale.ticks.write(late_block, owner="stale"))
                    await paused.held.wait()  # checked; held until after the claim
                seal = await claimer.ticks.seal(session.id)
                await claim(claimer, session, "claimer", seal)
                paused.gate.set()
                if late is not None:
                    await late
            assert seal.counts == _counts_of(written[i])
            expected[session.id] = seal.counts
        resume = await _resume_point(claimer, sessions[3].id)
        mine = _feed(sessions[3].id, resume).next_block()
        await claimer.ticks.write(mine, owner="claimer")
        expected[sessions[3].id] += _counts_of([mine])
        for i in (4, 5):
            expected[sessions[i].id] = _counts_of(written[i])
        await claimer.ticks.wait_visible(30)
        ids = [s.id for s in sessions]
        for sid in ids[:2]:  # the late rows are really there
            assert await _raw_trades(claimer, sid) > expected[sid].trades

        together = await asyncio.gather(*(claimer.ticks.count(sid) for sid in ids))
        assert dict(zip(ids, together, strict=True)) == expected
        alone = {sid: await claimer.ticks.count(sid) for sid in ids}
        assert alone == expected
        positions = await asyncio.gather(*(claimer.ticks.position(sid) for sid in ids))
        assert positions == [await claimer.ticks.position(sid) for sid in ids]
        assert positions[3].last_trade_ids["BTC_USDT"] > positions[2].last_trade_ids["BTC_USDT"]
        for i in (0, 1, 2, 4, 5):  # the first block's last trade: late rows left out
            last = max(int(b.trade_id.max()) for b in written[i][0] if isinstance(b, TradeBatch))
            assert positions[i].last_trade_ids == {"BTC_USDT": last}
        ticks = claimer.inner.ticks
        assert isinstance(ticks, QuestDBTickStore)
        for sid in ids[:2]:
            assert (await ticks.fenced(sid)).trades > 0

    run(scenario())
