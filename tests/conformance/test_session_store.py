"""The SessionStore contract (``ticktape.store.base``), clause by clause, on every backend."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ticktape.domain import (
    TERMINAL_STATUSES,
    TRANSITIONS,
    DataType,
    Note,
    OwnerLossPolicy,
    Session,
    SessionConfig,
    SessionKind,
    SessionStatus,
    Stats,
    ignored_pairs,
    is_valid_history,
    new_session_id,
)
from ticktape.errors import (
    InvalidTransition,
    LeaseLost,
    SessionConflict,
    SessionNotFound,
    TicktapeError,
    TransitionRace,
    ValidationError,
)
from ticktape.store import Store
from ticktape.store.base import UNCHANGED, SessionQuery

Run = Callable[[Coroutine[Any, Any, Any]], Any]
P, R, SG, SD, C, F = (
    SessionStatus.PENDING,
    SessionStatus.RUNNING,
    SessionStatus.STOPPING,
    SessionStatus.STOPPED,
    SessionStatus.COMPLETED,
    SessionStatus.FAILED,
)
MakeSession = Callable[..., Session]

#: A path from pending to each status, through the machine.
PATH_TO: dict[SessionStatus, list[SessionStatus]] = {
    P: [],
    R: [R],
    SG: [R, SG],
    SD: [R, SG, SD],
    C: [R, C],
    F: [R, F],
}
LEASE = datetime(2030, 1, 1, tzinfo=UTC)


def _create(store: Store, run: Run, session: Session) -> Session:
    created: Session = run(store.sessions.create_session(session, actor="creator"))
    return created


def _drive(
    store: Store, run: Run, session: Session, path: list[SessionStatus], **kwargs: Any
) -> Session:
    """Walk ``session`` through ``path`` with correct versions; return the last state."""
    for status in path:
        session = run(
            store.sessions.transition(
                session.id,
                expected_version=session.version,
                to_status=status,
                actor="driver",
                reason=f"to_{status.value}",
                **kwargs,
            )
        )
    return session


def _snapshot(store: Store, run: Run, session_id: str) -> tuple[Session, list[Any]]:
    return (
        run(store.sessions.get_session(session_id)),
        run(store.sessions.list_events(session_id)),
    )


def _walk(store: Store, run: Run, query: SessionQuery) -> list[list[Session]]:
    """Every page of ``query``, following cursors (bounded, in case a cursor loops)."""
    pages = [run(store.sessions.list_sessions(query))]
    while pages[-1].next_cursor is not None:
        assert len(pages) < 1000, "pagination does not end"
        pages.append(
            run(
                store.sessions.list_sessions(
                    SessionQuery(**{**_fields(query), "cursor": pages[-1].next_cursor})
                )
            )
        )
    return [p.sessions for p in pages]


def _fields(query: SessionQuery) -> dict[str, Any]:
    return {f: getattr(query, f) for f in SessionQuery.__dataclass_fields__}


def _newest_first(sessions: list[Session]) -> list[str]:
    return [s.id for s in sorted(sessions, key=lambda s: (s.created_at, s.id), reverse=True)]


# --------------------------------------------------------------------------- create / get


def test_create_returns_pending_v1_and_get_returns_it(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = make_session(
        symbols=("BTC_USDT", "ETH_USDT"),
        data_types=(DataType.ORDERBOOK,),
        config=SessionConfig(
            duration_s=90.0,
            book_depth=7,
            seed=42,
            rate_per_s=0.0,
            book_every=3,
            on_owner_loss=OwnerLossPolicy.RESUME,
        ),
        idempotency_key="key-1",
    )
    created = _create(store, run, session)
    assert created == session
    assert created.status is P and created.version == 1
    assert run(store.sessions.get_session(session.id)) == session


def test_ignored_request_fields_round_trip(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    ignored = ignored_pairs({"config.data_path": "data", "config.budget": {"cap": 1.5}})
    session = make_session(config=SessionConfig(ignored=ignored))
    _create(store, run, session)
    got = run(store.sessions.get_session(session.id))
    assert got == session
    assert got.config.ignored_fields() == {
        "config.budget": {"cap": 1.5},
        "config.data_path": "data",
    }


def test_create_records_the_creation_event(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create(store, run, make_session())
    [event] = run(store.sessions.list_events(session.id))
    assert (event.session_id, event.seq, event.from_status, event.to_status) == (
        session.id,
        1,
        None,
        P,
    )
    assert (event.actor, event.reason, event.detail) == ("creator", "created", None)


def test_created_session_is_visible_to_another_handle_at_once(
    store: Store, other_handle: Store, run: Run, make_session: MakeSession
) -> None:
    other = other_handle
    session = _create(store, run, make_session())
    assert run(other.sessions.get_session(session.id)) == session
    page = run(other.sessions.list_sessions(SessionQuery()))
    assert [s.id for s in page.sessions] == [session.id]


def test_transition_is_visible_to_another_handle_at_once(
    store: Store, other_handle: Store, run: Run, make_session: MakeSession
) -> None:
    other = other_handle
    session = _drive(store, run, _create(store, run, make_session()), [R])
    seen = run(other.sessions.get_session(session.id))
    assert (seen.status, seen.version) == (R, 2)


def test_get_unknown_id_raises_session_not_found(store: Store, run: Run) -> None:
    unknown = new_session_id()
    with pytest.raises(SessionNotFound) as info:
        run(store.sessions.get_session(unknown))
    assert info.value.session_id == unknown


def test_idempotency_key_returns_the_first_session_and_writes_nothing(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    first = _create(store, run, make_session(idempotency_key="same"))
    again = _create(store, run, make_session(idempotency_key="same", symbols=("ETH_USDT",)))
    assert again == first
    assert len(run(store.sessions.list_events(first.id))) == 1
    assert run(store.sessions.count_sessions(SessionQuery(include_deleted=True))) == 1


def test_idempotency_key_does_not_write_the_second_session(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    _create(store, run, make_session(idempotency_key="same"))
    second = make_session(idempotency_key="same")
    _create(store, run, second)
    with pytest.raises(SessionNotFound):
        run(store.sessions.get_session(second.id))
    with pytest.raises(SessionNotFound):
        run(store.sessions.list_events(second.id))


def test_idempotency_key_of_a_deleted_session_returns_it(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    first = _drive(store, run, _create(store, run, make_session(idempotency_key="k")), [F])
    deleted = run(store.sessions.mark_deleted(first.id))
    assert _create(store, run, make_session(idempotency_key="k")) == deleted


def test_idempotency_key_returns_the_current_state_not_the_created_one(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    now = _drive(store, run, _create(store, run, make_session(idempotency_key="k")), [R])
    assert _create(store, run, make_session(idempotency_key="k")) == now


def test_concurrent_creates_with_one_idempotency_key_make_one_session(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    candidates = [make_session(idempotency_key="double-click") for _ in range(10)]

    async def create_all() -> list[Session]:
        return list(
            await asyncio.gather(
                *(
                    store.sessions.create_session(c, actor=f"api-{i}")
                    for i, c in enumerate(candidates)
                )
            )
        )

    results: list[Session] = run(create_all())
    assert len({s.id for s in results}) == 1
    assert results[0].id in {c.id for c in candidates}
    assert run(store.sessions.count_sessions(SessionQuery(include_deleted=True))) == 1
    assert len(run(store.sessions.list_events(results[0].id))) == 1


def test_distinct_idempotency_keys_make_distinct_sessions(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    a = _create(store, run, make_session(idempotency_key="a"))
    b = _create(store, run, make_session(idempotency_key="b"))
    assert a.id != b.id
    assert run(store.sessions.count_sessions(SessionQuery())) == 2


def test_create_with_an_existing_id_conflicts_and_keeps_the_stored_session(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    # Not spelled out in the contract, but a create must never overwrite a session.
    first = _drive(store, run, _create(store, run, make_session()), [R])
    with pytest.raises(SessionConflict):
        _create(store, run, make_session(id=first.id))
    assert _snapshot(store, run, first.id)[0] == first
    assert len(run(store.sessions.list_events(first.id))) == 2


# --------------------------------------------------------------------------- list / count


@pytest.fixture
def many(store: Store, run: Run, make_session: MakeSession) -> list[Session]:
    """25 sessions with distinct created_at plus 6 sharing one instant, stored shuffled."""
    sessions = [make_session() for _ in range(25)]
    tie = sessions[12].created_at + timedelta(microseconds=500)  # among the others
    sessions += [make_session(created_at=tie) for _ in range(6)]
    random.Random(7).shuffle(sessions)
    for session in sessions:
        _create(store, run, session)
    return sessions


def test_list_is_newest_first_then_id_desc(store: Store, run: Run, many: list[Session]) -> None:
    page = run(store.sessions.list_sessions(SessionQuery(limit=100)))
    assert [s.id for s in page.sessions] == _newest_first(many)
    assert page.next_cursor is None


def test_list_default_query_leaves_nothing_out(store: Store, run: Run, many: list[Session]) -> None:
    page = run(store.sessions.list_sessions(SessionQuery()))
    assert sorted(s.id for s in page.sessions) == sorted(s.id for s in many)


def test_list_returns_full_sessions(store: Store, run: Run, many: list[Session]) -> None:
    page = run(store.sessions.list_sessions(SessionQuery(limit=100)))
    by_id = {s.id: s for s in many}
    assert all(s == by_id[s.id] for s in page.sessions)


def test_list_limit_caps_the_page_and_gives_a_cursor(
    store: Store, run: Run, many: list[Session]
) -> None:
    page = run(store.sessions.list_sessions(SessionQuery(limit=5)))
    assert [s.id for s in page.sessions] == _newest_first(many)[:5]
    assert page.next_cursor is not None


@pytest.mark.parametrize("limit", [1, 4, 6, 7, 31, 32])
def test_cursor_pagination_walks_every_session_exactly_once(
    store: Store, run: Run, many: list[Session], limit: int
) -> None:
    pages = _walk(store, run, SessionQuery(limit=limit))
    walked = [s.id for page in pages for s in page]
    assert walked == _newest_first(many)
    assert len(set(walked)) == len(many)
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit


def test_cursor_is_none_when_the_last_page_is_exactly_full(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    for _ in range(10):
        _create(store, run, make_session())
    assert run(store.sessions.list_sessions(SessionQuery(limit=10))).next_cursor is None
    first = run(store.sessions.list_sessions(SessionQuery(limit=5)))
    second = run(store.sessions.list_sessions(SessionQuery(limit=5, cursor=first.next_cursor)))
    assert len(second.sessions) == 5
    assert second.next_cursor is None


def test_list_of_an_empty_store_is_empty(store: Store, run: Run) -> None:
    page = run(store.sessions.list_sessions(SessionQuery()))
    assert (page.sessions, page.next_cursor) == ([], None)
    assert run(store.sessions.count_sessions(SessionQuery())) == 0


def test_cursor_continues_strictly_after_a_tie_on_created_at(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    instant = datetime(2024, 5, 5, 5, 5, 5, 5, tzinfo=UTC)
    sessions = [make_session(created_at=instant) for _ in range(5)]
    for session in sessions:
        _create(store, run, session)
    walked = [s.id for page in _walk(store, run, SessionQuery(limit=2)) for s in page]
    assert walked == sorted((s.id for s in sessions), reverse=True)


def test_cursor_survives_new_sessions_created_meanwhile(
    store: Store, run: Run, many: list[Session], make_session: MakeSession
) -> None:
    first = run(store.sessions.list_sessions(SessionQuery(limit=10)))
    newer = max(s.created_at for s in many) + timedelta(days=1)
    _create(store, run, make_session(created_at=newer))  # sorts before page 1
    rest = _walk(store, run, SessionQuery(limit=10, cursor=first.next_cursor))
    walked = [s.id for s in first.sessions] + [s.id for page in rest for s in page]
    assert walked == _newest_first(many)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        "%%%",
        _b64(b"abc:def"),  # timestamp is not a number
        _b64(b"1709294400123456"),  # no id
        _b64(b"1709294400123456:"),  # empty id
        _b64(b"\xff\xfe\xfd:x"),  # not UTF-8
    ],
)
def test_malformed_cursor_raises_validation_error(
    store: Store, run: Run, many: list[Session], cursor: str
) -> None:
    with pytest.raises(ValidationError) as info:
        run(store.sessions.list_sessions(SessionQuery(cursor=cursor)))
    assert info.value.field == "cursor"


@pytest.mark.parametrize("created_us", [2**63, 2**70, -(2**63) - 1])
def test_forged_cursor_with_out_of_range_time_raises_no_driver_error(
    store: Store, run: Run, many: list[Session], created_us: int
) -> None:
    # A cursor is opaque; one the store never issued is malformed. Whatever the
    # backend decides, only ticktape errors may leave the store.
    cursor = _b64(f"{created_us}:{many[0].id}".encode())
    try:
        run(store.sessions.list_sessions(SessionQuery(cursor=cursor)))
    except TicktapeError as exc:
        assert isinstance(exc, ValidationError), exc


FILTERS: list[tuple[str, SessionQuery]] = [
    ("all", SessionQuery()),
    ("running", SessionQuery(statuses=frozenset({R}))),
    ("active", SessionQuery(statuses=frozenset({P, R, SG}))),
    ("terminal", SessionQuery(statuses=frozenset(TERMINAL_STATUSES))),
    ("backtest", SessionQuery(kind=SessionKind.BACKTEST)),
    ("collect", SessionQuery(kind=SessionKind.COLLECT)),
    ("eth", SessionQuery(symbol="ETH_USDT")),
    ("btc", SessionQuery(symbol="BTC_USDT")),
    ("btc-prefix", SessionQuery(symbol="BTC")),  # no substring matches
    ("btc-usd", SessionQuery(symbol="BTC_USD")),
    ("unknown-symbol", SessionQuery(symbol="XRP_USDT")),
    ("with-deleted", SessionQuery(include_deleted=True)),
    ("deleted-failed", SessionQuery(statuses=frozenset({F}), include_deleted=True)),
    (
        "eth-running-collect",
        SessionQuery(symbol="ETH_USDT", statuses=frozenset({R}), kind=SessionKind.COLLECT),
    ),
    ("none-match", SessionQuery(statuses=frozenset({SD}), kind=SessionKind.PAPER)),
]


@pytest.fixture
def mixed(store: Store, run: Run, make_session: MakeSession) -> list[Session]:
    """Sessions of every status, three kinds, two symbol sets; some deleted. Current state."""
    rng = random.Random(3)
    base = make_session().created_at
    out: list[Session] = []
    for i in range(36):
        status = list(PATH_TO)[i % 6]
        kind = [SessionKind.COLLECT, SessionKind.BACKTEST, SessionKind.PAPER][i % 5 % 3]
        symbols = (
            ("BTC_USDT", "ETH_USDT")
            if i % 4 == 0
            else (("ETH_USDT",) if i % 4 == 1 else ("BTC_USDT",))
        )
        created_at = base + timedelta(seconds=rng.randrange(20))  # plenty of ties
        session = _create(
            store, run, make_session(kind=kind, symbols=symbols, created_at=created_at)
        )
        session = _drive(store, run, session, PATH_TO[status])
        if status in TERMINAL_STATUSES and i % 4 == 3:
            session = run(store.sessions.mark_deleted(session.id))
        out.append(session)
    assert any(s.deleted for s in out)
    return out


def _matching(sessions: list[Session], query: SessionQuery) -> list[Session]:
    return [
        s
        for s in sessions
        if (query.include_deleted or not s.deleted)
        and (not query.statuses or s.status in query.statuses)
        and (query.kind is None or s.kind is query.kind)
        and (query.symbol is None or query.symbol in s.symbols)
    ]


@pytest.mark.parametrize(("name", "query"), FILTERS, ids=[n for n, _ in FILTERS])
def test_list_filters(
    store: Store, run: Run, mixed: list[Session], name: str, query: SessionQuery
) -> None:
    page = run(store.sessions.list_sessions(SessionQuery(**{**_fields(query), "limit": 500})))
    assert [s.id for s in page.sessions] == _newest_first(_matching(mixed, query))
    assert page.sessions == sorted(
        _matching(mixed, query), key=lambda s: (s.created_at, s.id), reverse=True
    )


@pytest.mark.parametrize(("name", "query"), FILTERS, ids=[n for n, _ in FILTERS])
def test_cursor_pagination_keeps_the_filters(
    store: Store, run: Run, mixed: list[Session], name: str, query: SessionQuery
) -> None:
    pages = _walk(store, run, SessionQuery(**{**_fields(query), "limit": 3}))
    assert [s.id for page in pages for s in page] == _newest_first(_matching(mixed, query))


@pytest.mark.parametrize(("name", "query"), FILTERS, ids=[n for n, _ in FILTERS])
def test_count_sessions_matches_the_filters(
    store: Store, run: Run, mixed: list[Session], name: str, query: SessionQuery
) -> None:
    assert run(store.sessions.count_sessions(query)) == len(_matching(mixed, query))


def test_count_sessions_ignores_limit_and_cursor(
    store: Store, run: Run, many: list[Session]
) -> None:
    cursor = run(store.sessions.list_sessions(SessionQuery(limit=3))).next_cursor
    assert run(store.sessions.count_sessions(SessionQuery(limit=3, cursor=cursor))) == len(many)


# --------------------------------------------------------------------------- transition


def test_transition_success_bumps_version_and_sets_fields(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create(store, run, make_session())
    stats = Stats(trades=5, orderbook=2, errors=1)
    before = datetime.now(UTC)
    moved = run(
        store.sessions.transition(
            session.id,
            expected_version=1,
            to_status=R,
            actor="inst-a",
            reason="started",
            detail="runner up",
            owner="inst-a:1",
            lease_expires_at=LEASE,
            stats=stats,
        )
    )
    after = datetime.now(UTC)
    assert (moved.status, moved.version, moved.reason) == (R, 2, "started")
    assert (moved.owner, moved.lease_expires_at, moved.stats) == ("inst-a:1", LEASE, stats)
    assert moved.started_at is not None and before <= moved.started_at <= after
    assert moved.ended_at is None
    assert moved.created_at == session.created_at
    assert run(store.sessions.get_session(session.id)) == moved


def test_transition_records_an_event(store: Store, run: Run, make_session: MakeSession) -> None:
    session = _create(store, run, make_session())
    before = datetime.now(UTC)
    run(
        store.sessions.transition(
            session.id,
            expected_version=1,
            to_status=R,
            actor="inst-a",
            reason="started",
            detail="runner up",
        )
    )
    after = datetime.now(UTC)
    events = run(store.sessions.list_events(session.id))
    assert len(events) == 2
    event = events[1]
    assert (event.session_id, event.seq, event.from_status, event.to_status) == (
        session.id,
        2,
        P,
        R,
    )
    assert (event.actor, event.reason, event.detail) == ("inst-a", "started", "runner up")
    assert before - timedelta(microseconds=1) <= event.at <= after


def test_transition_without_detail_records_none(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create(store, run, make_session())
    run(
        store.sessions.transition(
            session.id, expected_version=1, to_status=F, actor="a", reason="start_failed"
        )
    )
    assert run(store.sessions.list_events(session.id))[-1].detail is None


def test_transition_leaves_unchanged_fields_alone(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    stats = Stats(trades=9, orderbook=3)
    running = run(
        store.sessions.transition(
            _create(store, run, make_session()).id,
            expected_version=1,
            to_status=R,
            actor="a",
            reason="started",
            owner="inst-a:1",
            lease_expires_at=LEASE,
            stats=stats,
        )
    )
    stopping = run(
        store.sessions.transition(
            running.id,
            expected_version=2,
            to_status=SG,
            actor="b",
            reason="user_stop",
            owner=UNCHANGED,
            lease_expires_at=UNCHANGED,
            stats=None,
        )
    )
    assert (stopping.owner, stopping.lease_expires_at, stopping.stats) == ("inst-a:1", LEASE, stats)
    assert stopping.started_at == running.started_at
    assert stopping.reason == "user_stop"
    assert run(store.sessions.get_session(running.id)) == stopping


def test_transition_defaults_leave_owner_lease_and_stats_alone(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    stats = Stats(trades=1)
    running = run(
        store.sessions.transition(
            _create(store, run, make_session()).id,
            expected_version=1,
            to_status=R,
            actor="a",
            reason="started",
            owner="inst-a:1",
            lease_expires_at=LEASE,
            stats=stats,
        )
    )
    stopping = run(
        store.sessions.transition(
            running.id, expected_version=2, to_status=SG, actor="b", reason="user_stop"
        )
    )
    assert (stopping.owner, stopping.lease_expires_at, stopping.stats) == ("inst-a:1", LEASE, stats)


def test_transition_can_clear_owner_and_lease_with_none(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    running = _drive(
        store,
        run,
        _create(store, run, make_session()),
        [R],
        owner="inst-a:1",
        lease_expires_at=LEASE,
    )
    failed = run(
        store.sessions.transition(
            running.id,
            expected_version=2,
            to_status=F,
            actor="reaper",
            reason="owner_lost",
            owner=None,
            lease_expires_at=None,
        )
    )
    assert (failed.owner, failed.lease_expires_at) == (None, None)
    assert run(store.sessions.get_session(running.id)) == failed


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_transition_to_terminal_sets_ended_at(
    store: Store, run: Run, make_session: MakeSession, terminal: SessionStatus
) -> None:
    path = PATH_TO[terminal]
    almost = _drive(store, run, _create(store, run, make_session()), path[:-1])
    assert almost.ended_at is None
    before = datetime.now(UTC)
    ended = _drive(store, run, almost, path[-1:])
    after = datetime.now(UTC)
    assert ended.ended_at is not None and before <= ended.ended_at <= after
    assert ended.status is terminal and ended.reason == f"to_{terminal.value}"


def test_started_at_is_kept_through_later_transitions(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create(store, run, make_session())
    running = _drive(store, run, session, [R])
    stopped = _drive(store, run, running, [SG, SD])
    assert stopped.started_at == running.started_at
    assert stopped.version == 4


def test_pending_to_stopping_does_not_set_started_at(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    stopped = _drive(store, run, _create(store, run, make_session()), [SG, SD])
    assert stopped.started_at is None and stopped.ended_at is not None


def test_stale_version_raises_transition_race_and_changes_nothing(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _drive(
        store,
        run,
        _create(store, run, make_session()),
        [R],
        owner="inst-a:1",
        lease_expires_at=LEASE,
    )
    before = _snapshot(store, run, session.id)
    for stale in (1, 3, 0, -1):
        with pytest.raises(TransitionRace) as info:
            run(
                store.sessions.transition(
                    session.id,
                    expected_version=stale,
                    to_status=SG,
                    actor="x",
                    reason="user_stop",
                    owner="other",
                    lease_expires_at=None,
                    stats=Stats(trades=1),
                )
            )
        assert (info.value.session_id, info.value.expected_version) == (session.id, stale)
    assert _snapshot(store, run, session.id) == before


def test_invalid_move_raises_invalid_transition_and_changes_nothing(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create(store, run, make_session())
    before = _snapshot(store, run, session.id)
    with pytest.raises(InvalidTransition) as info:
        run(
            store.sessions.transition(
                session.id, expected_version=1, to_status=C, actor="x", reason="duration_reached"
            )
        )
    assert (info.value.session_id, info.value.status, info.value.target) == (
        session.id,
        "pending",
        "completed",
    )
    assert _snapshot(store, run, session.id) == before


def test_invalid_move_is_checked_before_the_version(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create(store, run, make_session())
    before = _snapshot(store, run, session.id)
    with pytest.raises(InvalidTransition):
        run(
            store.sessions.transition(
                session.id, expected_version=99, to_status=SD, actor="x", reason="user_stop"
            )
        )
    assert _snapshot(store, run, session.id) == before


def test_transition_of_unknown_id_raises_session_not_found(store: Store, run: Run) -> None:
    with pytest.raises(SessionNotFound):
        run(
            store.sessions.transition(
                new_session_id(), expected_version=1, to_status=R, actor="x", reason="started"
            )
        )


ALL_MOVES = list(itertools.product(SessionStatus, SessionStatus))


@pytest.mark.parametrize(
    ("current", "target"), ALL_MOVES, ids=[f"{a.value}-{b.value}" for a, b in ALL_MOVES]
)
def test_store_allows_exactly_the_moves_of_the_state_machine(
    store: Store,
    run: Run,
    make_session: MakeSession,
    current: SessionStatus,
    target: SessionStatus,
) -> None:
    session = _drive(store, run, _create(store, run, make_session()), PATH_TO[current])
    call = store.sessions.transition(
        session.id, expected_version=session.version, to_status=target, actor="x", reason="r"
    )
    if target in TRANSITIONS[current]:
        moved = run(call)
        assert (moved.status, moved.version) == (target, session.version + 1)
    else:
        before = _snapshot(store, run, session.id)
        with pytest.raises(InvalidTransition):
            run(call)
        assert _snapshot(store, run, session.id) == before


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_terminal_sessions_never_change(
    store: Store, run: Run, make_session: MakeSession, terminal: SessionStatus
) -> None:
    session = _drive(
        store,
        run,
        _create(store, run, make_session()),
        PATH_TO[terminal],
        owner="inst-a:1",
        lease_expires_at=LEASE,
    )
    before = _snapshot(store, run, session.id)
    for target, version in itertools.product(SessionStatus, (session.version, 1, 1000)):
        with pytest.raises(InvalidTransition):
            run(
                store.sessions.transition(
                    session.id,
                    expected_version=version,
                    to_status=target,
                    actor="x",
                    reason="r",
                    owner="thief",
                    lease_expires_at=None,
                    stats=Stats(trades=1),
                )
            )
    with pytest.raises(LeaseLost):
        run(store.sessions.renew_lease(session.id, owner="inst-a:1", lease_expires_at=LEASE))
    assert _snapshot(store, run, session.id) == before


def _race(
    store: Store, run: Run, session: Session, targets: list[SessionStatus]
) -> list[Session | BaseException]:
    async def race() -> list[Session | BaseException]:
        return await asyncio.gather(
            *(
                store.sessions.transition(
                    session.id,
                    expected_version=session.version,
                    to_status=t,
                    actor=f"racer-{i}",
                    reason="race",
                )
                for i, t in enumerate(targets)
            ),
            return_exceptions=True,
        )

    results: list[Session | BaseException] = run(race())
    return results


def test_concurrent_transitions_with_one_version_exactly_one_wins(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create(store, run, make_session())
    results = _race(store, run, session, [R] * 20)
    won = [r for r in results if isinstance(r, Session)]
    lost = [r for r in results if not isinstance(r, Session)]
    assert len(won) == 1 and won[0].version == 2 and len(lost) == 19
    # A loser raised the documented conflict and nothing else: TransitionRace, or — if it
    # read the session already running — InvalidTransition (running -> running is refused
    # before the version is compared).
    assert all(type(r) in (TransitionRace, InvalidTransition) for r in lost), lost
    events = run(store.sessions.list_events(session.id))
    assert [e.to_status for e in events] == [P, R]
    assert run(store.sessions.get_session(session.id)) == won[0]


def test_concurrent_transitions_to_different_targets_keep_a_valid_history(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create(store, run, make_session())
    results = _race(store, run, session, [R, SG, F] * 7)
    won = [r for r in results if isinstance(r, Session)]
    assert len(won) == 1
    assert all(
        type(r) in (TransitionRace, InvalidTransition)
        for r in results
        if not isinstance(r, Session)
    ), results
    # Next round, from the winner's state and version: exactly one wins where any target
    # is allowed from there (none from a terminal state), every loser with a conflict.
    results2 = _race(store, run, won[0], [SD, C, F, SG] * 5)
    won2 = [r for r in results2 if isinstance(r, Session)]
    assert len(won2) == (0 if won[0].status is F else 1), (won[0].status, results2)
    assert all(
        type(r) in (TransitionRace, InvalidTransition)
        for r in results2
        if not isinstance(r, Session)
    ), results2
    events = run(store.sessions.list_events(session.id))
    statuses = [e.to_status for e in events]
    assert is_valid_history(statuses), statuses
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    final = run(store.sessions.get_session(session.id))
    assert final.status is statuses[-1] and final.version == len(events)


# --------------------------------------------------------------------------- leases


def test_renew_lease_by_the_owner_updates_lease_and_stats_not_version(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    running = _drive(
        store,
        run,
        _create(store, run, make_session()),
        [R],
        owner="inst-a:1",
        lease_expires_at=LEASE,
    )
    later, stats = LEASE + timedelta(seconds=10), Stats(trades=100, orderbook=20, errors=2)
    renewed = run(
        store.sessions.renew_lease(
            running.id, owner="inst-a:1", lease_expires_at=later, stats=stats
        )
    )
    assert renewed == running.evolve(lease_expires_at=later, stats=stats)
    assert run(store.sessions.get_session(running.id)) == renewed


def test_renew_lease_without_stats_keeps_them(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    stats = Stats(trades=7)
    running = _drive(
        store,
        run,
        _create(store, run, make_session()),
        [R],
        owner="inst-a:1",
        lease_expires_at=LEASE,
        stats=stats,
    )
    later = LEASE + timedelta(seconds=10)
    renewed = run(store.sessions.renew_lease(running.id, owner="inst-a:1", lease_expires_at=later))
    assert (renewed.stats, renewed.lease_expires_at, renewed.version) == (stats, later, 2)
    assert run(store.sessions.get_session(running.id)) == renewed


def test_renew_lease_returns_a_stop_requested_elsewhere(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    running = _drive(
        store,
        run,
        _create(store, run, make_session()),
        [R],
        owner="inst-a:1",
        lease_expires_at=LEASE,
    )
    _drive(store, run, running, [SG])  # another instance asks for a stop
    renewed = run(store.sessions.renew_lease(running.id, owner="inst-a:1", lease_expires_at=LEASE))
    assert (renewed.status, renewed.version) == (SG, 3)


@pytest.mark.parametrize("owner", ["inst-b:1", "inst-a", "inst-a:10", ""])
def test_renew_lease_by_another_owner_raises_lease_lost_and_changes_nothing(
    store: Store, run: Run, make_session: MakeSession, owner: str
) -> None:
    running = _drive(
        store,
        run,
        _create(store, run, make_session()),
        [R],
        owner="inst-a:1",
        lease_expires_at=LEASE,
        stats=Stats(trades=1),
    )
    before = _snapshot(store, run, running.id)
    with pytest.raises(LeaseLost) as info:
        run(
            store.sessions.renew_lease(
                running.id,
                owner=owner,
                lease_expires_at=LEASE + timedelta(hours=1),
                stats=Stats(trades=99),
            )
        )
    assert (info.value.session_id, info.value.owner) == (running.id, owner)
    assert _snapshot(store, run, running.id) == before


def test_renew_lease_of_an_unowned_session_raises_lease_lost(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create(store, run, make_session())
    with pytest.raises(LeaseLost):
        run(store.sessions.renew_lease(session.id, owner="inst-a:1", lease_expires_at=LEASE))
    assert run(store.sessions.get_session(session.id)) == session


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_renew_lease_of_a_terminal_session_raises_lease_lost_and_changes_nothing(
    store: Store, run: Run, make_session: MakeSession, terminal: SessionStatus
) -> None:
    # The owner is kept on purpose: ownership alone must not let a heartbeat through.
    ended = _drive(
        store,
        run,
        _create(store, run, make_session()),
        PATH_TO[terminal],
        owner="inst-a:1",
        lease_expires_at=LEASE,
    )
    assert ended.owner == "inst-a:1"
    before = _snapshot(store, run, ended.id)
    with pytest.raises(LeaseLost):
        run(
            store.sessions.renew_lease(
                ended.id,
                owner="inst-a:1",
                lease_expires_at=LEASE + timedelta(hours=1),
                stats=Stats(trades=5),
            )
        )
    assert _snapshot(store, run, ended.id) == before


def test_find_expired_returns_non_terminal_sessions_with_lapsed_or_no_lease(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    now = datetime(2030, 6, 1, tzinfo=UTC)
    no_lease = _create(store, run, make_session())
    lapsed = _drive(
        store,
        run,
        _create(store, run, make_session()),
        [R],
        owner="a",
        lease_expires_at=now - timedelta(microseconds=1),
    )
    lapsed_stopping = _drive(
        store,
        run,
        _create(store, run, make_session()),
        [R, SG],
        owner="a",
        lease_expires_at=now - timedelta(hours=1),
    )
    _drive(
        store, run, _create(store, run, make_session()), [R], owner="a", lease_expires_at=now
    )  # expires exactly now: not yet "before now"
    _drive(
        store,
        run,
        _create(store, run, make_session()),
        [R],
        owner="a",
        lease_expires_at=now + timedelta(seconds=1),
    )
    for terminal in TERMINAL_STATUSES:
        _drive(
            store,
            run,
            _create(store, run, make_session()),
            PATH_TO[terminal],
            owner="a",
            lease_expires_at=now - timedelta(hours=1),
        )
    found = run(store.sessions.find_expired(now))
    assert sorted(s.id for s in found) == sorted([no_lease.id, lapsed.id, lapsed_stopping.id])
    assert {s.id: s for s in found}[lapsed.id] == lapsed


def test_find_expired_on_an_empty_store(store: Store, run: Run) -> None:
    assert run(store.sessions.find_expired(datetime.now(UTC))) == []


def test_find_owned_returns_non_terminal_sessions_by_owner_prefix(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    def owned(owner: str, path: list[SessionStatus]) -> Session:
        return _drive(
            store,
            run,
            _create(store, run, make_session()),
            path,
            owner=owner,
            lease_expires_at=LEASE,
        )

    a1, a2 = owned("host-a:1", [R]), owned("host-a:2", [R, SG])
    b1 = owned("host-b:1", [R])
    owned("host-a:1", [R, C])  # terminal: not owned any more
    owned("hostXa:1", [R])  # "_"/"%" in a prefix are not wildcards
    _create(store, run, make_session())  # no owner
    assert sorted(s.id for s in run(store.sessions.find_owned("host-a:"))) == sorted([a1.id, a2.id])
    assert [s.id for s in run(store.sessions.find_owned("host-b:1"))] == [b1.id]
    assert run(store.sessions.find_owned("host_a")) == []
    assert run(store.sessions.find_owned("host%")) == []
    assert run(store.sessions.find_owned("nobody")) == []
    assert {s.id: s for s in run(store.sessions.find_owned("host-a:"))}[a2.id] == a2


def test_a_listed_session_as_a_transitions_read_changes_no_answer(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    """``transition(read=...)`` with what ``find_owned`` listed: a note appended since
    (same version) is kept before the transition's event, and a read at an older version
    is refused as a race, as without ``read``."""
    noted = _drive(
        store, run, _create(store, run, make_session()), [R], owner="me/1", lease_expires_at=LEASE
    )
    raced = _drive(
        store, run, _create(store, run, make_session()), [R], owner="me/1", lease_expires_at=LEASE
    )
    listed = {s.id: s for s in run(store.sessions.find_owned("me/1"))}

    def from_listing(sid: str, to_status: SessionStatus) -> Session:
        """The owner's transition at the version it listed, with the listed row."""
        return run(
            store.sessions.transition(
                sid,
                expected_version=listed[sid].version,
                to_status=to_status,
                actor="me/1",
                reason="server_shutdown",
                read=listed[sid],
            )
        )

    run(store.sessions.add_event(noted.id, actor="t", reason="noted meanwhile"))
    stopping = from_listing(noted.id, SG)
    assert (stopping.status, stopping.version) == (SG, noted.version + 1)
    reasons = [e.reason for e in run(store.sessions.list_events(noted.id))]
    assert reasons[-2:] == ["noted meanwhile", "server_shutdown"]
    run(
        store.sessions.transition(
            raced.id, expected_version=raced.version, to_status=SG, actor="t", reason="elsewhere"
        )
    )
    with pytest.raises(TransitionRace):
        from_listing(raced.id, F)


# --------------------------------------------------------------------------- events


def test_add_event_records_a_note_at_the_current_status(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    running = _drive(store, run, _create(store, run, make_session()), [R])
    event = run(
        store.sessions.add_event(running.id, actor="inst-a", reason="flushed", detail="123 rows")
    )
    assert (event.session_id, event.seq, event.from_status, event.to_status) == (
        running.id,
        3,
        R,
        R,
    )
    assert (event.actor, event.reason, event.detail) == ("inst-a", "flushed", "123 rows")
    assert run(store.sessions.list_events(running.id))[-1] == event
    assert run(store.sessions.get_session(running.id)) == running


def test_add_event_on_a_terminal_session_keeps_it_terminal(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    failed = _drive(store, run, _create(store, run, make_session()), [F])
    event = run(store.sessions.add_event(failed.id, actor="a", reason="note"))
    assert (event.from_status, event.to_status, event.detail) == (F, F, None)
    assert run(store.sessions.get_session(failed.id)) == failed


def test_a_transition_with_a_note_records_the_note_just_before_its_event(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    """``transition(note=...)``: the note (at the status left, by the same actor) and the
    transition's event, in that order, in one step: what the runtime records a runner's
    own tally with."""
    stopping = _drive(store, run, _create(store, run, make_session()), [R, SG])
    before = run(store.sessions.list_events(stopping.id))
    stopped = run(
        store.sessions.transition(
            stopping.id,
            expected_version=stopping.version,
            to_status=SD,
            actor="inst-a",
            reason="user_stop",
            stats=Stats(trades=5),
            note=Note("runner_tally", '{"trades": 5}'),
        )
    )
    assert stopped.status is SD and stopped.stats == Stats(trades=5)
    events = run(store.sessions.list_events(stopping.id))
    assert events[: len(before)] == before
    note, ended = events[len(before) :]
    assert (note.seq, note.from_status, note.to_status) == (len(before) + 1, SG, SG)
    assert (note.actor, note.reason, note.detail) == ("inst-a", "runner_tally", '{"trades": 5}')
    assert (ended.seq, ended.from_status, ended.to_status) == (len(before) + 2, SG, SD)
    assert (ended.actor, ended.reason) == ("inst-a", "user_stop")
    assert note.at <= ended.at
    assert run(store.sessions.get_session(stopping.id)) == stopped


@pytest.mark.parametrize("refused", ["race", "invalid"])
def test_a_refused_transition_records_its_note_neither(
    store: Store, run: Run, make_session: MakeSession, refused: str
) -> None:
    """Both or neither: a transition that loses its compare-and-set, or is not allowed,
    leaves no note behind."""
    path = [R, SG, SD] if refused == "invalid" else [R]
    current = _drive(store, run, _create(store, run, make_session()), path)
    before = run(store.sessions.list_events(current.id))
    with pytest.raises(InvalidTransition if refused == "invalid" else TransitionRace):
        run(
            store.sessions.transition(
                current.id,
                # a stopped session never fails; a running one moved on since version - 1
                expected_version=current.version - (1 if refused == "race" else 0),
                to_status=F if refused == "invalid" else SG,
                actor="inst-a",
                reason="user_stop",
                note=Note("runner_tally", "{}"),
            )
        )
    assert run(store.sessions.list_events(current.id)) == before
    assert run(store.sessions.get_session(current.id)) == current


def test_add_event_of_unknown_id_raises_session_not_found(store: Store, run: Run) -> None:
    with pytest.raises(SessionNotFound):
        run(store.sessions.add_event(new_session_id(), actor="a", reason="note"))


def test_list_events_is_the_history_oldest_first(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    session = _create(store, run, make_session())
    running = _drive(store, run, session, [R])
    run(store.sessions.add_event(session.id, actor="a", reason="note"))
    _drive(store, run, running, [SG, SD])
    events = run(store.sessions.list_events(session.id))
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, P),
        (P, R),
        (R, R),
        (R, SG),
        (SG, SD),
    ]
    assert [e.reason for e in events] == [
        "created",
        "to_running",
        "note",
        "to_stopping",
        "to_stopped",
    ]
    assert all(a.at <= b.at for a, b in itertools.pairwise(events[1:]))


def test_events_belong_to_their_session(store: Store, run: Run, make_session: MakeSession) -> None:
    a = _create(store, run, make_session())
    b = _drive(store, run, _create(store, run, make_session()), [R, C])
    assert [e.session_id for e in run(store.sessions.list_events(a.id))] == [a.id]
    assert [e.seq for e in run(store.sessions.list_events(b.id))] == [1, 2, 3]


def test_list_events_of_unknown_id_raises_session_not_found(store: Store, run: Run) -> None:
    with pytest.raises(SessionNotFound):
        run(store.sessions.list_events(new_session_id()))


# --------------------------------------------------------------------------- soft delete


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_mark_deleted_hides_a_terminal_session_from_listings(
    store: Store, run: Run, make_session: MakeSession, terminal: SessionStatus
) -> None:
    kept = _create(store, run, make_session())
    ended = _drive(store, run, _create(store, run, make_session()), PATH_TO[terminal])
    deleted = run(store.sessions.mark_deleted(ended.id))
    assert deleted.deleted and deleted.status is terminal
    assert run(store.sessions.get_session(ended.id)) == deleted
    assert [s.id for s in run(store.sessions.list_sessions(SessionQuery())).sessions] == [kept.id]
    assert run(store.sessions.count_sessions(SessionQuery())) == 1
    listed = run(store.sessions.list_sessions(SessionQuery(include_deleted=True))).sessions
    assert sorted(s.id for s in listed) == sorted([kept.id, ended.id])
    assert run(store.sessions.count_sessions(SessionQuery(include_deleted=True))) == 2


def test_mark_deleted_is_idempotent(store: Store, run: Run, make_session: MakeSession) -> None:
    ended = _drive(store, run, _create(store, run, make_session()), [R, C])
    first = run(store.sessions.mark_deleted(ended.id))
    events = run(store.sessions.list_events(ended.id))
    again = run(store.sessions.mark_deleted(ended.id))
    assert again == first == run(store.sessions.get_session(ended.id))
    assert again.deleted
    assert run(store.sessions.list_events(ended.id)) == events


def test_mark_deleted_keeps_the_history(store: Store, run: Run, make_session: MakeSession) -> None:
    ended = _drive(store, run, _create(store, run, make_session()), [R, C])
    before = run(store.sessions.list_events(ended.id))
    run(store.sessions.mark_deleted(ended.id))
    after = run(store.sessions.list_events(ended.id))
    assert after[: len(before)] == before


@pytest.mark.parametrize("status", [P, R, SG])
def test_mark_deleted_of_a_non_terminal_session_raises_session_conflict(
    store: Store, run: Run, make_session: MakeSession, status: SessionStatus
) -> None:
    session = _drive(store, run, _create(store, run, make_session()), PATH_TO[status])
    before = _snapshot(store, run, session.id)
    with pytest.raises(SessionConflict) as info:
        run(store.sessions.mark_deleted(session.id))
    assert not isinstance(info.value, InvalidTransition)
    assert (info.value.session_id, info.value.status) == (session.id, status.value)
    assert _snapshot(store, run, session.id) == before


def test_mark_deleted_of_unknown_id_raises_session_not_found(store: Store, run: Run) -> None:
    with pytest.raises(SessionNotFound):
        run(store.sessions.mark_deleted(new_session_id()))


# Symbol sets with values that break a substring search over a stored list: an element
# that ends in ", ", quotes, commas, backslashes, brackets, unicode. The store contract
# does not restrict symbols (the domain does): the filter must be exact for any value.
TRICKY_SETS: list[tuple[str, ...]] = [
    ("BTC_USDT", "ETH_USDT"),
    ("a, ", ","),
    ('A"B', "C"),
    ("A,B",),
    ("Ünï_CØDE", "日本_円"),
    ("back\\", "slash"),
    ("[x]", "]"),
    (", ",),
]
TRICKY_QUERIES = [
    "BTC_USDT", "BTC", ", ", ",", '"', '", "', 'A"B', "A", "B", "A,B", "Ünï_CØDE",
    "日本_円", "日本", "back\\", "\\", "[x]", "]", "[", "a, ", "a", "x", "",
]  # fmt: skip


def test_the_symbol_filter_is_an_exact_match_for_tricky_values(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    sessions = [_create(store, run, make_session(symbols=s)) for s in TRICKY_SETS]
    for symbol in TRICKY_QUERIES:
        query = SessionQuery(symbol=symbol, limit=500)
        expected = _newest_first([s for s in sessions if symbol in s.symbols])
        got = [s.id for s in run(store.sessions.list_sessions(query)).sessions]
        assert got == expected, symbol
        assert run(store.sessions.count_sessions(query)) == len(expected), symbol


# --------------------------------------------------------------------------- change feed


def _changes(store: Store, run: Run, cursor: str, limit: int = 1000) -> tuple[list[Session], str]:
    page = run(store.sessions.list_changed(cursor, limit=limit))
    assert len(page.sessions) <= limit
    return page.sessions, page.cursor


def _latest_by_id(sessions: list[Session]) -> dict[str, Session]:
    return {s.id: s for s in sessions}


def test_list_changed_returns_every_change_once_at_its_current_state(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    start = run(store.sessions.list_changed(None))
    assert start.sessions == []
    a = _create(store, run, make_session(owner="inst-a:1", lease_expires_at=LEASE))
    b = _create(store, run, make_session())
    seen, cursor = _changes(store, run, start.cursor)
    ids = [s.id for s in seen]
    assert ids.index(a.id) < ids.index(b.id), "oldest change first"
    assert _latest_by_id(seen)[a.id] == a and _latest_by_id(seen)[b.id] == b

    running = _drive(store, run, a, [R])
    seen, cursor = _changes(store, run, cursor)
    assert _latest_by_id(seen)[a.id] == running
    stats = Stats(trades=5, orderbook=2)
    run(store.sessions.renew_lease(a.id, owner="inst-a:1", lease_expires_at=LEASE, stats=stats))
    seen, cursor = _changes(store, run, cursor)
    assert _latest_by_id(seen)[a.id].stats == stats
    stopped = _drive(store, run, b, [SG, SD])
    run(store.sessions.mark_deleted(b.id))
    seen, cursor = _changes(store, run, cursor)
    assert _latest_by_id(seen)[b.id] == stopped.evolve(deleted=True)
    # nothing changed since: only repeats (a timestamp-positioned backend re-reads a window)
    again, _ = _changes(store, run, cursor)
    assert all(s == run(store.sessions.get_session(s.id)) for s in again)


def test_list_changed_pages_by_limit_without_losing_any(
    store: Store, run: Run, make_session: MakeSession
) -> None:
    cursor = run(store.sessions.list_changed(None)).cursor
    created = {_create(store, run, make_session()).id for _ in range(5)}
    seen: set[str] = set()
    for _ in range(10):
        page, cursor = _changes(store, run, cursor, limit=2)
        seen |= {s.id for s in page}
        if created <= seen:
            break
    assert created <= seen


def test_list_changed_refuses_a_cursor_it_did_not_make(store: Store, run: Run) -> None:
    with pytest.raises(ValidationError):
        run(store.sessions.list_changed("not-a-cursor"))
