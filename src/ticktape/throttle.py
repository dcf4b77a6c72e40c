"""Log lines about frequent events, at most one per interval, each with a count.

An overload or an outage makes the same event thousands of times a second (a feed
block waiting for room, a failing write, a missed lookup); one log line each would
drown the log and cost the event loop. :class:`LogThrottle` decides when a line is
due — at the first event, then once ``every_s`` has passed since the last line (or at
once when the event's ``key`` changes: a new cause of failure) — and carries the count
of the events since the last line, so the line says how many it stands for. It only
decides and counts; its caller writes the line. No I/O; the clock is given (a test
passes a fake one).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class LogThrottle:
    """``n = throttle.event()`` for each event: ``None`` if no line is due, else the
    number of events since the last line, this one included (then counted from 0)."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last_at: float | None = None  # when the last line was due; None: never
        self._last_key: str | None = None
        self._unlogged = 0

    def event(self, count: int = 1, *, key: str = "", now: float | None = None) -> int | None:
        """Count ``count`` events (of ``key``, at ``now`` — the clock's time if None)."""
        self._unlogged += count
        at = self._clock() if now is None else now
        if (
            self._last_at is not None
            and key == self._last_key
            and at - self._last_at < self.every_s
        ):
            return None
        logged, self._unlogged = self._unlogged, 0
        self._last_at, self._last_key = at, key
        return logged


__all__ = ["LogThrottle"]
