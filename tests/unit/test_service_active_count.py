"""Creates that find the per-store active count stale share one count of the store.

At 32 concurrent creates each used to run its own ``count_sessions`` once a
second (issue 13's profile); now one runs and the others await it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ticktape.api.models import CreateSessionRequest
from ticktape.store.base import SessionQuery

from .conftest_api import Run, make_harness


def test_concurrent_creates_share_one_count(run: Run[Any]) -> None:
    api = make_harness(run)
    try:
        sessions = api.store.sessions
        counted = sessions.count_sessions
        calls: list[SessionQuery] = []
        gate = asyncio.Event()

        async def slow_count(query: SessionQuery) -> int:
            calls.append(query)
            await gate.wait()  # the count is under way while the other creates arrive
            return await counted(query)

        sessions.count_sessions = slow_count  # type: ignore[method-assign]
        spec = CreateSessionRequest.model_validate(
            {"kind": "collect", "symbols": ["BTC_USDT"]}
        ).spec()

        async def scenario() -> list[str]:
            creates = [asyncio.ensure_future(api.service.create(spec)) for _ in range(10)]
            for _ in range(20):  # every create reaches the count in its first step
                await asyncio.sleep(0)
            assert calls, "no create counted the store"
            gate.set()
            return [s.id for s in await asyncio.gather(*creates)]

        ids = run(scenario())
        assert len(set(ids)) == 10
        assert len(calls) == 1
    finally:
        api.close()
