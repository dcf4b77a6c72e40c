"""A writer round over many sessions yields the event loop between slices of its work.

With ``slice_s`` 0 every session is a slice: a callback waiting for the loop runs between
the sessions taken and between the answers counted, and still every session's batches go
in one store call per round, in order; what a session buffers during a yield goes in the
next round, after what was taken (the order rule). The store is a stand-in that records
each ``write_sessions`` call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

from tests.unit.writer_stubs import HOUR, Client, trades
from ticktape.config import Settings
from ticktape.metrics import Metrics
from ticktape.runners import TickWriter
from ticktape.runtime.handle import RunHandle
from ticktape.store.base import Store, WriteResult
from ticktape.ticks import TickBatch

WAIT_S = 30.0  # an upper bound on an awaited event, never a pause
SESSIONS = "abcdef"


class _Ticks:
    def __init__(self) -> None:
        self.calls: list[list[tuple[str, list[int]]]] = []  # per call: (session, first ids)
        self.called = asyncio.Event()  # set at each call

    async def write_sessions(
        self, writes: Sequence[list[TickBatch]], *, owner: str
    ) -> list[WriteResult | Exception]:
        self.calls.append(
            [(batches[0].session_id, [int(b.ts_us[0]) for b in batches]) for batches in writes]
        )
        self.called.set()
        return [WriteResult() for _ in writes]


class _Store:
    def __init__(self) -> None:
        self.ticks = _Ticks()


def test_a_round_yields_between_sessions_and_keeps_one_call_and_the_order() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        settings = Settings(store_url="memory://", flush_interval_s=HOUR, flush_eager_rows=1)
        store = _Store()
        writer = TickWriter(cast(Store, store), settings, Metrics(), "owner")
        writer.slice_s = 0.0  # a slice per session
        acked: list[str] = []
        clients = [Client(acked) for _ in SESSIONS]
        regs = [writer.register(RunHandle(s), c) for s, c in zip(SESSIONS, clients, strict=True)]
        seen: list[tuple[int, int]] = []  # (buffers taken, sessions acknowledged) per probe
        more: list[int] = []  # what session a buffered during the round

        def probe() -> None:
            taken = sum(reg.buffer.rows == 0 for reg in regs)
            if taken == 1 and not more:  # mid-round: session a buffers more meanwhile
                assert regs[0].buffer.offer([trades("a", 100)])
                more.append(100)
            seen.append((taken, len(acked)))
            if len(acked) < len(SESSIONS):
                loop.call_soon(probe)

        for s, reg in zip(SESSIONS, regs, strict=True):
            assert reg.buffer.offer([trades(s, 0)])  # due at once: one round for all
        loop.call_soon(probe)
        await asyncio.wait_for(asyncio.gather(*(c.written.wait() for c in clients)), WAIT_S)

        taking = {taken for taken, _ in seen}
        counting = {count for _, count in seen}
        assert any(0 < t < len(SESSIONS) for t in taking)  # the loop ran mid-taking
        assert any(0 < c < len(SESSIONS) for c in counting)  # ... and mid-counting
        first = store.ticks.calls[0]
        assert [s for s, _ in first] == list(SESSIONS)  # one store call for the round
        assert all(ids == [0] for _, ids in first)

        async def second_call() -> None:
            while len(store.ticks.calls) < 2:
                store.ticks.called.clear()
                await store.ticks.called.wait()

        await asyncio.wait_for(second_call(), WAIT_S)
        assert more == [100]
        assert store.ticks.calls[1] == [("a", [100])]  # next round, after what was taken
        assert acked == [*SESSIONS, "a"]
        for reg in regs:
            await reg.buffer.close()
            await asyncio.wait_for(reg.done, WAIT_S)
            writer.unregister(reg)

    asyncio.run(scenario())
