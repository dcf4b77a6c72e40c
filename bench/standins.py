"""Stand-ins for the benchmarks that measure the instance's tick writer alone
(``looplag.py``, ``writer_round.py``): a store that acknowledges every write at once,
and a session's rules with no gaps and nothing to shed."""

from __future__ import annotations

from collections.abc import Sequence

from ticktape.runtime.handle import RunHandle
from ticktape.store.base import WriteResult
from ticktape.ticks import TickBatch


class AckingTicks:
    async def write_sessions(
        self, writes: Sequence[list[TickBatch]], *, owner: str
    ) -> list[WriteResult | Exception]:
        return [WriteResult() for _ in writes]


class AckingStore:
    """Only what :class:`ticktape.runners.TickWriter` uses of a store: its ticks."""

    def __init__(self) -> None:
        self.ticks = AckingTicks()


class QuietClient:
    """Every session's rules (one object: they keep no state); :meth:`stored` is told of
    each acknowledged write and does nothing here."""

    def pending_gaps(self) -> bool:
        return False

    async def write_gaps(self, handle: RunHandle) -> bool:
        return True

    def drain_over(self) -> bool:
        return False

    def shed_rest(self, batches: list[TickBatch], handle: RunHandle) -> None:
        pass

    def stored(self, batches: list[TickBatch], handle: RunHandle) -> None:
        pass
