"""The oracle of tests/oracle.py: it accepts what the simulated feed produced, and nothing else."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.oracle import (
    Recording,
    StoredTicks,
    assert_no_count_mismatch,
    assert_stats_match_tally,
    check_recording,
)
from ticktape.domain import DataType, Reason, SessionEvent, SessionStatus
from ticktape.feeds.sim import SimExchange
from ticktape.ticks import BookBatch, TickBatch, TickCounts, TradeBatch

REC = Recording(
    "s-1",
    ("BTC_USDT", "ETH_USDT"),
    (DataType.TRADES, DataType.ORDERBOOK),
    seed=7,
    rate_per_s=200.0,
    book_every=5,
    depth=3,
)
START_US = 1_700_000_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def blocks(n: int) -> list[list[TickBatch]]:
    feed = SimExchange(
        REC.session_id,
        REC.symbols,
        data_types=REC.data_types,
        depth=REC.depth,
        seed=REC.seed,
        rate_per_s=REC.rate_per_s,
        book_every=REC.book_every,
        start_us=START_US,
    )
    return [feed.next_block() for _ in range(n)]


def stored(batches: list[TickBatch]) -> StoredTicks:
    out = StoredTicks()
    for b in batches:
        ts = [EPOCH + timedelta(microseconds=int(t)) for t in b.ts_us.tolist()]
        if isinstance(b, TradeBatch):
            for i, when in enumerate(ts):
                side = "buy" if int(b.side[i]) == 1 else "sell"
                out.add_trade(
                    b.symbol, int(b.trade_id[i]), when, float(b.price[i]), float(b.qty[i]), side
                )
        else:
            assert isinstance(b, BookBatch)
            for when in ts:
                out.add_book(b.symbol, when)
    return out


def flat(bs: list[list[TickBatch]]) -> list[TickBatch]:
    return [b for block in bs for b in block]


def test_the_feeds_own_output_passes_with_its_counts() -> None:
    bs = blocks(5)
    counts = check_recording(REC, stored(flat(bs)))
    per = SimExchange("x", REC.symbols[:1], rate_per_s=REC.rate_per_s).block_events  # 50
    assert counts == TickCounts(2 * 5 * per, 2 * 5 * per // 5)


def test_a_dropped_batch_is_a_hole() -> None:
    bs = flat(blocks(5))
    without = [b for i, b in enumerate(bs) if i != 4]  # block 1's BTC trades
    with pytest.raises(AssertionError, match="missing"):
        check_recording(REC, stored(without))


def test_a_dropped_last_block_is_caught_unless_a_crash_lost_the_tail() -> None:
    bs = blocks(5)
    partial = flat(bs[:4]) + bs[4][:2]  # the last block stored for BTC only
    with pytest.raises(AssertionError, match="different numbers"):
        check_recording(REC, stored(partial))
    check_recording(REC, stored(partial), tail_lost=True)


def test_a_batch_stored_twice_is_a_duplicate() -> None:
    bs = flat(blocks(3))
    with pytest.raises(AssertionError, match="duplicated"):
        check_recording(REC, stored([*bs, bs[0]]))


def test_snapshots_must_be_those_of_the_stored_trades() -> None:
    bs = flat(blocks(3))
    no_books = [b for b in bs if not (isinstance(b, BookBatch) and b.symbol == "ETH_USDT")]
    with pytest.raises(AssertionError, match="snapshots"):
        check_recording(REC, stored(no_books))


def test_other_prices_than_the_seeds_are_caught() -> None:
    bs = flat(blocks(2))
    other = stored(bs)
    sym = "BTC_USDT"
    tid, ts, price, qty, side = other.trades[sym][3]
    other.trades[sym][3] = (tid, ts, price + 0.01, qty, side)
    with pytest.raises(AssertionError, match="prices"):
        check_recording(REC, other)
    check_recording(REC, other, resumed=True)  # a resumed run is not the seed's replay


def _event(reason: str, detail: str | None) -> SessionEvent:
    return SessionEvent(
        session_id="s-1",
        seq=1,
        at=datetime.now(UTC),
        from_status=SessionStatus.RUNNING,
        to_status=SessionStatus.RUNNING,
        actor="a",
        reason=reason,
        detail=detail,
    )


def test_the_tally_helpers_fail_on_a_mismatch_or_no_tally() -> None:
    started = _event(Reason.STARTED, None)
    tally = _event(Reason.RUNNER_TALLY, json.dumps({"trades": 10, "orderbook": 2}))
    assert_stats_match_tally({"trades": 10, "orderbook": 2}, [started, tally])
    with pytest.raises(AssertionError, match="tally"):
        assert_stats_match_tally({"trades": 11, "orderbook": 2}, [started, tally])
    with pytest.raises(AssertionError, match="no runner_tally"):
        assert_stats_match_tally({"trades": 10, "orderbook": 2}, [started])
    assert_stats_match_tally({"trades": 0, "orderbook": 0}, [])  # never ran: nothing stored
    with pytest.raises(AssertionError, match="no runner"):
        assert_stats_match_tally({"trades": 1, "orderbook": 0}, [])
    with pytest.raises(AssertionError, match="count_mismatch"):
        assert_no_count_mismatch([tally, _event(Reason.COUNT_MISMATCH, "runner wrote ...")])


def test_a_self_stopped_runners_tally_may_trail_the_stats_by_a_late_answered_write() -> None:
    # test_shutdown_scale[questdb] under load: a 4.4 s loop stall fenced a runner; its
    # write in flight landed (counted by the claim's seal: 1,970 trades) but was answered
    # after the lease expired, so its tally (1,920) does not count it. Only a runner
    # that stopped itself may trail so, and never the other way.
    # The tally says how many rows that write held (unanswered_*): the stats exceed it
    # by at most those.
    started = _event(Reason.STARTED, None)
    counts = {"trades": 1920, "orderbook": 384, "unanswered_trades": 50, "unanswered_orderbook": 10}
    tally = _event(Reason.RUNNER_TALLY, json.dumps(counts))
    lost = _event(Reason.LEASE_LOST, "lease not renewed for 4.8s")
    zombie = _event(Reason.ZOMBIE_STOPPED, "runner stopped itself; 168 buffered ticks")
    landed = {"trades": 1970, "orderbook": 394}
    for events in (
        [started, lost, tally, zombie],
        [started, lost, tally],
        [started, tally, zombie],
    ):
        assert_stats_match_tally(landed, events)
        assert_stats_match_tally({"trades": 1920, "orderbook": 384}, events)
        with pytest.raises(AssertionError, match="below the self-stopped"):
            assert_stats_match_tally({"trades": 1910, "orderbook": 394}, events)
        with pytest.raises(AssertionError, match="above the self-stopped"):
            assert_stats_match_tally({"trades": 1971, "orderbook": 394}, events)
        with pytest.raises(AssertionError, match="above the self-stopped"):
            assert_stats_match_tally({"trades": 1970, "orderbook": 395}, events)
    # a note without unanswered_* (written before they existed): nothing above the tally
    old = _event(Reason.RUNNER_TALLY, json.dumps({"trades": 1920, "orderbook": 384}))
    assert_stats_match_tally({"trades": 1920, "orderbook": 384}, [started, lost, old])
    with pytest.raises(AssertionError, match="above the self-stopped"):
        assert_stats_match_tally(landed, [started, lost, old])
    with pytest.raises(AssertionError, match="differ from the runner's tally"):
        assert_stats_match_tally(landed, [started, tally])  # a run that ended as asked
    with pytest.raises(AssertionError, match="differ from the runner's tally"):
        # a self-stopped run's tally, then a later run's that ended as asked
        assert_stats_match_tally(landed, [started, lost, tally, zombie, started, tally])


def test_paged_reads_keep_every_row_once_and_duplicates_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    from dataclasses import dataclass

    import tests.oracle as oracle

    @dataclass(frozen=True)
    class Row:
        ts: datetime
        n: int

    t = [EPOCH + timedelta(seconds=i) for i in range(4)]
    stored_rows = [
        Row(t[0], 1),
        Row(t[1], 2),
        Row(t[1], 3),
        Row(t[1], 3),
        Row(t[2], 4),
        Row(t[3], 5),
    ]

    async def read(query: oracle.TickQuery) -> list[Row]:
        rows = [r for r in stored_rows if query.start is None or r.ts >= query.start]
        return rows[: query.limit]

    monkeypatch.setattr(oracle, "MAX_DATA_LIMIT", 4)
    assert asyncio.run(oracle._read_all(read, "s")) == stored_rows


def _shed_of(batches: list[TickBatch]) -> dict[tuple[str, DataType], int]:
    out: dict[tuple[str, DataType], int] = {}
    for b in batches:
        dt = DataType.TRADES if isinstance(b, TradeBatch) else DataType.ORDERBOOK
        out[(b.symbol, dt)] = out.get((b.symbol, dt), 0) + len(b)
    return out


def test_a_shed_tail_passes_only_when_the_gaps_count_it_exactly() -> None:
    bs = flat(blocks(5))
    # the drain stopped inside block 3: BTC's trades of it stored, its snapshots shed
    cut = 4 * 3 + 1
    kept, tail = bs[:cut], bs[cut:]
    with pytest.raises(AssertionError):
        check_recording(REC, stored(kept))  # unaccounted: caught
    counts = check_recording(REC, stored(kept), shed=_shed_of(tail))
    assert counts.trades == sum(len(b) for b in kept if isinstance(b, TradeBatch))
    short = dict(_shed_of(tail))
    short[("ETH_USDT", DataType.TRADES)] -= 1  # a gap that under-counts
    with pytest.raises(AssertionError, match="different numbers"):
        check_recording(REC, stored(kept), shed=short)
    books_short = dict(_shed_of(tail))
    books_short[("BTC_USDT", DataType.ORDERBOOK)] += 1  # or over-counts the snapshots
    with pytest.raises(AssertionError, match="snapshots"):
        check_recording(REC, stored(kept), shed=books_short)


def test_a_recorded_shed_tail_does_not_excuse_a_hole() -> None:
    bs = flat(blocks(5))
    kept, tail = bs[:16], bs[16:]  # blocks 0-3 stored, block 4 shed
    holed = [b for i, b in enumerate(kept) if i != 4]  # and block 1's BTC trades lost
    shed = _shed_of(tail)
    shed[("BTC_USDT", DataType.TRADES)] += len(kept[4])  # even if the counts add up
    with pytest.raises(AssertionError, match="missing"):
        check_recording(REC, stored(holed), shed=shed)
