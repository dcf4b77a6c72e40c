"""Capacity: heartbeats write nothing per session, so a session's history stays bounded.

A real runtime (``ticktape.testing.Instance``) runs sessions on a real SQLite file or
QuestDB; after many renewal rounds the session's stored history (QuestDB: its rows
in the session log; both: its events) has not grown, while its stats, published by
the heartbeat, follow the runner (at most one heartbeat old).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
import pytest

from tests.oracle import check_stored
from ticktape.config import Settings
from ticktape.domain import SessionStatus
from ticktape.store import Store
from ticktape.testing import Instance, eventually, instances

Run = Callable[[Coroutine[Any, Any, Any]], Any]
ROUNDS = 20
SESSIONS = 5


def _log_rows(store: Store, session_id: str) -> int | None:
    """QuestDB: the session's rows in the session log (None on other backends)."""
    if not store.url.startswith("questdb"):
        return None
    from ticktape.store.questdb import QuestDBAddress

    address = QuestDBAddress.from_url(store.url)
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count() FROM {address.prefix}session_log WHERE id = %s", (session_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_heartbeats_grow_no_session_history_and_publish_fresh_stats(
    backend: str, store: Store, run: Run
) -> None:
    if backend == "memory":
        pytest.skip("memory: no second handle for an instance to open")
    settings = Settings(
        store_url=store.url, heartbeat_interval_s=60.0, lease_s=300.0, flush_interval_s=0.05
    )

    async def body() -> None:
        async with instances(settings) as add:
            node: Instance = await add("a")
            ids = [(await node.create(rate_per_s=200)).id for _ in range(SESSIONS)]

            async def all_running() -> bool:
                got = [await node.raw.sessions.get_session(sid) for sid in ids]
                return all(s.status is SessionStatus.RUNNING for s in got)

            await eventually(all_running, timeout_s=30, what="sessions running")

            async def all_written() -> bool:
                return all(node.supervisor.handles[sid].written.trades > 0 for sid in ids)

            await eventually(all_written, timeout_s=30, what="ticks stored")
            await node.supervisor.heartbeat()
            events = {sid: len(await node.raw.sessions.list_events(sid)) for sid in ids}
            rows = {sid: _log_rows(store, sid) for sid in ids}
            for _ in range(ROUNDS):
                written = {
                    sid: node.supervisor.handles[sid].written.trades
                    for sid in ids
                    if sid in node.supervisor.handles
                }
                await node.supervisor.heartbeat()
                for sid, trades in written.items():
                    shown = await node.raw.sessions.get_session(sid)
                    # what the runner had written when the heartbeat started, or more
                    assert shown.stats.trades >= trades
                    assert shown.stats.trades <= node.supervisor.handles[sid].written.trades
            assert {sid: len(await node.raw.sessions.list_events(sid)) for sid in ids} == events
            assert {sid: _log_rows(store, sid) for sid in ids} == rows
            final = [await node.raw.sessions.get_session(sid) for sid in ids]
            assert min(s.stats.trades for s in final) > 0  # published, not the stored 0
            for sid in ids:
                ended = await node.service.stop(sid, wait=True, timeout_s=30)
                assert ended.status is SessionStatus.STOPPED
                await check_stored(node.raw, sid)

    run(body())
