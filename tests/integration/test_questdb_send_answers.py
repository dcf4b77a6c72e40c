"""One ``write_sessions`` call is one item of the QuestDB store's send queue: its
sessions are still answered one by one, as ``write`` would answer each alone.

A stale session of the call keeps its own refusal (``LeaseLost``) even when the send
carrying the others fails; the others get the store's error, nothing of them stored,
and a retry of the same call stores them. The failure is made in the sender thread by
the backend's documented testing hook,
:attr:`~ticktape.store.questdb.QuestDBTickStore.before_send`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from questdb import QuestDBError, QuestDBErrorCode

from tests.conftest import Run
from tests.integration.questdb_fencing import counts, start
from ticktape.errors import LeaseLost, StoreUnavailable
from ticktape.feeds.sim import SimExchange
from ticktape.store import RetryingStore
from ticktape.store.base import WriteResult
from ticktape.store.questdb import QuestDBTickStore

pytestmark = pytest.mark.questdb

START_US = 1_700_000_000_000_000


def _block(session_id: str) -> Any:
    return SimExchange(session_id, ("BTC_USDT",), start_us=START_US).next_block()


def test_a_failed_send_leaves_a_stale_session_its_own_refusal(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    mine, theirs = stores
    ticks = mine.inner.ticks
    assert isinstance(ticks, QuestDBTickStore)

    def broken_send() -> None:  # in the sender thread, after the ownership check
        raise QuestDBError(QuestDBErrorCode.ServerFlushError, "the test broke this send")

    async def scenario() -> None:
        a = await start(mine, make_session, "me")
        stale = await start(theirs, make_session, "them")
        b = await start(mine, make_session, "me")
        writes = [_block(a.id), _block(stale.id), _block(b.id)]

        ticks.before_send = broken_send
        try:
            answers = await ticks.write_sessions(writes, owner="me")
        finally:
            ticks.before_send = None
        assert [type(x) for x in answers] == [StoreUnavailable, LeaseLost, StoreUnavailable]
        await ticks.wait_visible(30)
        assert await ticks.count(a.id) == await ticks.count(b.id) == counts([])

        answers = await ticks.write_sessions(writes, owner="me")
        assert isinstance(answers[1], LeaseLost)
        assert answers[0] == WriteResult(counts(writes[0]))
        assert answers[2] == WriteResult(counts(writes[2]))
        await ticks.wait_visible(30)
        assert await ticks.count(a.id) == counts(writes[0])
        assert await ticks.count(b.id) == counts(writes[2])
        assert await ticks.count(stale.id) == counts([])

    run(scenario())
