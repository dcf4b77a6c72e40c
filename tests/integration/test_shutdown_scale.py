"""A shutdown of many sessions at once (``Supervisor.shutdown``, as on SIGTERM).

Every session ends within the grace period in a state DESIGN.md allows — a
non-resumable one ``stopped`` (``server_shutdown``) with stats equal to its stored
rows and its runner's tally, a resumable one released for a claim with stats equal to
its stored rows, then resumed by another instance — and no task is cancelled: a
cancelled one would leave its session running here. On QuestDB the seals of sessions
ending together share their count queries (``QuestDBTickStore.on_count_group``): one
query per session per tick table scanned the day's partition each time, and 1,000
sessions stopping together outlasted the grace period (docs/benchmarks.md, qstop9).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.oracle import check_stored_counts
from ticktape.config import SHUTDOWN_TIMEOUT_S, Settings
from ticktape.domain import Reason, SessionStatus
from ticktape.store.questdb import QuestDBTickStore
from ticktape.testing import Instance, eventually, instances

Run = Callable[[Coroutine[Any, Any, Any]], Any]

SESSIONS = 200
RESUMABLE = 40  # of SESSIONS: handed over on shutdown instead of stopped
EVENTUAL_S = 90.0


async def _statuses(node: Instance, ids: list[str]) -> dict[str, SessionStatus]:
    return {sid: (await node.raw.sessions.get_session(sid)).status for sid in ids}


def _announced_seals(ticks: Any) -> list[int]:
    """The seal counts announced to ``ticks`` (``expect_seals``), from now on."""
    announced: list[int] = []
    inner = ticks.expect_seals

    def expect_seals(sessions: int, within_s: float) -> None:
        announced.append(sessions)
        inner(sessions, within_s)

    ticks.expect_seals = expect_seals
    return announced


def _count_reads(sessions: Any) -> list[str]:
    """Wraps the backend's ``get_session``: the ids read, one per call."""
    reads: list[str] = []
    get = sessions.get_session

    async def counted(session_id: str) -> Any:
        reads.append(session_id)
        return await get(session_id)

    sessions.get_session = counted
    return reads


@pytest.mark.timeout(300)
def test_a_shutdown_of_many_sessions_ends_each_in_an_allowed_state(
    run: Run, store_url: str
) -> None:
    settings = Settings(
        store_url=store_url,
        heartbeat_interval_s=0.5,
        lease_s=5.0,
        max_running_per_instance=SESSIONS,
        max_running_per_store=SESSIONS,
    )

    async def scenario() -> None:
        async with instances(settings) as add:
            a = await add("a")
            ids = []
            for n in range(SESSIONS):
                policy = "resume" if n < RESUMABLE else "fail"
                ids.append((await a.create(seed=n, on_owner_loss=policy)).id)
            resumable, stopping = ids[:RESUMABLE], ids[RESUMABLE:]

            async def all_recording() -> bool | None:
                for sid in ids:
                    s = await a.raw.sessions.get_session(sid)
                    if s.status is not SessionStatus.RUNNING:
                        return None
                counts = await asyncio.gather(*(a.raw.ticks.count(sid) for sid in ids))
                return all(c.trades for c in counts) or None

            await eventually(all_recording, what="every session recording", timeout_s=EVENTUAL_S)

            groups: list[list[str]] = []
            ticks = a.raw.inner.ticks
            if isinstance(ticks, QuestDBTickStore):
                ticks.on_count_group = groups.append
            reads = _count_reads(a.raw.inner.sessions)
            announced = _announced_seals(a.raw.inner.ticks)
            await a.shutdown(timeout_s=SHUTDOWN_TIMEOUT_S)
            del a.raw.inner.sessions.get_session  # the class's again
            del a.raw.inner.ticks.expect_seals
            # every run ending seals (stopped or handed over): the store was told so first
            assert announced == [SESSIONS], announced
            # every stop and hand-over is decided on one listing of the instance's
            # sessions (find_owned), each end on a read of its own (a read per stop
            # made 2 per session, reading again for the stop's compare-and-set 3)
            assert len(reads) == SESSIONS, len(reads)
            if isinstance(ticks, QuestDBTickStore):
                ticks.on_count_group = None
                sealed = {sid for group in groups for sid in group}
                assert sealed >= set(ids), f"{len(set(ids) - sealed)} sessions not counted"
                # one count per session was SESSIONS queries per tick table
                assert 0 < len(groups) <= SESSIONS // 4, [len(g) for g in groups]
            assert a.supervisor.running_ids == []

            for sid in stopping:
                s = await check_stored_counts(a.raw, sid)
                assert s.status is SessionStatus.STOPPED, s
                assert s.reason == Reason.SERVER_SHUTDOWN, s
            for sid in resumable:
                s = await a.raw.sessions.get_session(sid)
                # released: its lease expired now, for any instance to claim at once
                assert s.status is SessionStatus.RUNNING and s.lease_expires_at is None, s
                counts = await a.raw.ticks.count(sid)
                assert (s.stats.trades, s.stats.orderbook) == (counts.trades, counts.orderbook)

            # the resumable ones are another instance's at once, and record on
            b = await add("b")

            async def resumed() -> bool | None:
                for sid in resumable:
                    s = await b.raw.sessions.get_session(sid)
                    if s.owner != b.owner or s.status is not SessionStatus.RUNNING:
                        return None
                return True

            await eventually(resumed, what="the handed-over sessions resumed", timeout_s=60)
            for sid in resumable:
                ended = await b.service.stop(sid, wait=True, timeout_s=EVENTUAL_S)
                assert ended.status is SessionStatus.STOPPED, ended
                await check_stored_counts(b.raw, sid)
            assert set((await _statuses(b, ids)).values()) == {SessionStatus.STOPPED}

    run(scenario())
