"""A session's slow gap write holds back that session's ticks, not the other sessions'.

The instance's tick writer writes a session's gap rows before the ticks that follow
them. Here one session's gap write hangs (its store call does not answer until the
test lets it): the other session's batches must go on being written, round after
round, while none of the hung session's ticks are written before its gap rows. The
flush interval is an hour and every put makes its buffer due at once
(``flush_eager_rows`` 1), so the rounds counted are the ones the puts cause; the store
is a stand-in that records each ``write_sessions`` call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

from tests.unit.writer_stubs import HOUR, trades
from ticktape.config import Settings
from ticktape.metrics import Metrics
from ticktape.runners import TickWriter
from ticktape.runtime.handle import RunHandle
from ticktape.store.base import Store, WriteResult
from ticktape.ticks import TickBatch

WAIT_S = 30.0  # an upper bound on an awaited event, never a pause


class _Ticks:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []  # the sessions of each write_sessions call

    async def write_sessions(
        self, writes: Sequence[list[TickBatch]], *, owner: str
    ) -> list[WriteResult | Exception]:
        self.calls.append([batches[0].session_id for batches in writes])
        return [WriteResult() for _ in writes]


class _Store:
    def __init__(self) -> None:
        self.ticks = _Ticks()


class _Client:
    """A run's rules for the writer; its gap write waits for ``gate`` if given."""

    def __init__(self, log: list[tuple[str, str]], gate: asyncio.Event | None = None) -> None:
        self.log = log
        self.gate = gate
        self.gaps = 0
        self.written = asyncio.Event()  # set at each acknowledged write of its ticks
        self.writing_gaps = asyncio.Event()  # set once its gap write started

    def pending_gaps(self) -> bool:
        return self.gaps > 0

    async def write_gaps(self, handle: RunHandle) -> bool:
        self.writing_gaps.set()
        if self.gate is not None:
            await self.gate.wait()
        self.gaps = 0
        self.log.append(("gaps", handle.session_id))
        return True

    def drain_over(self) -> bool:
        return False

    def shed_rest(self, batches: list[TickBatch], handle: RunHandle) -> None:
        raise AssertionError("nothing is shed here")

    def stored(self, batches: list[TickBatch], handle: RunHandle) -> None:
        self.log.append(("ticks", handle.session_id))
        self.written.set()


def test_a_slow_gap_write_of_one_session_does_not_delay_another_sessions_batches() -> None:
    async def scenario() -> None:
        settings = Settings(store_url="memory://", flush_interval_s=HOUR, flush_eager_rows=1)
        store = _Store()
        writer = TickWriter(cast(Store, store), settings, Metrics(), "owner")
        log: list[tuple[str, str]] = []
        gate = asyncio.Event()
        slow, other = _Client(log, gate), _Client(log)
        slow.gaps = 1  # a gap seen before its ticks: written first
        a = writer.register(RunHandle("a"), slow)
        b = writer.register(RunHandle("b"), other)
        await a.buffer.put([trades("a", 0)])
        for round_ in range(3):  # the other session's batches, one round each
            other.written.clear()
            await b.buffer.put([trades("b", 10 * round_)])
            await asyncio.wait_for(other.written.wait(), WAIT_S)
        assert [c for c in store.ticks.calls if "b" in c] == [["b"]] * 3
        assert not [c for c in store.ticks.calls if "a" in c]  # behind its gap rows
        assert ("gaps", "a") not in log

        gate.set()  # the gap write answers: then its ticks go
        await asyncio.wait_for(slow.written.wait(), WAIT_S)
        mine = [entry for entry in log if entry[1] == "a"]
        assert mine == [("gaps", "a"), ("ticks", "a")]
        assert writer.calls == len(store.ticks.calls) == 4

        for reg in (a, b):
            await reg.buffer.close()
            await asyncio.wait_for(reg.done, WAIT_S)
            writer.unregister(reg)

    asyncio.run(scenario())


def test_a_run_that_ends_with_its_gap_write_in_flight_cancels_it() -> None:
    async def scenario() -> None:
        settings = Settings(store_url="memory://", flush_interval_s=HOUR, flush_eager_rows=1)
        writer = TickWriter(cast(Store, _Store()), settings, Metrics(), "owner")
        log: list[tuple[str, str]] = []
        slow = _Client(log, asyncio.Event())  # never answers
        slow.gaps = 1
        reg = writer.register(RunHandle("a"), slow)
        await reg.buffer.put([trades("a", 0)])
        await asyncio.wait_for(slow.writing_gaps.wait(), WAIT_S)  # the round started it
        gap_write = reg.gap_write
        assert gap_write is not None
        writer.unregister(reg)  # the run is over (lost or cancelled)
        await asyncio.gather(gap_write, return_exceptions=True)
        assert gap_write.cancelled()
        assert log == []

    asyncio.run(scenario())


class _Broken(_Client):
    async def write_gaps(self, handle: RunHandle) -> bool:
        raise RuntimeError("gap bug")


def test_a_gap_write_that_fails_with_no_store_error_fails_its_session_alone() -> None:
    async def scenario() -> None:
        settings = Settings(store_url="memory://", flush_interval_s=HOUR, flush_eager_rows=1)
        store = _Store()
        writer = TickWriter(cast(Store, store), settings, Metrics(), "owner")
        log: list[tuple[str, str]] = []
        broken, other = _Broken(log), _Client(log)
        broken.gaps = 1
        a = writer.register(RunHandle("a"), broken)
        b = writer.register(RunHandle("b"), other)
        await a.buffer.put([trades("a", 0)])
        done = await asyncio.wait_for(asyncio.wait({a.done}), WAIT_S)
        assert isinstance(done[0].pop().exception(), RuntimeError)
        assert a.handle.stop.is_set()  # its run ends, failed with the error
        await b.buffer.put([trades("b", 0)])  # the writer goes on for the others
        await asyncio.wait_for(other.written.wait(), WAIT_S)
        assert writer.failure is None
        assert not [c for c in store.ticks.calls if "a" in c]
        for reg in (a, b):
            await reg.buffer.close()
        await asyncio.wait_for(b.done, WAIT_S)
        for reg in (a, b):
            writer.unregister(reg)

    asyncio.run(scenario())
