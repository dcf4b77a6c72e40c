"""One clock for every session of an instance: waits that end on a shared grid.

A thousand sessions each pacing its feed and its flushes on timers of its own cost the
event loop thousands of timers a second, at scattered moments: the flushes of the
sessions reach the store one by one (hundreds of small coalesced writes a second, each
one a hand-off to the store's writer thread). Waiting on a :class:`Ticker` instead
ends every wait at a point of a shared grid (the multiples of ``period`` on the loop's
clock): one timer per grid point for all the sessions of the process, all the waits due
then woken together — so the simulated feeds' blocks are handed out in one turn of the
loop (by the instance's sim driver, :mod:`ticktape.feeds.simdriver`: one wait per grid
point for all of them), the flushers that follow take them in the same turn, and the store coalesces
the whole instance's flushes into one write per grid point.

A ticker belongs to one loop, kept in a weak map: it holds its loop only weakly (a
strong reference from the map's value would keep every closed loop of a process — a
test's, a worker's — alive for ever, with its tickers). A wait asked of a ticker whose
loop is closed or gone fails at once (``RuntimeError``) rather than waiting for a grid
point no timer will fire.
"""

from __future__ import annotations

import asyncio
import math
import weakref

_TICKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Ticker]] = (
    weakref.WeakKeyDictionary()
)


class Ticker:
    """Futures that are resolved at points of the grid ``k * period`` (loop time)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float) -> None:
        self.period = period
        self._loop = weakref.ref(loop)
        self._due: dict[int, list[asyncio.Future[None]]] = {}
        self.fired = 0  # grid points whose timer ran, ever (one wake-up for all their waits)
        self.waits = 0  # waits asked, ever (each one a wake-up of its waiter)

    def at(self, when: float) -> asyncio.Future[None]:
        """Resolved at the first grid point at or after ``when`` (loop time)."""
        return self._wait(math.ceil(when / self.period))

    def after(self, now: float) -> asyncio.Future[None]:
        """Resolved at the first grid point after ``now``: within one period."""
        return self._wait(math.floor(now / self.period) + 1)

    def _wait(self, k: int) -> asyncio.Future[None]:
        loop = self._loop()
        if loop is None or loop.is_closed():
            raise RuntimeError("the ticker's event loop is closed")
        future: asyncio.Future[None] = loop.create_future()
        self.waits += 1
        waiting = self._due.get(k)
        if waiting is None:
            loop.call_at(k * self.period, self._fire, k)  # first: if it raises, no timerless k
            waiting = self._due[k] = []
        waiting.append(future)
        return future

    def _fire(self, k: int) -> None:
        self.fired += 1
        for future in self._due.pop(k, ()):
            if not future.done():  # ended otherwise meanwhile (a stop, a cancel)
                future.set_result(None)


def ticker(period: float, loop: asyncio.AbstractEventLoop | None = None) -> Ticker:
    """The running loop's ticker of this period (one per loop and period)."""
    loop = loop or asyncio.get_running_loop()
    tickers = _TICKERS.setdefault(loop, {})
    found = tickers.get(period)
    if found is None:
        found = tickers[period] = Ticker(loop, period)
    return found
