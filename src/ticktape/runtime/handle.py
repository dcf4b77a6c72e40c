"""The runtime's core type: what an instance holds for a session it runs.

A :class:`RunHandle` is created by the supervisor when it launches a session, shared
with the session's runner and the lease keeper, and dropped when the run ends. It
holds runtime handles only (events, the task, tallies of what was written) — never
a copy of the session's state, which lives in the store (invariant 1).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ticktape.ticks import TickCounts


@dataclass
class RunHandle:
    """What this instance holds for a session it runs: runtime handles, never its state."""

    session_id: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    handover: asyncio.Event = field(default_factory=asyncio.Event)
    written: TickCounts = field(default_factory=TickCounts)
    unstored: int = 0  # ticks that could not be stored and were given up on
    #: Rows of writes whose outcome the run does not know and never tries again: one it
    #: gave up on before its answer (a lost run whose lease ran out first), one refused as
    #: ``LeaseLost`` (an earlier try of it may have landed) or failing once the run was
    #: lost. Stored or not, they are not in ``written``.
    unanswered: TickCounts = field(default_factory=TickCounts)
    resumed: bool = False  # claimed after its owner was lost: continue after what is stored
    #: The session opted in to resume (``reconciler.is_resumable``: its kind and spec,
    #: which never change): a shutdown hands it over instead of stopping it.
    resumable: bool = False
    stop_reason: str | None = None  # the reason to record if the stop is not recorded yet
    lost_reason: str = ""  # how the runner learnt it no longer owns the session
    store_fault: str = ""  # the store error that kept its lease from being renewed, if any
    failed_writes: int = 0  # tick writes answered with an error: part of one may have landed
    #: The run ended with every tick write it made acknowledged, none failed, and visible:
    #: its owner's seal need not look for a write that landed in part (``TickStore.seal``).
    acknowledged: bool = False
    task: asyncio.Task[None] | None = None

    def lose(self, why: str) -> None:
        """Fence this runner: it writes nothing more. The first reason is kept."""
        if not self.lost.is_set():
            self.lost_reason = why
            self.lost.set()
