"""Per-client limits the API applies before the service is called.

Session creation is rate-limited per client address with a token bucket:
``TICKTAPE_CREATE_RATE_PER_MIN`` creations a minute, and a burst of as many. A
client over it gets 429 ``limit_exceeded`` naming the setting, with
``Retry-After``. The buckets live in this process only (a per-instance limit).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ticktape.errors import LimitExceeded

MAX_TRACKED_CLIENTS = 10_000  # buckets kept at most; full (idle) ones are dropped first


class CreateRateLimiter:
    def __init__(self, per_min: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_min = per_min
        self._rate_per_s = per_min / 60.0
        self._burst = float(per_min)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def take(self, client: str) -> None:
        """Spend one creation for ``client``, or raise :class:`LimitExceeded` (429)."""
        now = self._clock()
        tokens, at = self._buckets.get(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate_per_s)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            raise LimitExceeded(
                f"too many sessions created from {client}: at most {self.per_min} a minute "
                "(limit TICKTAPE_CREATE_RATE_PER_MIN)",
                limit="TICKTAPE_CREATE_RATE_PER_MIN",
                retry_after_s=(1.0 - tokens) / self._rate_per_s,
            )
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._prune(now)

    def _prune(self, now: float) -> None:
        full = [
            c
            for c, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self._rate_per_s >= self._burst
        ]
        for client in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[client]
