"""The instance's one tick writer (``runners/writer.py``), with the real runtime.

Many sessions of one instance are written with one tick-store call per flush interval
(counted at the store boundary: a per-session flusher makes one call per session); a
session whose buffer reaches ``eager_rows`` is written at once; a refused session is
fenced alone; and if the writer dies, no session is left running with nothing writing
it. Every wait is a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from tests.oracle import check_stored
from ticktape.config import Settings
from ticktape.domain import SessionStatus
from ticktape.runners import Instances, default_runners
from ticktape.testing import FaultRule, Instance, eventually, instances

Run = Callable[[Coroutine[Any, Any, Any]], Any]

SESSIONS = 12
INTERVAL_S = 0.1
WINDOW_S = 1.5
EVENTUAL_S = 20.0


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "store_url": f"sqlite:///{tmp_path}/writer.db",
        "heartbeat_interval_s": 0.2,
        "lease_s": 2.0,
        "flush_interval_s": INTERVAL_S,
        **overrides,
    }
    return Settings(**fields)


def _tick_calls(calls: FaultRule, items: FaultRule) -> int:
    """Tick-store write calls made: ``write_sessions`` calls, plus ``write`` calls made
    directly (a ``write`` rule also sees each item of a ``write_sessions`` call)."""
    in_calls = sum(len(c["writes"]) for c in calls.calls)
    return calls.hits + items.hits - in_calls


async def _all_running(node: Instance, ids: list[str]) -> bool | None:
    for sid in ids:
        s = await node.raw.sessions.get_session(sid)
        if s.status is not SessionStatus.RUNNING or not s.stats.trades:
            return None
    return True


def test_sessions_of_an_instance_make_one_tick_store_call_per_flush_interval(
    run: Run, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with instances(_settings(tmp_path)) as add:
            node = await add("node")
            sessions = [await node.create(symbols=["BTC_USDT"]) for _ in range(SESSIONS)]
            ids = [s.id for s in sessions]
            await eventually(
                lambda: _all_running(node, ids), what="every session writing", timeout_s=30
            )
            # Counted at the store boundary from now on: no fault, no delay.
            calls = node.store.delay("write_sessions", 0.0, times=None)
            items = node.store.delay("write", 0.0, times=None)
            loop = asyncio.get_running_loop()
            started = loop.time()

            async def window_over() -> bool | None:
                return True if loop.time() - started >= WINDOW_S else None

            await eventually(window_over, what="the counting window", timeout_s=30)
            elapsed = loop.time() - started
            made = _tick_calls(calls, items)
            intervals = elapsed / INTERVAL_S
            # One call per point of the clock (+1 for a point at each end of the window);
            # a flusher per session made about SESSIONS calls per interval.
            assert 0 < made <= intervals + 2, (made, intervals)
            sessions_written = sum(len(c["writes"]) for c in calls.calls)
            assert sessions_written >= made * SESSIONS // 2, (sessions_written, made)
            calls.remove()
            items.remove()
            for sid in ids:
                ended = await node.service.stop(sid, wait=True, timeout_s=EVENTUAL_S)
                assert ended.status is SessionStatus.STOPPED, ended
                await check_stored(node.raw, sid)

    run(scenario())


def test_a_busy_session_is_written_before_the_next_clock_point(run: Run, tmp_path: Path) -> None:
    """A buffer that reaches ``eager_rows`` is written at once: with a flush interval of
    an hour, a busy session's rows are still stored while it runs."""
    settings = _settings(tmp_path, flush_interval_s=3600.0, flush_eager_rows=200)

    async def scenario() -> None:
        async with instances(settings) as add:
            node = await add("node")
            s = await node.create(symbols=["BTC_USDT"], rate_per_s=2_000.0)

            async def stored() -> bool | None:
                counts = await node.raw.ticks.count(s.id)
                return True if counts.trades >= 1_000 else None

            await eventually(stored, what="a busy session's eager writes", timeout_s=EVENTUAL_S)
            ended = await node.service.stop(s.id, wait=True, timeout_s=EVENTUAL_S)
            assert ended.status is SessionStatus.STOPPED, ended
            await check_stored(node.raw, s.id)

    run(scenario())


def test_a_refused_session_is_fenced_alone_and_the_others_go_on(run: Run, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with instances(_settings(tmp_path)) as add:
            node = await add("node")
            sessions = [await node.create(symbols=["BTC_USDT"]) for _ in range(4)]
            ids = [s.id for s in sessions]
            await eventually(
                lambda: _all_running(node, ids), what="every session writing", timeout_s=30
            )
            taken = sessions[1]
            current = await node.raw.sessions.get_session(taken.id)
            await node.raw.sessions.transition(
                taken.id,
                expected_version=current.version,
                to_status=SessionStatus.STOPPING,
                actor="test",
                reason="test",
                owner="someone-else",
            )
            handle = node.supervisor.handles.get(taken.id)

            async def fenced() -> bool | None:
                gone = taken.id not in node.supervisor.handles
                return True if gone or (handle is not None and handle.lost.is_set()) else None

            await eventually(fenced, what="the refused session fenced", timeout_s=EVENTUAL_S)
            others = [sid for sid in ids if sid != taken.id]
            before = {sid: (await node.raw.ticks.count(sid)).trades for sid in others}

            async def others_go_on() -> bool | None:
                for sid in others:
                    if (await node.raw.ticks.count(sid)).trades <= before[sid]:
                        return None
                return True

            await eventually(others_go_on, what="the other sessions writing", timeout_s=30)
            for sid in others:
                ended = await node.service.stop(sid, wait=True, timeout_s=EVENTUAL_S)
                assert ended.status is SessionStatus.STOPPED, ended
                await check_stored(node.raw, sid)

    run(scenario())


def test_if_the_writer_dies_every_session_ends_failed_with_the_error(
    run: Run, tmp_path: Path
) -> None:
    shared = Instances()

    async def scenario() -> None:
        async with instances(_settings(tmp_path), default_runners(instances=shared)) as add:
            node = await add("node")
            sessions = [await node.create(symbols=["BTC_USDT"]) for _ in range(3)]
            ids = [s.id for s in sessions]
            await eventually(
                lambda: _all_running(node, ids), what="every session writing", timeout_s=30
            )
            parts = shared.find(node.owner)
            assert parts is not None
            writer = parts.writer
            # Not a store error: nothing retries it, the writer's task ends with it.
            node.store.fail("write_sessions", error=RuntimeError("writer bug"))

            async def all_failed() -> bool | None:
                for sid in ids:
                    if (await node.raw.sessions.get_session(sid)).status is not (
                        SessionStatus.FAILED
                    ):
                        return None
                return True

            await eventually(all_failed, what="every session failed", timeout_s=EVENTUAL_S)
            assert writer.failure is not None
            for sid in ids:
                events = await node.raw.sessions.list_events(sid)
                last = events[-1]
                assert last.to_status is SessionStatus.FAILED, last
                assert "tick writer died" in (last.detail or ""), last
                assert "writer bug" in (last.detail or ""), last
            assert not node.supervisor.running_ids
            # A new session gets a new writer and records.
            s = await node.create(symbols=["BTC_USDT"])
            await eventually(
                lambda: _all_running(node, [s.id]), what="a new session writing", timeout_s=30
            )
            assert shared.find(node.owner) is parts  # the same instance: its parts renewed
            renewed = parts.writer
            assert renewed is not writer and renewed.failure is None
            ended = await node.service.stop(s.id, wait=True, timeout_s=EVENTUAL_S)
            assert ended.status is SessionStatus.STOPPED, ended
            await check_stored(node.raw, s.id)

    run(scenario())
