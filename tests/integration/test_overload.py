"""Overload on one SQLite store: lease renewals are never starved by tick writes.

One session with many symbols at the simulated feed's maximum rate floods the
writer with bulk tick batches while many ordinary sessions need their leases
renewed every heartbeat. Leases are short (heartbeat 0.5 s, lease 3 s), so a
renewal waiting behind a few seconds of tick writes would lose its lease. After
the run no session has been reaped or fenced (0 ``owner_lost``), and every
session stops with its stats equal to its stored rows.

Two sizes: a short one at the acceptance tests' harsh timing, and the issue's
own scale at the default timing — 100 symbols at the maximum rate plus 300
ordinary sessions for 60 s (``bench/overload.py`` runs the same and prints the
heartbeat figures). The flood's stop is bounded by the drain budget
(``TICKTAPE_STOP_DRAIN_S``): what it sheds is recorded as ``stop_drain`` gaps, and
the oracle (``tests/oracle.py``) checks every session's stored ticks against the
simulated feed with those gaps accounted for.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tests.oracle import check_stored, check_stored_counts
from ticktape.config import Settings
from ticktape.domain import Reason, SessionStatus
from ticktape.store.base import SessionQuery
from ticktape.testing import instances

Run = Callable[[Coroutine[Any, Any, Any]], Any]

SYMBOLS = [f"S{i:03d}_USDT" for i in range(40)]
ORDINARY = 60
RUN_S = 10.0
HEARTBEAT_S = 0.5  # the acceptance tests' timing: a lease lost after ~2.75 s unrenewed
LEASE_S = 3.0
STOP_WAIT_S = 60.0  # generous: the flood's drain budget is 10 s


def test_max_rate_ticks_do_not_starve_lease_renewals(run: Run, tmp_path: Path) -> None:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/overload.db",
        heartbeat_interval_s=HEARTBEAT_S,
        lease_s=LEASE_S,
        max_running_per_instance=1000,
    )

    async def scenario() -> None:
        async with instances(settings) as add:
            node = await add("node")
            flood = await node.create(symbols=SYMBOLS, rate_per_s=0)
            ordinary = [await node.create(symbols=["BTC_USDT"]) for _ in range(ORDINARY)]
            deadline = time.monotonic() + RUN_S
            while time.monotonic() < deadline:  # the load runs; watch for any loss early
                await asyncio.sleep(0.5)
                lost = await node.raw.sessions.count_sessions(
                    SessionQuery(statuses=frozenset({SessionStatus.FAILED}), include_deleted=True)
                )
                assert lost == 0, "a session failed under load"
            for s in [flood, *ordinary]:
                await node.service.stop(s.id, wait=True, timeout_s=30)
            ended = [await node.raw.sessions.get_session(s.id) for s in [flood, *ordinary]]
            assert [s.reason for s in ended if s.status is not SessionStatus.STOPPED] == []
            for s in ended:
                events = await node.raw.sessions.list_events(s.id)
                assert not [e for e in events if e.reason in {Reason.OWNER_LOST, Reason.LEASE_LOST}]
                counts = await node.raw.ticks.count(s.id)
                assert (s.stats.trades, s.stats.orderbook) == (counts.trades, counts.orderbook)
            assert ended[0].stats.trades > 100_000, ended[0].stats  # the flood really ran
            assert node.metric("ticktape_lease_renew_failures_total") == 0

    run(scenario())


@pytest.mark.skipif(
    not os.environ.get("TICKTAPE_ISSUE_SCALE"),
    reason="set TICKTAPE_ISSUE_SCALE=1 (.ci/run does): it takes 170-250 s, and it needs the "
    "machine to itself: on the shared 2-core machine at load average 20-35 other processes "
    "starved its heartbeats (rounds up to 5 s) and it lost ~1/3 of its leases",
)
@pytest.mark.timeout(600)  # 300 creates, 60 s of load, 301 stops, the oracle over all of them
def test_the_issue_scale_holds_at_the_default_timing(run: Run, tmp_path: Path) -> None:
    """100 symbols at the maximum rate + 300 ordinary sessions, 60 s, heartbeat 2 s /
    lease 10 s (the defaults): 0 failed, 0 owner_lost, every session stops — the flood
    within its drain budget — with stats = rows = the runner's tally (the oracle)."""
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/overload.db", max_running_per_instance=1000
    )
    assert (settings.heartbeat_interval_s, settings.lease_s) == (2.0, 10.0)
    symbols = [f"S{i:03d}_USDT" for i in range(100)]

    async def scenario() -> None:
        began = time.monotonic()
        async with instances(settings) as add:
            node = await add("node")
            ordinary = [await node.create(symbols=["BTC_USDT"]) for _ in range(300)]
            flood = await node.create(symbols=symbols, rate_per_s=0)  # the load starts
            created = time.monotonic()
            deadline = created + 60.0
            while time.monotonic() < deadline:  # the load runs; watch for any loss early
                await asyncio.sleep(0.5)
                lost = await node.raw.sessions.count_sessions(
                    SessionQuery(statuses=frozenset({SessionStatus.FAILED}), include_deleted=True)
                )
                assert lost == 0, "a session failed under load"
            asked = time.monotonic()
            await node.service.stop(flood.id, wait=True, timeout_s=STOP_WAIT_S)
            flood_stop_s = time.monotonic() - asked
            for s in ordinary:
                await node.service.stop(s.id)  # recorded at once; the runners end in parallel
            for s in ordinary:
                await node.service.wait_terminal(s.id, STOP_WAIT_S)
            stopped = time.monotonic()
            ended = [await node.raw.sessions.get_session(s.id) for s in [flood, *ordinary]]
            assert [s.reason for s in ended if s.status is not SessionStatus.STOPPED] == []
            for s in ended:
                events = await node.raw.sessions.list_events(s.id)
                assert not [e for e in events if e.reason in {Reason.OWNER_LOST, Reason.LEASE_LOST}]
                if s.id == flood.id:  # millions of rows: counted from the store's aggregates
                    await check_stored_counts(node.raw, s.id)
                else:
                    await check_stored(node.raw, s.id)  # stats = rows = tally, tick for tick
            assert ended[0].stats.trades > 100_000, ended[0].stats  # the flood really ran
            assert node.metric("ticktape_lease_renew_failures_total") == 0
            shed = sum(
                node.metrics.registry.get_sample_value(
                    "ticktape_ticks_shed_total", {"data_type": dt}
                )
                or 0.0
                for dt in ("trades", "orderbook")
            )
            print(
                f"MEASURED issue-scale overload: creates {created - began:.1f} s, flood stop "
                f"{flood_stop_s:.1f} s (budget {settings.stop_drain_s:g} s), 300 stops "
                f"{stopped - asked - flood_stop_s:.1f} s, flood stored {ended[0].stats.trades} "
                f"trades / {ended[0].stats.orderbook} snapshots, shed {shed:.0f} rows, "
                f"total {time.monotonic() - began:.1f} s"
            )

    run(scenario())
