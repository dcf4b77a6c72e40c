"""``SessionQuery.oldest_first`` (the dashboard's sort) on every backend: the list in
ascending (created_at, id) order, paged by cursor without loss or repeat."""

from __future__ import annotations

from tests.conformance.test_session_store import Run, _walk, many
from ticktape.domain import Session, SessionStatus
from ticktape.store import Store
from ticktape.store.base import SessionQuery

__all__ = ["many"]  # the fixture, shared with the session-store conformance tests


def _oldest_first(sessions: list[Session]) -> list[str]:
    return [s.id for s in sorted(sessions, key=lambda s: (s.created_at, s.id))]


def test_list_oldest_first_then_id_asc(store: Store, run: Run, many: list[Session]) -> None:
    page = run(store.sessions.list_sessions(SessionQuery(limit=100, oldest_first=True)))
    assert [s.id for s in page.sessions] == _oldest_first(many)
    assert page.next_cursor is None


def test_oldest_first_pages_walk_every_session_once_in_order(
    store: Store, run: Run, many: list[Session]
) -> None:
    for limit in (1, 4, 7, 31):
        pages = _walk(store, run, SessionQuery(limit=limit, oldest_first=True))
        assert [s.id for page in pages for s in page] == _oldest_first(many)
        assert all(1 <= len(p) <= limit for p in pages)


def test_oldest_first_keeps_the_filters(store: Store, run: Run, many: list[Session]) -> None:
    query = SessionQuery(limit=3, oldest_first=True, statuses=frozenset({SessionStatus.PENDING}))
    got = [s.id for page in _walk(store, run, query) for s in page]
    assert got == _oldest_first([s for s in many if s.status is SessionStatus.PENDING])
    assert got  # the fixture's sessions are pending: the filter kept them all
