"""The tick floor, on a real server.

``session_id`` has no index, so a count by session reads every row of a tick table
unless it is bounded on ``ts``. The session log keeps a floor per session that every
tick row of the session is at or after (``tick_floor``): created at the session's
creation less a margin, lowered by the owner — a compare-and-set append of its own
tenure — before it sends an older row. Counts and seals read ``ts >= floor`` only. These
tests hold the floor to that: older rows lower it first and are all counted, a stale
owner cannot lower it, a seal counted before it moved does not end the tenure, and a
count really reads from the floor on (a row planted below it is not seen).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import Run
from tests.integration.questdb_fencing import claim, counts, reap, start
from ticktape.domain import SessionStatus
from ticktape.errors import LeaseLost, TransitionRace
from ticktape.feeds.sim import SimExchange
from ticktape.store import RetryingStore
from ticktape.store.questdb import TICK_FLOOR_MARGIN_US, Fence, QuestDBAddress
from ticktape.store.rules import to_us
from ticktape.ticks import TickBatch

pytestmark = pytest.mark.questdb

START_US = 1_700_000_000_000_000  # 2023-11-14: long before the test sessions (2024)


def _oldest(batches: list[TickBatch]) -> int:
    return min(int(b.ts_us.min()) for b in batches)


def _log(store: RetryingStore, session_id: str) -> list[tuple[Any, ...]]:
    """The session's log rows, oldest first: (row_kind, tick_floor, version)."""
    address = QuestDBAddress.from_url(store.url)
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        return conn.execute(
            f"SELECT row_kind, tick_floor, version FROM {address.prefix}session_log "
            "WHERE cast(id AS string) = %s ORDER BY row_seq",
            (session_id,),
        ).fetchall()


def test_a_session_starts_with_a_floor_before_its_creation_and_older_rows_lower_it_first(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    owner, reaper = stores

    async def scenario() -> None:
        session = await start(owner, make_session, "a")
        created = to_us(session.created_at)
        assert [floor for _, floor, _ in _log(owner, session.id)] == [
            created - TICK_FLOOR_MARGIN_US
        ] * 2  # the create's row and the start's

        # rows from after the floor: nothing appended
        recent = SimExchange(session.id, ("BTC_USDT",), start_us=created)
        newer = recent.next_block()
        await owner.ticks.write(newer, owner="a")
        assert len(_log(owner, session.id)) == 2

        # rows from a year before: the floor goes below them before they are sent
        old = SimExchange(session.id, ("ETH_USDT",), start_us=START_US)
        older = old.next_block() + old.next_block()
        assert _oldest(older) < created - TICK_FLOOR_MARGIN_US
        await owner.ticks.write(older, owner="a")
        log = _log(owner, session.id)
        assert [kind for kind, _, _ in log][-1] == "floor"
        assert log[-1][1] == _oldest(older) - TICK_FLOOR_MARGIN_US
        assert log[-1][2] == session.version  # the floor is not a change of the session

        # a reaper's seal counts both: every row is at or after the floor
        seal, reaped = await reap(reaper, session)
        assert seal.counts == counts(newer + older)
        assert reaped.stats.trades == seal.counts.trades
        assert Fence.load(seal.fence or "").floor == log[-1][1]
        assert await reaper.ticks.count(session.id) == seal.counts

    run(scenario())


def test_a_stale_owner_cannot_lower_the_floor_and_its_older_rows_are_refused(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    stale, claimer = stores

    async def scenario() -> None:
        session = await start(stale, make_session, "a")
        await claim(claimer, session, "b")
        before = _log(claimer, session.id)
        old = SimExchange(session.id, ("BTC_USDT",), start_us=START_US).next_block()
        with pytest.raises(LeaseLost):
            await stale.ticks.write(old, owner="a")
        assert _log(claimer, session.id) == before  # no floor row, nothing else
        await claimer.ticks.wait_visible(30)
        assert (await claimer.ticks.count(session.id)).trades == 0

    run(scenario())


def test_a_seal_counted_before_the_floor_went_down_does_not_end_the_tenure(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """The owner (a lost one still writing) lowers the floor and stores older rows after
    a reaper's seal counted from the floor before: that seal's transition is a race, and
    the reaper's next seal counts them."""
    owner, reaper = stores

    async def scenario() -> None:
        session = await start(owner, make_session, "a")
        recent = SimExchange(session.id, ("BTC_USDT",), start_us=to_us(session.created_at))
        first = recent.next_block()
        await owner.ticks.write(first, owner="a")
        await reaper.ticks.wait_visible(30)
        early = await reaper.ticks.seal(session.id)

        older = SimExchange(session.id, ("ETH_USDT",), start_us=START_US).next_block()
        await owner.ticks.write(older, owner="a")  # the floor goes down, then they land
        with pytest.raises(TransitionRace):
            await reaper.sessions.transition(
                session.id,
                expected_version=session.version,
                to_status=SessionStatus.FAILED,
                actor="reaper",
                reason="owner_lost",
                stats=early.counts.as_stats(0),
                lease_expires_at=None,
                seal=early,
            )
        seal, reaped = await reap(reaper, session)
        assert seal.counts == counts(first + older)
        assert reaped.stats.trades == counts(first + older).trades
        assert await reaper.ticks.count(session.id) == seal.counts

    run(scenario())


def test_a_count_reads_only_rows_at_or_after_the_floor(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """A row planted below the floor (no writer of the store can store one) is not seen
    by a count: the count's query is bounded on ``ts`` by the floor."""
    owner, _ = stores

    async def scenario() -> None:
        session = await start(owner, make_session, "a")
        created = to_us(session.created_at)
        block = SimExchange(session.id, ("BTC_USDT",), start_us=created).next_block()
        await owner.ticks.write(block, owner="a")
        address = QuestDBAddress.from_url(owner.url)
        below = created - TICK_FLOOR_MARGIN_US - 1
        with psycopg.connect(address.conninfo, autocommit=True) as conn:
            conn.execute(
                f"INSERT INTO {address.prefix}trades (session_id, symbol, trade_id, price, "
                "qty, side, ts, tenure, batch_seq) VALUES (%s, 'BTC_USDT', 999999999, 1.0, "
                "1.0, 'buy', cast(%s AS timestamp), %s, 0)",
                (session.id, below, session.version),
            )
        await owner.ticks.wait_visible(30)
        with psycopg.connect(address.conninfo, autocommit=True) as conn:
            [(stored,)] = conn.execute(
                f"SELECT count() FROM {address.prefix}trades WHERE session_id = %s",
                (session.id,),
            ).fetchall()
        assert stored == counts(block).trades + 1  # the planted row is there
        assert (await owner.ticks.count(session.id)).trades == counts(block).trades

    run(scenario())
