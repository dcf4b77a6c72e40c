"""A lease renewal on SQLite is not queued behind tick writes (the writer's priority path).

The first tick write is held inside its INSERT on the writer thread (a gate in the
driver connection) while two more tick writes and then an instance-lease renewal are
queued. When the gate opens, the renewal must run before both queued tick writes:
it waits for the tick write already running, never for the backlog. A first-come
first-served writer runs the two tick writes first and fails this test. What the
renewal waited for is counted by the store's write trace — no timing is asserted.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ticktape.domain import Session, SessionStatus
from ticktape.store.sqlite import SqliteStore
from ticktape.testing import eventually, sim_blocks

OWNER = "node-a"
GATE_TIMEOUT_S = 30.0  # far above a healthy test; only a wedged test reaches it


class Gate:
    """Holds the first trade INSERT on the writer thread until opened."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.opened = threading.Event()

    def check(self, sql: str) -> None:
        if self.armed and sql.lstrip().upper().startswith("INSERT OR IGNORE INTO TRADES"):
            self.armed = False
            self.entered.set()
            self.opened.wait(GATE_TIMEOUT_S)


def gated_connection(gate: Gate) -> type[sqlite3.Connection]:
    class GatedConnection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            gate.check(sql)
            return super().execute(sql, *args)

    return GatedConnection


def test_a_renewal_waits_for_the_running_tick_write_only(
    run: Callable[..., Any], tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    gate = Gate()
    store = SqliteStore(f"sqlite:///{tmp_path}/prio.db", connection_factory=gated_connection(gate))

    async def running() -> Session:
        created = await store.sessions.create_session(make_session(), actor="test")
        return await store.sessions.transition(
            created.id,
            expected_version=created.version,
            to_status=SessionStatus.RUNNING,
            actor="test",
            reason="started",
            owner=OWNER,
            lease_expires_at=datetime.now(UTC) + timedelta(minutes=10),
        )

    async def scenario() -> None:
        await store.open()
        try:
            sessions = [await running() for _ in range(3)]
            blocks = [
                [b for block in sim_blocks(200, ("BTC_USDT",), session_id=s.id) for b in block]
                for s in sessions
            ]
            gate.armed = True
            first = asyncio.create_task(store.ticks.write(blocks[0], owner=OWNER))
            await asyncio.to_thread(gate.entered.wait, GATE_TIMEOUT_S)
            assert gate.entered.is_set(), "the first tick write never reached its INSERT"
            queued = []
            for i, batches in enumerate(blocks[1:], start=1):
                queued.append(asyncio.create_task(store.ticks.write(batches, owner=OWNER)))

                async def bulk_queued(n: int = i) -> bool:
                    return store.queued_writes[1] >= n

                await eventually(bulk_queued, timeout_s=10, what=f"{i} tick write(s) queued")
            renewal = asyncio.create_task(
                store.sessions.renew_instance(
                    OWNER,
                    lease_expires_at=datetime.now(UTC) + timedelta(seconds=10),
                    progress={},
                )
            )

            async def renewal_queued() -> bool:
                return store.queued_writes[0] >= 1

            await eventually(renewal_queued, timeout_s=10, what="the renewal queued")
            gate.opened.set()
            owned = await renewal
            results = await asyncio.gather(first, *queued)

            assert {s.id for s in owned} == {s.id for s in sessions}
            assert all(r.counts.trades for r in results)  # every tick write was stored
            traces = [t for what, t in store.write_traces if what == "renew instance lease"]
            assert len(traces) == 1
            trace = traces[0]
            assert trace.bulk_ahead == 2  # two tick writes were queued before it ...
            assert trace.bulk_before == 0  # ... and it ran before either of them
            assert trace.queued <= trace.started <= trace.committed <= trace.delivered
        finally:
            gate.opened.set()
            await store.close()

    run(scenario())
