"""Retention (``ticktape.retention``, ``ticktape gc``) against a real runtime and store.

A real instance records two sessions; one is stopped and purged while the other keeps
running. The purge removes the finished one (a dry run first changes nothing), a second
run finds nothing, and the running session's recording is untouched: it keeps running
and, once stopped, its stats equal its stored rows (the oracle). The CLI is run as a
subprocess on a real SQLite file, and the server setting as its background task.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.oracle import check_stored
from ticktape.config import Settings
from ticktape.domain import SessionStatus, Stats, new_session_id, utcnow
from ticktape.errors import SessionNotFound
from ticktape.retention import GcProgress, collect_garbage, keep_retention
from ticktape.store import Store, open_store
from ticktape.testing import Instance, eventually, instances

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def test_gc_purges_a_finished_session_and_never_the_running_one(
    backend: str, store: Store, run: Run
) -> None:
    if backend == "memory":
        pytest.skip("memory: no second handle for an instance to open")
    settings = Settings(store_url=store.url, flush_interval_s=0.05)

    async def body() -> None:
        async with instances(settings) as add:
            node: Instance = await add("a")
            done = await node.create(rate_per_s=200)
            live = await node.create(rate_per_s=200)

            async def both_written() -> bool:
                handles = node.supervisor.handles
                return all(
                    sid in handles and handles[sid].written.trades > 0 for sid in (done.id, live.id)
                )

            await eventually(both_written, timeout_s=60, what="both sessions recording")
            stopped = await node.service.stop(done.id, wait=True, timeout_s=30)
            assert stopped.status is SessionStatus.STOPPED
            await check_stored(node.raw, done.id)
            later = utcnow() + timedelta(seconds=2)  # the cutoff: 1 s from now
            retention = timedelta(seconds=1)

            dry = await collect_garbage(node.raw, retention, dry_run=True, now=later)
            assert [s.id for s in dry.sessions] == [done.id]
            assert dry.trades == stopped.stats.trades > 0
            assert dry.purged.sessions == 0
            assert (await node.raw.sessions.get_session(done.id)).stats == stopped.stats

            seen: list[GcProgress] = []
            report = await collect_garbage(node.raw, retention, now=later, progress=seen.append)
            assert report.purged.sessions == 1 and report.skipped == 0
            assert seen and seen[-1].purged.sessions == 1
            if backend == "sqlite":  # rows deleted at once, exactly the session's
                assert report.purged.trades == stopped.stats.trades
                assert report.purged.orderbook == stopped.stats.orderbook
                assert report.purged.events > 0
            with pytest.raises(SessionNotFound):
                await node.raw.sessions.get_session(done.id)
            again = await collect_garbage(node.raw, retention, now=later)
            assert again.sessions == [] and again.purged.sessions == 0

            # the running session was never touched: it records on, and its data is whole
            before = node.supervisor.handles[live.id].written.trades

            async def grew() -> bool:
                return node.supervisor.handles[live.id].written.trades > before

            await eventually(grew, timeout_s=30, what="the live session still recording")
            assert (await node.raw.sessions.get_session(live.id)).status is SessionStatus.RUNNING
            ended = await node.service.stop(live.id, wait=True, timeout_s=30)
            assert ended.status is SessionStatus.STOPPED
            await check_stored(node.raw, live.id)

    run(body())


def _ticktape(*args: str, env_store: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ticktape.cli.main", *args, "--store", env_store],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_gc_command_lists_in_a_dry_run_then_purges(tmp_path: Path, run: Run) -> None:
    url = f"sqlite:///{tmp_path / 'gc.db'}"
    settings = Settings(store_url=url, flush_interval_s=0.05)

    async def record() -> tuple[str, str]:
        async with instances(settings) as add:
            node: Instance = await add("a")
            done = await node.create(rate_per_s=200)

            async def written() -> bool:
                handle = node.supervisor.handles.get(done.id)
                return handle is not None and handle.written.trades > 0

            await eventually(written, timeout_s=60, what="ticks stored")
            await node.service.stop(done.id, wait=True, timeout_s=30)
            # a session another instance runs (its lease 10 min ahead), straight in the store
            live = await node.raw.sessions.create_session(
                replace(
                    done,
                    id=new_session_id(),
                    status=SessionStatus.PENDING,
                    version=1,
                    idempotency_key=None,
                    started_at=None,
                    ended_at=None,
                    reason=None,
                    stats=Stats(),
                    owner="elsewhere",
                    lease_expires_at=utcnow() + timedelta(minutes=10),
                ),
                actor="test",
            )
            await node.raw.sessions.transition(
                live.id,
                expected_version=1,
                to_status=SessionStatus.RUNNING,
                actor="test",
                reason="started",
            )
            return done.id, live.id

    done_id, live_id = run(record())
    # sessions ended before the command starts; 10 ms is well inside its start-up time
    dry = _ticktape("gc", "--older-than", "0.01s", "--dry-run", env_store=url)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 1 sessions" in dry.stdout and done_id in dry.stdout
    assert live_id not in dry.stdout

    real = _ticktape("gc", "--older-than", "0.01s", "--json", env_store=url)
    assert real.returncode == 0, real.stderr
    answer = json.loads(real.stdout)
    assert answer["sessions"] == [done_id] and answer["purged"]["sessions"] == 1
    assert answer["purged"]["trades"] == answer["found_trades"] > 0
    assert "gc: 1 sessions found, 1 purged" in real.stderr

    async def after() -> tuple[list[str], SessionStatus]:
        store = open_store(url)
        await store.open()
        try:
            with pytest.raises(SessionNotFound):
                await store.sessions.get_session(done_id)
            live = await store.sessions.get_session(live_id)
            return [s.id for s in (await store.sessions.find_finished(utcnow(), limit=10))], (
                live.status
            )
        finally:
            await store.close()

    finished, live_status = run(after())
    assert finished == [] and live_status is SessionStatus.RUNNING

    bad = _ticktape("gc", "--older-than", "soon", env_store=url)
    assert bad.returncode == 1 and bad.stderr.startswith("error: invalid retention 'soon'")
    missing = _ticktape("gc", "--older-than", "1d", env_store=f"sqlite:///{tmp_path / 'no.db'}")
    assert missing.returncode == 1 and "no SQLite store at" in missing.stderr
    assert not (tmp_path / "no.db").exists()


def test_a_server_with_a_retention_purges_on_its_own(tmp_path: Path, run: Run) -> None:
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    assert Settings.from_env({"TICKTAPE_RETENTION": "30d"}).retention == timedelta(days=30)
    with pytest.raises(SystemExit, match="TICKTAPE_RETENTION"):
        Settings.from_env({"TICKTAPE_RETENTION": "forever"})
    settings = Settings(store_url=url, flush_interval_s=0.05)

    async def body() -> None:
        async with instances(settings) as add:
            node: Instance = await add("a")
            done = await node.create(rate_per_s=50)
            live = await node.create(rate_per_s=50)
            await node.service.stop(done.id, wait=True, timeout_s=30)
            task = asyncio.create_task(
                keep_retention(node.raw, timedelta(milliseconds=1), interval_s=0.05)
            )
            try:

                async def purged() -> bool:
                    try:
                        await node.raw.sessions.get_session(done.id)
                    except SessionNotFound:
                        return True
                    return False

                await eventually(purged, timeout_s=30, what="the retention purging")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert (await node.raw.sessions.get_session(live.id)).status is SessionStatus.RUNNING

    run(body())


def _instance_rows(store: Store) -> list[tuple[str, Any]]:
    import psycopg

    from ticktape.store.questdb import QuestDBAddress

    address = QuestDBAddress.from_url(store.url)
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        rows = conn.execute(f"SELECT token, expires FROM {address.prefix}instances").fetchall()
    return sorted((str(token), expires) for token, expires in rows)


def test_questdb_instance_rows_of_long_dead_instances_are_taken_over(
    backend: str, store: Store, run: Run
) -> None:
    """QuestDB cannot delete rows: a new instance takes over the row of one whose lease
    expired over an hour ago, so ``tt_instances`` does not grow with every restart; of
    two new instances racing for one dead row, one gets it and the other adds a row."""
    if backend != "questdb":
        pytest.skip(f"{backend}: deletes instance rows (SQLite) or keeps none on disk (memory)")
    import psycopg

    from ticktape.store.questdb import QuestDBAddress

    address = QuestDBAddress.from_url(store.url)
    dead = utcnow() - timedelta(hours=2)
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        for token in ("dead-1", "dead-2"):  # as instances gone two hours ago left them
            conn.execute(
                f"INSERT INTO {address.prefix}instances (token, expires, progress, ts) "
                "VALUES (%s, %s, '{}', %s)",
                (token, dead, dead),
            )
    run(store.sessions.renew_instance("alive", lease_expires_at=utcnow(), progress={}))
    # "alive" took over a dead row: rows stay as many
    assert len(_instance_rows(store)) == 2 and "alive" in dict(_instance_rows(store))

    async def racing() -> None:
        lease = utcnow() + timedelta(seconds=10)
        await asyncio.gather(
            *(
                store.sessions.renew_instance(f"new-{i}", lease_expires_at=lease, progress={})
                for i in range(3)
            )
        )

    run(racing())
    rows = _instance_rows(store)
    # the other dead row taken over, two rows added; every instance has exactly one row
    assert [t for t, _ in rows] == ["alive", "new-0", "new-1", "new-2"]
