"""Overload on one SQLite store: lease renewals are never starved by tick writes.

One session with many symbols at the simulated feed's maximum rate floods the
writer with bulk tick batches while many ordinary sessions need their leases
renewed every heartbeat. Leases are short (heartbeat 0.5 s, lease 3 s), so a
renewal waiting behind a few seconds of tick writes would lose its lease. After
the run no session has been reaped or fenced (0 ``owner_lost``), and every
session stops with its stats equal to its stored rows.

Scaled to run in CI (``bench/overload.py`` runs the full 60 s, 300 sessions,
100 symbols and reports the figures).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

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
