"""A lost owner's send that lands while a seal is reading, reproduced on a real server.

A seal reads each tick table in a query of its own (its count, then its check of the
tenure's last send and what a cut leaves out), and a lost owner's send can land between
two of those reads: its ownership check passed before the reap, and the ``questdb``
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
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Run
from tests.integration.test_questdb_split_send import _counts, _feed, _ids, _reap, _start, _stored
from ticktape.store import RetryingStore
from ticktape.store.questdb import Fence, QuestDBTickStore
from ticktape.ticks import BookBatch, TickCounts

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
    ],
    ids=[
        "whole-after-trades-count",
        "whole-after-books-count",
        "books-after-trades-count",
        "books-after-books-count",
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
    label = "count ticks"  # once per tick table of the seal's grouped count, trades first

    async def scenario() -> None:
        session = await _start(lost, make_session, "lost")
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
            seal, reaped = await _reap(reaper, session)
        finally:
            sealer.after_read = None
            sender.before_send = None
            sender.split_send = None
            gate.set()
        await late
        assert landed, f"the seal made no read {label!r} #{nth}"
        await reaper.ticks.wait_visible(30)

        # What the seal counted is what it keeps and what the session's stats say, and
        # both tables end at the same block: all three (the send was in before the seal
        # settled on a state) or the first two (it landed after: fenced out as late).
        kept = await reaper.ticks.count(session.id)
        assert seal.counts == kept
        assert (reaped.stats.trades, reaped.stats.orderbook) == (kept.trades, kept.orderbook)
        fence = Fence.load(seal.fence or "")
        assert fence.trades == fence.orderbook
        blocks = early + last if fence.trades == 2 else early
        assert kept == _counts(blocks)
        ids, books = await _stored(reaper, session.id)
        assert sorted(ids) == _ids(blocks)
        want = [int(t) for b in blocks if isinstance(b, BookBatch) for t in b.ts_us]
        assert sorted(books) == want
        # every row is kept or fenced out, and a cut the seal reports is fenced out
        fenced = await sealer.fenced(session.id)
        assert kept + fenced == _counts(early + last)
        assert seal.cut in (TickCounts(), fenced)

    run(scenario())
