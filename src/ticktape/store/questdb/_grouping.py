"""Work that queues up while a group is in progress goes together in the next group.

The QuestDB backend uses this three times: session-log appends share one
transaction (``_commit.py``), tick writes share one ILP send
(``_ticks.py``) and a heartbeat's newest-row reads share one query
(``_sessions.py``). One task at a time takes a group from the queue and runs it;
an item queued meanwhile never joins the group under way, so whatever it
reads or writes comes after everything that was acknowledged before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ticktape.errors import StoreUnavailable

R = TypeVar("R")


@dataclass
class Waiting(Generic[R]):
    """A queued item; its submitter awaits ``future``."""

    future: asyncio.Future[R] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future(), kw_only=True
    )

    def answer(self, result: R | BaseException) -> None:
        if self.future.done():  # the submitter gave up meanwhile
            return
        if isinstance(result, BaseException):
            self.future.set_exception(result)
        else:
            self.future.set_result(result)


W = TypeVar("W", bound="Waiting[Any]")


class Grouper(Generic[W]):
    """A queue drained in groups by ``run_group``, which answers every item it is given.

    ``take(queue)`` says how many items from the front form the next group. If
    ``run_group`` raises, every item of the group not answered yet gets that error.
    ``pause``, if given, is awaited before each group is taken: items queued meanwhile
    join that group (the tick sender spaces its sends this way).
    """

    def __init__(
        self,
        run_group: Callable[[list[W]], Awaitable[None]],
        take: Callable[[list[W]], int],
        name: str,
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._run_group = run_group
        self._take = take
        self._name = name
        self._pause = pause
        self._queue: list[W] = []
        self._running: asyncio.Task[None] | None = None

    def submit(self, item: W) -> None:
        """Queue ``item``; its submitter then awaits ``item.future``."""
        self._queue.append(item)
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._drain(), name=self._name)

    @property
    def queued(self) -> Sequence[W]:
        """The items waiting for the next group, oldest first (read-only)."""
        return self._queue

    def requeue(self, items: list[W]) -> None:
        """Put items back at the front, for the next group (from within ``run_group``)."""
        self._queue[:0] = items

    async def close(self) -> None:
        """Stop draining; everything still queued or under way fails as unavailable."""
        if self._running is not None:
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running
            self._running = None
        for item in self._queue:
            item.answer(self._closed())
        self._queue.clear()

    def _closed(self) -> StoreUnavailable:
        return StoreUnavailable(f"{self._name}: the store was closed")

    async def _drain(self) -> None:
        while self._queue:
            if self._pause is not None:
                await self._pause()
            n = max(1, self._take(self._queue))
            group = [item for item in self._queue[:n] if not item.future.done()]
            del self._queue[:n]
            if not group:
                continue
            try:
                await self._run_group(group)
            except asyncio.CancelledError:
                for item in group:
                    item.answer(self._closed())
                raise
            except Exception as exc:  # the group failed as one: each submitter decides
                for item in group:
                    item.answer(exc)
