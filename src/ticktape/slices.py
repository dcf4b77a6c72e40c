"""Long plain-Python passes on the event loop, cut into slices.

A pass over thousands of sessions (a heartbeat's view of them, say) takes tens of
milliseconds; run in one step it holds the event loop that long, and every request and
tick-writer round waits for it. :class:`LoopSlicer` yields the loop once
``LOOP_SLICE_S`` of the pass has run since the last yield: they wait for one slice.
"""

from __future__ import annotations

import asyncio
import time

from ticktape.config import LOOP_SLICE_S


class LoopSlicer:
    """``await slicer.next()`` between two items of a pass: yields the loop (``sleep(0)``)
    once ``slice_s`` has passed since the last yield (or since the slicer was made)."""

    def __init__(self, slice_s: float = LOOP_SLICE_S) -> None:
        self._slice_s = slice_s
        self._until = time.perf_counter() + slice_s
        self.yields = 0  # how many times it yielded (a test reads it)

    async def next(self) -> None:
        if time.perf_counter() >= self._until:
            await asyncio.sleep(0)
            self.yields += 1
            self._until = time.perf_counter() + self._slice_s


__all__ = ["LoopSlicer"]
