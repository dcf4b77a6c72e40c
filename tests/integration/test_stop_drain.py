"""A stop bounds its drain time: what the drain budget gives up is counted and recorded.

A collect session fed faster than its store takes ticks holds a full buffer (and,
at the simulator's maximum rate, the rest of the feed block it was putting when
the stop came). Draining all of that at the store's pace made a stop take minutes.
With ``TICKTAPE_STOP_DRAIN_S`` the runner writes for that long after the stop and
then sheds the rest: every shed row is a ``stop_drain`` gap of its symbol and data
type (with the exact count), the session's history has a ``stop_drain`` note with
the totals, the stats still equal the stored rows and the runner's tally, and the
stored trade ids are contiguous — the shed tail is accounted for by the gaps.

The store is made slow (every tick write waits) on a real SQLite file so that the
full drain would take minutes; the stop must end the session well within a generous
deadline. Latency is asserted as eventual outcome, never as a tight window.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from tests.oracle import check_stored, check_stored_counts
from ticktape.config import Settings
from ticktape.domain import DataType, Reason, SessionStatus
from ticktape.testing import eventually, instances
from ticktape.ticks import GapCause

Run = Callable[[Coroutine[Any, Any, Any]], Any]

SYMBOLS = [f"S{i:02d}_USDT" for i in range(40)]  # a max-rate block: 80 batches, 240,000 rows
WRITE_DELAY_S = 1.0  # each tick write (one batch: FLUSH_ROWS is below a batch's size)
FLUSH_ROWS = 500
BUFFER_ROWS = 20_000
STOP_DEADLINE_S = 30.0  # generous: the budget is 1 s; the full drain takes over a minute


def test_a_flooded_stop_ends_within_its_drain_budget_and_records_what_it_shed(
    run: Run, tmp_path: Path
) -> None:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/drain.db",
        buffer_max_rows=BUFFER_ROWS,
        flush_max_rows=FLUSH_ROWS,
        stop_drain_s=1.0,
    )

    async def scenario() -> None:
        async with instances(settings) as add:
            node = await add("node")
            node.store.delay("write", WRITE_DELAY_S, times=None)
            flood = await node.create(symbols=SYMBOLS, rate_per_s=0)

            async def stored() -> int | None:
                counts = await node.raw.ticks.count(flood.id)
                return counts.trades if counts.trades >= 2 * FLUSH_ROWS else None

            await eventually(stored, what="the flood's first writes", timeout_s=30)
            ended = await node.service.stop(flood.id, wait=True, timeout_s=STOP_DEADLINE_S)
            assert ended.status is SessionStatus.STOPPED, ended

            gaps = await node.raw.ticks.read_gaps(flood.id)
            shed = [g for g in gaps if g.cause is GapCause.STOP_DRAIN]
            assert shed, "the drain was cut, yet no stop_drain gap was stored"
            shed_rows = {dt: sum(g.lost or 0 for g in shed if g.data_type is dt) for dt in DataType}
            assert shed_rows[DataType.TRADES] > 0

            # shed = what the feed produced minus what was stored, per data type
            counts = await node.raw.ticks.count(flood.id)
            produced = {
                dt: node.metrics.registry.get_sample_value(
                    "ticktape_feed_rows_received_total",
                    {"exchange": "sim", "data_type": dt.value},
                )
                for dt in DataType
            }
            assert produced[DataType.TRADES] == counts.trades + shed_rows[DataType.TRADES]
            assert produced[DataType.ORDERBOOK] == counts.orderbook + shed_rows[DataType.ORDERBOOK]

            # the history says so, with the same totals
            events = await node.raw.sessions.list_events(flood.id)
            notes = [json.loads(e.detail or "{}") for e in events if e.reason == Reason.STOP_DRAIN]
            assert len(notes) == 1, events
            assert notes[0]["trades"] == shed_rows[DataType.TRADES]
            assert notes[0]["orderbook"] == shed_rows[DataType.ORDERBOOK]
            assert notes[0]["budget_s"] == 1.0

            # stats = stored rows = the runner's tally; ids contiguous apart from the gaps
            await check_stored(node.raw, flood.id)
            await check_stored_counts(node.raw, flood.id)  # the aggregate form agrees

    run(scenario())
