"""One change feed per server instance, fanned out to push subscribers.

Updates come from the store (DESIGN.md, invariant 1): while anyone listens,
the feed asks :meth:`SessionService.changes` for the sessions changed since the
position it last saw — one query every :data:`~ticktape.config.PUSH_INTERVAL_S` for all
subscribers of this instance — so a session changed through another instance
reaches this one's clients within a second. Running sessions' progress is
published by their owners' heartbeats, which are not changes of the session log, so
the feed also re-reads the running sessions once per heartbeat (``progress``) and
delivers those whose stats moved. Nothing is queried while nobody listens.

Each subscriber has a bounded queue: a subscriber that does not keep up (a
slow or dead client) is dropped when its queue is full — its connection is
closed and it may reconnect — so the server never buffers without bound — and
counted in ``ticktape_push_clients_dropped_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from fastapi import FastAPI

from ticktape.config import PUSH_INTERVAL_S, PUSH_QUEUE_MAX
from ticktape.domain import Session
from ticktape.errors import TicktapeError
from ticktape.store.base import ChangePage

log = logging.getLogger(__name__)

SEEN_MAX = 10_000  # sessions whose last delivered state is remembered, to skip repeats


Source = Callable[[str | None], Awaitable[ChangePage]]
Progress = Callable[[], Awaitable[list[Session]]]


def _fingerprint(session: Session) -> tuple[object, ...]:
    """What a client can see change; a lease renewal alone is not news."""
    return (session.version, session.status, session.stats, session.deleted, session.owner)


class Subscription:
    """One listener's bounded queue of changed sessions."""

    def __init__(self, feed: ChangeFeed, maxsize: int) -> None:
        self._feed = feed
        self._queue: asyncio.Queue[Session] = asyncio.Queue(maxsize)
        self.dropped = asyncio.Event()  # too slow: its connection is cut
        self.ended = asyncio.Event()  # the server is shutting down: its stream ends cleanly

    def offer(self, session: Session) -> bool:
        """Queue ``session``; False (and :attr:`dropped` set) when the queue is full."""
        try:
            self._queue.put_nowait(session)
        except asyncio.QueueFull:
            self.dropped.set()
            return False
        return True

    async def next(self) -> Session | None:
        """The next changed session; None once this subscription was dropped or ended."""
        if self.dropped.is_set() or self.ended.is_set():
            return None
        if not self._queue.empty():
            return self._queue.get_nowait()
        getter = asyncio.ensure_future(self._queue.get())
        stops = [asyncio.ensure_future(e.wait()) for e in (self.dropped, self.ended)]
        try:
            await asyncio.wait({getter, *stops}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (getter, *stops):
                if not task.done():
                    task.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._feed.remove(self)


class ChangeFeed:
    def __init__(
        self,
        source: Source,
        *,
        interval_s: float = PUSH_INTERVAL_S,
        queue_max: int = PUSH_QUEUE_MAX,
        on_drop: Callable[[], None] | None = None,
        progress: Progress | None = None,
        progress_every_s: float = 2.0,
    ) -> None:
        self._source = source
        self._progress = progress  # the running sessions, re-read for their stats
        self._progress_every_s = progress_every_s
        self._on_drop = on_drop  # counts a dropped client (the push_clients_dropped metric)
        self._interval_s = interval_s
        self._queue_max = queue_max
        self._subscribers: set[Subscription] = set()
        self._seen: OrderedDict[str, tuple[object, ...]] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self.dropped_total = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def subscribe(self) -> Subscription:
        """A new subscription; it sees every change committed after this returns."""
        sub = Subscription(self, self._queue_max)
        self._subscribers.add(sub)
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._ready = loop.create_future()
            self._task = loop.create_task(self._run(self._ready), name="ticktape-change-feed")
        assert self._ready is not None
        try:
            await asyncio.shield(self._ready)
        except BaseException:
            self.remove(sub)
            raise
        return sub

    def remove(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    async def aclose(self) -> None:
        """Stop reading the store and end every subscriber's stream."""
        for sub in self._subscribers:
            sub.ended.set()
        self._subscribers.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _deliver(self, session: Session) -> None:
        fingerprint = _fingerprint(session)
        seen = self._seen.get(session.id)
        if seen == fingerprint:
            return
        if seen is not None and int(seen[0]) > session.version:  # type: ignore[call-overload]
            return  # an older state than one already sent (a progress read raced a change)
        self._seen[session.id] = fingerprint
        self._seen.move_to_end(session.id)
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        for sub in list(self._subscribers):
            if not sub.offer(session):
                self._subscribers.discard(sub)
                self.dropped_total += 1
                if self._on_drop is not None:
                    self._on_drop()
                log.warning("push client dropped: too slow, %d updates not read", sub.pending())

    async def _run(self, ready: asyncio.Future[None]) -> None:
        cursor: str | None = None
        while cursor is None:
            try:
                cursor = (await self._source(None)).cursor
            except TicktapeError as exc:
                log.warning("change feed cannot start: %s", exc)
                await asyncio.sleep(self._interval_s)
        ready.set_result(None)
        progress_due = time.monotonic() + self._progress_every_s
        while self._subscribers:
            await asyncio.sleep(self._interval_s)
            try:
                page = await self._source(cursor)
            except TicktapeError as exc:
                log.warning("change feed: %s; retrying", exc)
                continue
            cursor = page.cursor
            for session in page.sessions:
                self._deliver(session)
            if self._progress is not None and time.monotonic() >= progress_due:
                progress_due = time.monotonic() + self._progress_every_s
                try:
                    running = await self._progress()
                except TicktapeError as exc:
                    log.warning("change feed: progress: %s; retrying", exc)
                    continue
                for session in running:
                    self._deliver(session)  # delivered only if its stats moved


def feed_for(app: FastAPI) -> ChangeFeed:
    """This app's one change feed, reading the app's service; made on first use."""
    feed: ChangeFeed | None = getattr(app.state, "change_feed", None)
    if feed is None:
        settings = app.state.settings
        feed = ChangeFeed(
            app.state.service.changes,
            interval_s=settings.push_interval_s,
            queue_max=settings.push_queue_max,
            on_drop=app.state.metrics.push_clients_dropped.inc,
            progress=app.state.service.progress,
            progress_every_s=settings.heartbeat_interval_s,
        )
        app.state.change_feed = feed
    return feed


async def close_feed(app: FastAPI) -> None:
    feed: ChangeFeed | None = getattr(app.state, "change_feed", None)
    if feed is not None:
        await feed.aclose()
