"""``ticktape.testing.store_finished``: the history of finished sessions that tests and
benchmarks build (bench/capacity.py, bench/reconcile_scan.py, the QuestDB store tests)
is made through the store contract, created then failed, as a real session would be."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from ticktape.domain import Reason, Session, SessionStatus
from ticktape.store.memory import MemoryStore
from ticktape.testing import draft_session, store_finished


def test_each_session_is_created_then_failed_with_the_contracts_history() -> None:
    store = MemoryStore()
    taken: list[str] = []

    def drafts() -> Iterator[Session]:
        for _ in range(25):
            session = draft_session()
            taken.append(session.id)
            yield session

    async def scenario() -> list[tuple[Session, list[tuple[str | None, str, str, str]]]]:
        await store.open()
        await store_finished(store, drafts(), concurrency=4, actor="bench")
        ended = []
        for sid in taken:
            events = await store.sessions.list_events(sid)
            moves = [(e.from_status, e.to_status, e.actor, e.reason) for e in events]
            ended.append((await store.sessions.get_session(sid), moves))
        return ended

    ended = asyncio.run(scenario())
    assert len(taken) == len(set(taken)) == 25  # every draft taken once, by one worker
    for session, moves in ended:
        assert (session.status, session.reason, session.lease_expires_at) == (
            SessionStatus.FAILED,
            Reason.START_FAILED,
            None,
        )
        assert moves == [
            (None, SessionStatus.PENDING, "bench", Reason.CREATED),
            (SessionStatus.PENDING, SessionStatus.FAILED, "bench", Reason.START_FAILED),
        ]
