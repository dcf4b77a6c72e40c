"""A runner that stops itself on a lost lease, with a write that landed but was answered
after the lease expired: the stats count that write, the runner's tally cannot.

The runner awaits its write in flight only until the lease expires (``runners/collect.py``:
past that, a claim may cut what lands). Here the write goes into the store at once and
only its answer is held, until the runner has stopped itself — as a loop stalled for
seconds delays an answer that QuestDB gave in time (test_shutdown_scale[questdb] at load
13: stats 1,970 trades = rows, tally 1,920). Invariant 7 holds (stats = stored rows,
counted by the reap); the tally trails by exactly that write, whose rows it records
(``unanswered_*``), and the oracle accepts a self-stopped runner's tally below the stats
by at most those rows, and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from tests.integration.test_faults import (  # the scenario fixture too
    EVENTUAL_S,
    FAILED,
    _true,
    history,
    recorded_exactly,
    renewals_failing_on_a,
    scenario,
    stored,
    wait_status,
)
from tests.oracle import assert_stats_match_tally, runner_tallies
from ticktape.domain import Reason
from ticktape.errors import LeaseLost, StoreUnavailable
from ticktape.testing import Instance, eventually
from ticktape.ticks import BookBatch, TickBatch, TradeBatch

Add = Callable[..., Awaitable[Instance]]
__all__ = ["scenario"]  # a fixture, used by name


@pytest.mark.timeout(240)
def test_a_write_answered_after_the_lease_expired_is_in_the_stats_and_not_the_tally(
    scenario: Any,
) -> None:
    async def body(add: Add) -> None:
        a, b, session, runner = await renewals_failing_on_a(add)
        ticks = a.raw.inner.ticks  # under a's faults and retries: a's writer goes through it
        write = ticks.write_sessions
        gate, held = asyncio.Event(), asyncio.Event()
        late: list[tuple[int, int]] = []  # (trades, books) of this session in held writes

        async def answered_late(writes: Sequence[list[TickBatch]], *, owner: str) -> Any:
            answers = await write(writes, owner=owner)  # stored now
            for batches in writes:
                if batches and batches[0].session_id == session.id:
                    trades = sum(len(x) for x in batches if isinstance(x, TradeBatch))
                    books = sum(len(x) for x in batches if isinstance(x, BookBatch))
                    late.append((trades, books))
            held.set()
            await gate.wait()  # the answer comes once the runner has stopped itself
            return answers

        ticks.write_sessions = answered_late  # type: ignore[method-assign]
        try:
            await eventually(
                lambda: _true(runner.done()), timeout_s=EVENTUAL_S, what="the runner to stop"
            )
            assert held.is_set(), "no write was in flight when the runner stopped itself"
        finally:
            gate.set()
            del ticks.write_sessions  # the class's again
        b.store.clear()
        reaped = await wait_status(b, session.id, FAILED, timeout_s=EVENTUAL_S)
        assert reaped.reason == Reason.OWNER_LOST
        rows = await stored(b, session.id)
        assert (reaped.stats.trades, reaped.stats.orderbook) == rows  # invariant 7
        events = await history(b, session.id)
        (tally,) = runner_tallies(events)
        late_trades, late_books = map(sum, zip(*late, strict=True))
        assert late_trades > 0
        assert (tally["trades"] + late_trades, tally["orderbook"] + late_books) == rows, tally
        # the tally says what it gave up on: that write's rows
        assert (tally["unanswered_trades"], tally["unanswered_orderbook"]) == (
            late_trades,
            late_books,
        ), tally
        # the oracle: below the stats is allowed for a self-stopped runner only, and by
        # the rows it gave up on unanswered at most
        stats = reaped.stats.to_dict()
        assert_stats_match_tally(stats, events)
        one_more = {**stats, "trades": stats["trades"] + 1}
        with pytest.raises(AssertionError, match="above the self-stopped"):
            assert_stats_match_tally(one_more, events)
        cut = [e for e in events if e.reason not in (Reason.LEASE_LOST, Reason.ZOMBIE_STOPPED)]
        with pytest.raises(AssertionError, match="differ from the runner's tally"):
            assert_stats_match_tally(stats, cut)
        await recorded_exactly(b, session.id)  # the feed's truth, and the tally rule

    scenario(body)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("retried", ["lost again", "refused"])
def test_a_write_failed_after_the_lease_was_lost_may_be_in_the_stats_as_unanswered(
    scenario: Any, retried: str
) -> None:
    """A write stored, its answer lost (a transient error) once the runner has lost its
    lease, then every retry's answer lost too, or the retry refused as ``LeaseLost``: the
    write fails for good, and the fenced runner never tries it again. The stats count it,
    the tally does not, and the tally's ``unanswered_*`` holds its rows."""

    async def body(add: Add) -> None:
        a, b, session, runner = await renewals_failing_on_a(add)
        handle = a.supervisor.handles[session.id]
        ticks = a.raw.inner.ticks
        write = ticks.write_sessions
        failed: list[tuple[int, int]] = []  # (trades, books) of this session's failed write

        async def stored_then_lost(writes: Sequence[list[TickBatch]], *, owner: str) -> Any:
            answers = list(await write(writes, owner=owner))  # stored now (a retry: again)
            for at, batches in enumerate(writes):
                if batches and batches[0].session_id == session.id:
                    if not failed:  # the first write: answered once the runner is fenced
                        trades = sum(len(x) for x in batches if isinstance(x, TradeBatch))
                        books = sum(len(x) for x in batches if isinstance(x, BookBatch))
                        failed.append((trades, books))
                        await handle.lost.wait()
                        answers[at] = StoreUnavailable("the answer was lost")
                    elif retried == "refused":  # the retry fenced: the rows stay stored
                        answers[at] = LeaseLost("the session's lease expired")
                    else:
                        answers[at] = StoreUnavailable("the answer was lost")
            return answers

        ticks.write_sessions = stored_then_lost  # type: ignore[method-assign]
        try:
            await eventually(
                lambda: _true(runner.done()), timeout_s=EVENTUAL_S, what="the runner to stop"
            )
        finally:
            del ticks.write_sessions  # the class's again
        ((failed_trades, failed_books),) = failed
        assert failed_trades > 0
        b.store.clear()
        reaped = await wait_status(b, session.id, FAILED, timeout_s=EVENTUAL_S)
        rows = await stored(b, session.id)
        assert (reaped.stats.trades, reaped.stats.orderbook) == rows  # invariant 7
        events = await history(b, session.id)
        (tally,) = runner_tallies(events)
        assert (tally["unanswered_trades"], tally["unanswered_orderbook"]) == failed[0], tally
        assert (tally["trades"] + failed_trades, tally["orderbook"] + failed_books) == rows, tally
        assert_stats_match_tally(reaped.stats.to_dict(), events)
        await recorded_exactly(b, session.id)

    scenario(body)
