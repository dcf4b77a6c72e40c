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
heartbeat figures).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

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
STOP_WAIT_S = 120.0


def test_max_rate_ticks_do_not_starve_lease_renewals(run: Run, tmp_path: Path) -> None:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/overload.db",
        heartbeat_interval_s=HEARTBEAT_S,
        lease_s=LEASE_S,
        max_running_per_instance=1000,
    )
    run(_overload(settings, SYMBOLS, ORDINARY, RUN_S))


@pytest.mark.timeout(480)  # 300 creates, 60 s of load, 301 stops
def test_the_issue_scale_holds_at_the_default_timing(run: Run, tmp_path: Path) -> None:
    """100 symbols at the maximum rate + 300 ordinary sessions, 60 s, heartbeat 2 s /
    lease 10 s (the defaults): 0 owner_lost, every session stops with stats = rows."""
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/overload.db", max_running_per_instance=1000
    )
    assert (settings.heartbeat_interval_s, settings.lease_s) == (2.0, 10.0)
    symbols = [f"S{i:03d}_USDT" for i in range(100)]
    run(_overload(settings, symbols, 300, 60.0))


async def _overload(settings: Settings, symbols: list[str], ordinary_n: int, run_s: float) -> None:
    async with instances(settings) as add:
        node = await add("node")
        flood = await node.create(symbols=symbols, rate_per_s=0)
        ordinary = [await node.create(symbols=["BTC_USDT"]) for _ in range(ordinary_n)]
        deadline = time.monotonic() + run_s
        while time.monotonic() < deadline:  # the load runs; watch for any loss early
            await asyncio.sleep(0.5)
            lost = await node.raw.sessions.count_sessions(
                SessionQuery(statuses=frozenset({SessionStatus.FAILED}), include_deleted=True)
            )
            assert lost == 0, "a session failed under load"
        for s in [flood, *ordinary]:  # the flood drains up to its buffer bound first
            await node.service.stop(s.id, wait=True, timeout_s=STOP_WAIT_S)
        ended = [await node.raw.sessions.get_session(s.id) for s in [flood, *ordinary]]
        assert [s.reason for s in ended if s.status is not SessionStatus.STOPPED] == []
        for s in ended:
            events = await node.raw.sessions.list_events(s.id)
            assert not [e for e in events if e.reason in {Reason.OWNER_LOST, Reason.LEASE_LOST}]
            counts = await node.raw.ticks.count(s.id)
            assert (s.stats.trades, s.stats.orderbook) == (counts.trades, counts.orderbook)
        assert ended[0].stats.trades > 100_000, ended[0].stats  # the flood really ran
        assert node.metric("ticktape_lease_renew_failures_total") == 0
