"""A lost owner's send that lands while a seal is reading, reproduced on a real server.

A seal reads each tick table in a query of its own (its counts, twice: the second read
also checks the tenure's last send; then what a cut leaves out), and a lost owner's send
can land between two of those reads: its ownership check passed before the reap, and the ``questdb``
client retries a request for seconds — across a QuestDB restart, when the reconciler's
first pass after the restart seals every orphan of it at once. Here the send is held
after its ownership check (the backend's testing hook
:attr:`~ticktape.store.questdb.QuestDBTickStore.before_send`) and let go from
:attr:`~ticktape.store.questdb.QuestDBTickStore.after_read` after a chosen read of the
seal, then awaited until visible before the seal reads on. Whatever the read, the seal
must describe one state of both tables: its counts equal the rows it keeps, both tables
end at the same block, and nothing it counted is fenced out afterwards.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import psycopg
import pytest
from questdb import Sender

from tests.conftest import Run
from tests.integration.questdb_fencing import counts, reap, start
from tests.integration.test_questdb_split_send import _feed, _ids, _stored
from ticktape.errors import StoreBusy
from ticktape.store import RetryingStore
from ticktape.store.base import Seal
from ticktape.store.questdb import (
    Fence,
    QuestDBAddress,
    QuestDBTickStore,
    book_frame,
    send_marks,
    serialise_frame,
    trades_frame,
)
from ticktape.ticks import BookBatch, TickBatch, TickCounts, TradeBatch

pytestmark = pytest.mark.questdb


def _questdb(store: RetryingStore) -> QuestDBTickStore:
    ticks = store.inner.ticks
    assert isinstance(ticks, QuestDBTickStore)
    return ticks


@pytest.mark.parametrize(
    ("split", "nth"),
    [
        # the whole send lands after the trades count: its books are counted, its trades not
        (False, 1),
        # after the order book count: the seal's other reads see it, its counts do not
        (False, 2),
        # its trades before the seal, its books after the trades count
        (True, 1),
        # its trades before the seal, its books after the order book count: the
        # last-send check then finds it whole, the cut's count finds its books
        (True, 2),
        # after the second read's trades query (the check of the send the first read
        # found newest): its order book query then sees rows the first read did not
        (False, 3),
        # its trades before the seal, its books after the second read's trades query:
        # that query's check finds the send in part, its order book query finds it whole
        (True, 3),
    ],
    ids=[
        "whole-after-trades-count",
        "whole-after-books-count",
        "books-after-trades-count",
        "books-after-books-count",
        "whole-after-trades-check",
        "books-after-trades-check",
    ],
)
def test_a_send_landing_between_the_seals_reads_is_counted_in_both_tables_or_neither(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
    split: bool,
    nth: int,
) -> None:
    lost, reaper = stores
    sender, sealer = _questdb(lost), _questdb(reaper)
    label = "count ticks"  # once per tick table of each read of a seal, trades first

    async def scenario() -> None:
        session = await start(lost, make_session, "lost")
        feed = _feed(session.id)
        early = feed.next_block() + feed.next_block()  # blocks 0 and 1: acknowledged
        await lost.ticks.write(early, owner="lost")
        last = feed.next_block()  # block 2: checked, then held until the seal reads

        loop = asyncio.get_running_loop()
        checked = asyncio.Event()
        gate = threading.Event()

        def hold() -> None:  # in the sender thread: the ownership check has passed
            loop.call_soon_threadsafe(checked.set)
            assert gate.wait(30), "the test never opened the gate"

        def between(table: str) -> None:  # before each table's own request
            if table.endswith("orderbook"):  # the trades are in
                hold()

        if split:
            sender.split_send = between
        else:
            sender.before_send = hold
        late = asyncio.create_task(lost.ticks.write(last, owner="lost"))
        seen = 0
        landed = False

        async def land(what: str) -> None:
            nonlocal seen, landed
            if what != label or landed:
                return
            seen += 1
            if seen == nth:
                landed = True
                gate.set()
                await late  # acknowledged: both tables committed
                await reaper.ticks.wait_visible(30)  # and applied

        try:
            await checked.wait()
            sealer.after_read = land
            seal, reaped = await reap(reaper, session)
        finally:
            sealer.after_read = None
            sender.before_send = None
            sender.split_send = None
            gate.set()
        await late
        assert landed, f"the seal made no read {label!r} #{nth}"
        await reaper.ticks.wait_visible(30)

        await _agree(reaper, session.id, seal, reaped, early, last)

    run(scenario())


async def _agree(
    reaper: RetryingStore,
    session_id: str,
    seal: Seal,
    reaped: Any,
    early: list[TickBatch],
    last: list[TickBatch],
) -> None:
    """What the seal counted is what it keeps and what the session's stats say, and both
    tables end at the same block: all three (the send was in before the seal settled on
    a state) or the first two (it landed after: fenced out as late)."""
    await reaper.ticks.wait_visible(30)
    kept = await reaper.ticks.count(session_id)
    assert seal.counts == kept
    assert (reaped.stats.trades, reaped.stats.orderbook) == (kept.trades, kept.orderbook)
    fence = Fence.load(seal.fence or "")
    assert fence.trades == fence.orderbook
    blocks = early + last if fence.trades == 2 else early
    assert kept == counts(blocks)
    ids, books = await _stored(reaper, session_id)
    assert sorted(ids) == _ids(blocks)
    assert sorted(books) == [int(t) for b in blocks if isinstance(b, BookBatch) for t in b.ts_us]
    # every row is kept or fenced out, and a cut the seal reports is fenced out
    fenced = await _questdb(reaper).fenced(session_id)
    assert kept + fenced == counts(early + last)
    assert seal.cut in (TickCounts(), fenced)


def test_a_request_committed_in_part_at_a_restart_then_resent_during_the_seal_is_one_state(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """A QuestDB restart can leave part of one ILP request's rows of a table committed,
    and the client then retries the same request (the same ``send_id`` and marks): here
    the first 40 of a block's 100 trades are in when the seal starts and the whole
    request lands after its trades count. Read at different moments, the trades count
    holds 40 of the send and the books count all of it, while the last-send check (made
    after) finds it whole: fences at one batch, 60 trades more landing under the fence."""
    lost, reaper = stores
    sealer = _questdb(reaper)
    address = QuestDBAddress.from_url(lost.url)

    async def scenario() -> None:
        session = await start(lost, make_session, "lost")
        feed = _feed(session.id)
        early = feed.next_block() + feed.next_block()  # blocks 0 and 1: acknowledged
        await lost.ticks.write(early, owner="lost")
        last = feed.next_block()  # block 2: one request, retried by the client
        trades = [b for b in last if isinstance(b, TradeBatch)]
        books = [b for b in last if isinstance(b, BookBatch)]
        await lost.ticks.wait_visible(30)
        with psycopg.connect(address.conninfo, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT max(tenure) FROM {address.prefix}trades WHERE session_id = %s",
                [session.id],
            ).fetchone()
        assert row is not None and row[0] is not None
        tenures = {session.id: int(row[0])}
        marks = send_marks(time.time_ns(), trades, books)
        frames = [
            (f"{address.prefix}trades", trades_frame(trades, tenures, marks)),
            (f"{address.prefix}orderbook", book_frame(books, tenures, marks)),
        ]

        def send(parts: list[tuple[str, pd.DataFrame]]) -> None:
            with Sender.from_conf(address.ilp_conf) as ilp:
                for table, frame in parts:
                    serialise_frame(ilp, table, frame)
                ilp.flush()

        # what the restart kept of the request: its first 40 trades (the marks among them)
        await asyncio.to_thread(send, [(frames[0][0], frames[0][1].iloc[:40])])
        await reaper.ticks.wait_visible(30)
        landed = False

        async def land(what: str) -> None:
            nonlocal landed
            if what == "count ticks" and not landed:  # after the trades count
                landed = True
                await asyncio.to_thread(send, frames)  # the client's retry, whole
                await reaper.ticks.wait_visible(30)

        sealer.after_read = land
        try:
            seal, reaped = await reap(reaper, session)
        finally:
            sealer.after_read = None
        assert landed
        await _agree(reaper, session.id, seal, reaped, early, last)

    run(scenario())


def test_a_seal_whose_tables_never_hold_still_gives_up_as_busy(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """A block lands after every count read of the seal: it never finds one state of both
    tables, and after its bounded reads fails as busy (transient: the store handle retries
    it) instead of deciding from a moving state; once the writes stop it seals."""
    lost, reaper = stores
    sealer = _questdb(reaper)

    async def scenario() -> None:
        session = await start(lost, make_session, "lost")
        feed = _feed(session.id)
        written = feed.next_block()
        await lost.ticks.write(written, owner="lost")
        await reaper.ticks.wait_visible(30)

        async def land(what: str) -> None:
            if what == "count ticks":
                block = feed.next_block()
                await lost.ticks.write(block, owner="lost")
                written.extend(block)
                await reaper.ticks.wait_visible(30)

        sealer.after_read = land
        try:
            with pytest.raises(StoreBusy, match="still landing"):
                await sealer.seal(session.id)
        finally:
            sealer.after_read = None
        seal = await sealer.seal(session.id)
        assert seal.counts == counts(written) and seal.cut == TickCounts()

    run(scenario())


@pytest.mark.parametrize("acknowledged", [False, True], ids=["checked", "acknowledged"])
def test_a_seal_counts_a_session_the_symbol_lookup_misses_by_its_string(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
    acknowledged: bool,
) -> None:
    """QuestDB 9.3.4's lookup of a ``session_id`` key can miss for a moment while other
    sessions' first rows land (``bench/tick_visibility.py``): a count read then finds
    none of the session's rows. Here the testing hook drops the session from every read
    by the symbol — a checked seal's two reads agree on the miss, an acknowledged seal
    reads once — and the seal still counts every row, read again by string; a session
    sealed with no rows stays at none."""
    lost, reaper = stores
    sealer = _questdb(reaper)

    async def scenario() -> None:
        session = await start(lost, make_session, "lost")
        empty = await start(lost, make_session, "lost")
        feed = _feed(session.id)
        written = feed.next_block() + feed.next_block()
        await lost.ticks.write(written, owner="lost")
        await reaper.ticks.wait_visible(30)

        def drop(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            return [r for r in rows if str(r[0]) != session.id]

        rechecked, confirmed = sealer.count_rechecked, sealer.count_confirmed
        sealer.on_count_rows = drop
        try:
            seal = await sealer.seal(session.id, acknowledged=acknowledged)
            none = await sealer.seal(empty.id, acknowledged=acknowledged)
        finally:
            sealer.on_count_rows = None
        assert seal.counts == counts(written) and seal.cut == TickCounts()
        fence = Fence.load(seal.fence or "")
        assert fence.trades == fence.orderbook == 1  # the last block written
        assert none.counts == TickCounts()
        reads = 1 if acknowledged else 2  # per seal, each a query per tick table
        assert sealer.count_confirmed - confirmed == 2 * reads  # the session, both tables
        assert sealer.count_rechecked - rechecked == 2 * 2 * reads  # and the empty one

    run(scenario())
