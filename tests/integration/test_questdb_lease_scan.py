"""QuestDB: the reconciler's scan (``scan_leases``) reads the full session of the
expired ones only, whatever the number of live sessions (O(expired) parsing)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import Run, _drop_tables, isolated_questdb_url
from ticktape.domain import Stats, utcnow
from ticktape.store import RetryingStore, open_store
from ticktape.store.questdb import QuestDBSessionStore

pytestmark = pytest.mark.questdb


@pytest.fixture
def qdb(questdb_url: str, run: Run[Any]) -> Iterator[RetryingStore]:
    url = isolated_questdb_url(questdb_url)
    store = open_store(url)
    run(store.open())
    yield store
    run(store.close())
    _drop_tables(url)


def test_the_scan_parses_only_the_expired_sessions(
    qdb: RetryingStore, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    now = utcnow()
    live = [
        make_session(owner="a/1", lease_expires_at=now - timedelta(seconds=5)) for _ in range(40)
    ]
    lapsed = make_session(owner="b/1", lease_expires_at=now - timedelta(seconds=1))

    async def scenario() -> tuple[list[list[str]], Any]:
        for s in [*live, lapsed]:
            await qdb.sessions.create_session(s, actor="t")
        # the live ones are covered by their owner's instance lease
        await qdb.sessions.renew_instance(
            "a/1",
            lease_expires_at=now + timedelta(seconds=30),
            progress={s.id: Stats() for s in live},
        )
        sessions = qdb.inner.sessions
        assert isinstance(sessions, QuestDBSessionStore)
        reads: list[list[str]] = []
        sessions.on_read_many = reads.append  # the documented testing hook
        scan = await qdb.sessions.scan_leases(now)
        return reads, scan

    reads, scan = run(scenario())
    assert [s.id for s in scan.expired] == [lapsed.id]
    assert reads == [[lapsed.id]]  # one read, of the expired session alone
    assert scan.next_expiry == now + timedelta(seconds=30)
