"""A stop's session-log appends go in few transactions, on a real server.

While a shutdown is under way (from :meth:`~ticktape.store.base.TickStore.expect_seals`
to :meth:`~ticktape.store.base.TickStore.seals_done`) an instance's stop requests, then
its terminal transitions, arrive by the hundred at once; taken 256 to a transaction, a
thousand of them held the session log for four transactions per instance, each paying
its BEGIN, reads, COMMIT and read-back and each colliding with the other instances'.
The shutdown's own INFO line (``stop phase session log``) says how many groups its
appends took.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Run
from ticktape.domain import Session
from ticktape.store import RetryingStore

pytestmark = pytest.mark.questdb

SESSIONS = 600  # more than two groups of 256


def _session_log_line(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    lines = [r.getMessage() for r in caplog.records if "stop phase session log" in r.getMessage()]
    assert len(lines) == 1, lines
    return dict(re.findall(r"(\w+)=(\S+)", lines[0]))


def test_a_stops_appends_of_hundreds_of_sessions_share_a_transaction(
    stores: tuple[RetryingStore, RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = stores[0]

    async def scenario() -> None:
        made = await asyncio.gather(
            *(store.sessions.create_session(make_session(), actor="t") for _ in range(SESSIONS))
        )
        caplog.set_level(logging.INFO, logger="ticktape.store.questdb")
        store.ticks.expect_seals(SESSIONS, 60.0)
        await asyncio.gather(
            *(store.sessions.add_event(s.id, actor="t", reason="stop_note") for s in made)
        )
        store.ticks.seals_done()

    run(scenario())
    figures = _session_log_line(caplog)
    assert int(figures["appends"]) == SESSIONS
    # 256 to a transaction, 600 appends take three at least
    assert int(figures["groups"]) <= 2, figures
