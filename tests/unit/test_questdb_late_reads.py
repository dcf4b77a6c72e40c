"""A bounded QuestDB read (``Connections.bounded``) whose caller stops waiting — past the
store timeout, or cancelled (a runner cancelled at the shutdown's grace) — leaves no
"Task exception was never retrieved" behind when the read fails later, and a read still
running is cancelled when the store closes."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from ticktape.errors import StoreUnavailable, WriteTimedOut
from ticktape.store.questdb import QuestDBStore


def _unretrieved(contexts: list[dict[str, Any]]) -> list[str]:
    return [str(c.get("message")) for c in contexts if "never retrieved" in str(c.get("message"))]


async def _read_that_fails(started: asyncio.Event, fail: asyncio.Event) -> None:
    started.set()
    await fail.wait()
    raise StoreUnavailable("count ticks: cannot reach QuestDB (connection socket closed)")


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
def test_a_read_given_up_fails_later_without_an_unretrieved_exception(how: str) -> None:
    asyncio.run(_given_up(how))


async def _given_up(how: str) -> None:
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    try:
        store = QuestDBStore("questdb://127.0.0.1:1")
        db = store._db
        db.timeout_s = 0.05 if how == "timed out" else 60.0
        started, fail = asyncio.Event(), asyncio.Event()
        caller = asyncio.ensure_future(db.bounded(_read_that_fails(started, fail), "count ticks"))
        await started.wait()
        if how == "cancelled":
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
        else:
            with pytest.raises(WriteTimedOut):
                await caller
        fail.set()  # the read, still running, now fails (its socket closed)
        for _ in range(5):  # its task ends and its done callbacks run
            await asyncio.sleep(0)
        del caller
        gc.collect()  # a task's unretrieved exception is reported when it is freed
        assert _unretrieved(contexts) == []
        assert not db._late  # ended: no longer kept for close()
    finally:
        loop.set_exception_handler(None)


def test_a_cancelled_callers_read_still_running_is_cancelled_at_close() -> None:
    asyncio.run(_cancelled_then_closed())


async def _cancelled_then_closed() -> None:
    store = QuestDBStore("questdb://127.0.0.1:1")
    db = store._db
    started, never = asyncio.Event(), asyncio.Event()
    caller = asyncio.ensure_future(db.bounded(_read_that_fails(started, never), "count ticks"))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    (late,) = db._late
    await db.close()
    assert late.cancelled()
