"""What the recording runs of one instance share, owned by the runner registry.

Every collect and paper run of an instance writes through the instance's one tick
writer (:mod:`ticktape.runners.writer`, with its row pool) and, on the paced simulated
exchange, is fed by the instance's one sim driver (:mod:`ticktape.feeds.simdriver`).
The runner registry (:func:`ticktape.runners.default_runners`) keeps both in an
:class:`InstanceParts` per owner token (one per supervisor incarnation) and hands it
to each run it builds; the runtime never sees them (it cannot import runners).
"""

from __future__ import annotations

import asyncio
import weakref

from ticktape.config import Settings
from ticktape.feeds.simdriver import SimDriver
from ticktape.metrics import Metrics
from ticktape.runners.writer import TickWriter
from ticktape.store.base import Store


class InstanceParts:
    """One instance's tick writer and sim driver (see the module)."""

    def __init__(self, store: Store, settings: Settings, metrics: Metrics, owner: str) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._owner = owner
        self.writer = TickWriter(store, settings, metrics, owner)
        self._driver: SimDriver | None = None

    def renew_writer(self) -> TickWriter:
        """The writer, a new one if it died (runs already going keep the one they have)."""
        if self.writer.failure is not None:
            self.writer = TickWriter(self._store, self._settings, self._metrics, self._owner)
        return self.writer

    def driver(self) -> SimDriver:
        """The driver feeding every paced simulated session of the instance, on the running
        loop; it counts the rows it hands out in the instance's metrics."""
        loop = asyncio.get_running_loop()
        driver = self._driver
        if driver is None or driver.loop is not loop:
            trades = self._metrics.feed_rows.labels(exchange="sim", data_type="trades")
            books = self._metrics.feed_rows.labels(exchange="sim", data_type="orderbook")

            def count(n_trades: int, n_books: int) -> None:
                trades.inc(n_trades)
                books.inc(n_books)

            driver = self._driver = SimDriver(loop, on_rows=count)
        return driver

    @property
    def running_driver(self) -> SimDriver | None:
        """The driver, if one was made (for tests and benchmarks; :meth:`driver` makes one)."""
        return self._driver


class Instances:
    """The :class:`InstanceParts` of each instance whose runners a registry builds, by
    owner token; parts no run uses any more are dropped."""

    def __init__(self) -> None:
        self._parts: weakref.WeakValueDictionary[str, InstanceParts] = weakref.WeakValueDictionary()

    def get(self, store: Store, settings: Settings, metrics: Metrics, owner: str) -> InstanceParts:
        parts = self._parts.get(owner)
        if parts is None:
            parts = self._parts[owner] = InstanceParts(store, settings, metrics, owner)
        else:
            parts.renew_writer()
        return parts

    def find(self, owner: str) -> InstanceParts | None:
        """The instance's parts, if a run uses them (for tests and benchmarks)."""
        return self._parts.get(owner)


__all__ = ["InstanceParts", "Instances"]
