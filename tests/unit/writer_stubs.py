"""Stand-ins for the tick writer's tests: a session's trades and a run's rules (the
writer's client) that never has gaps or sheds."""

from __future__ import annotations

import asyncio

import numpy as np

from ticktape.runtime.handle import RunHandle
from ticktape.ticks import TickBatch, TradeBatch

HOUR = 3600.0


def trades(session_id: str, start: int = 0, n: int = 3) -> TradeBatch:
    """``n`` trades of ``session_id`` whose ids and times count up from ``start``."""
    ids = np.arange(start, start + n, dtype=np.int64)
    return TradeBatch(
        session_id, "X", ids, ids, np.ones(n), np.ones(n), np.ones(n, dtype=np.int8), recv_us=ids
    )


class Client:
    """A run's rules for the writer, with no gaps and nothing shed: each acknowledged
    write of its ticks appends the session to ``acked`` and sets ``written``; without
    ``acked``, a write of its ticks fails the test (nothing is written there)."""

    def __init__(self, acked: list[str] | None = None) -> None:
        self.acked = acked
        self.written = asyncio.Event()

    def pending_gaps(self) -> bool:
        return False

    async def write_gaps(self, handle: RunHandle) -> bool:
        raise AssertionError("no gaps here")

    def drain_over(self) -> bool:
        return False

    def shed_rest(self, batches: list[TickBatch], handle: RunHandle) -> None:
        raise AssertionError("nothing is shed here")

    def stored(self, batches: list[TickBatch], handle: RunHandle) -> None:
        if self.acked is None:
            raise AssertionError("nothing is written here")
        self.acked.append(handle.session_id)
        self.written.set()
