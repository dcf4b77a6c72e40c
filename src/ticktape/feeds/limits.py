"""Rate limits an exchange puts on one IP, shared by every feed of the process.

Exchanges limit how often one IP may open connections and call their REST
endpoints, and ban an IP that keeps going past the limit. One session alone
stays far below them; hundreds of sessions reconnecting at once after a network
blip do not. So every connection attempt and every REST snapshot (or contract
detail) request of a connector first takes a slot from a limiter shared by all
feeds of the process that talk to the same exchange host: past the budget, the
attempt waits — the wait is part of the reconnect, so its gap simply lasts longer
— and the IP is never banned.

Budgets (``CONNECT_LIMITS`` / ``REST_LIMITS``), kept below the documented limits
so other programs on the same IP keep some room:

- Binance USD-M: 300 connection attempts per 5 minutes per IP are documented;
  ticktape allows itself 240. REST: 2,400 request weight per minute per IP; a
  ``/fapi/v1/depth?limit=1000`` snapshot weighs 20; ticktape uses at most 1,200
  weight per minute (60 snapshots).
- MEXC futures: no per-IP connection limit is documented for the contract
  WebSocket; ticktape applies the same 240 per 5 minutes. REST: 20 requests
  per 2 seconds; ticktape uses at most 10.

The per-connection limits are the connectors' own: Binance's 10 incoming
messages per second per connection (subscriptions paced at 8 per second, a
probe every few seconds) and 1,024 streams per connection; MEXC's ping every
15 s.

The budgets are per process (one ``ticktape serve``): instances sharing one
public IP share the exchange's limit too, and should stay few or have their
budgets lowered (``StreamSettings.connect_limit`` / ``rest_limit``).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

#: (attempts, window in seconds) per exchange and destination host.
CONNECT_LIMITS = {"binance": (240, 300.0), "mexc": (240, 300.0)}
#: (weight, window in seconds) of REST requests per exchange and destination host.
REST_LIMITS = {"binance": (1_200, 60.0), "mexc": (10, 2.0)}
DEFAULT_LIMIT = (240, 300.0)


class RateLimiter:
    """At most ``limit`` units (attempts, or request weight) in any ``window_s`` seconds.

    :meth:`acquire` waits until the units fit; waiters are served in arrival order.
    ``clock`` and ``sleep`` are injectable for tests (a fake clock).
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a rate limit needs limit >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._taken: deque[tuple[float, int]] = deque()  # (when, units), oldest first
        self._used = 0
        self._turn = asyncio.Lock()  # one waiter at a time: arrival order
        self.waited_s = 0.0  # total time callers spent waiting (for logs and tests)
        self.waiting = 0  # callers waiting for room right now

    def _expire(self, now: float) -> None:
        while self._taken and self._taken[0][0] <= now - self.window_s:
            self._used -= self._taken.popleft()[1]

    async def acquire(self, units: int = 1) -> float:
        """Take ``units``; returns how long this call waited for them (seconds)."""
        if not 1 <= units <= self.limit:
            raise ValueError(f"cannot take {units} units of a limit of {self.limit}")
        waited = 0.0
        async with self._turn:
            while True:
                now = self._clock()
                self._expire(now)
                if self._used + units <= self.limit:
                    self._taken.append((now, units))
                    self._used += units
                    self.waited_s += waited
                    return waited
                # wait until enough of the oldest units leave the window
                need = self._used + units - self.limit
                freed, delay = 0, self.window_s
                for when, n in self._taken:
                    freed += n
                    if freed >= need:
                        delay = when + self.window_s - now
                        break
                self.waiting += 1
                try:
                    await self._sleep(max(delay, 0.0))
                finally:
                    self.waiting -= 1
                waited += max(delay, 0.0)

    def used(self) -> int:
        """Units taken within the current window."""
        self._expire(self._clock())
        return self._used


_LIMITERS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str, str], RateLimiter]
] = weakref.WeakKeyDictionary()


def shared_limiter(kind: str, exchange: str, url: str, limit: tuple[int, float]) -> RateLimiter:
    """The process's limiter for ``kind`` (``connect`` / ``rest``) requests of ``exchange``
    to ``url``'s host: every feed of the running event loop gets the same one.

    The first caller's ``limit`` sets it; a later caller asking for a different
    limit gets its own (a test or a tool with its own budget).
    """
    host = urlsplit(url).netloc or url
    limiters = _LIMITERS.setdefault(asyncio.get_running_loop(), {})
    key = (kind, exchange, f"{host}|{limit[0]}/{limit[1]}")
    found = limiters.get(key)
    if found is None:
        found = limiters[key] = RateLimiter(limit[0], limit[1])
    return found
