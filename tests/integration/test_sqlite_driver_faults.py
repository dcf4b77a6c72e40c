"""I/O errors injected at the SQLite driver boundary, for every kind of statement.

A ``sqlite3.Connection`` subclass (passed to ``sqlite3.connect(factory=...)``)
raises the error SQLite itself raises — ``disk I/O error``, ``database or disk is
full`` — when a chosen statement runs: BEGIN, a write, COMMIT, ROLLBACK, the
checkpoint on close. Whatever fails, every queued write gets an answer (a
:class:`StoreUnavailable`, never a hang), the failure is reported by
``write_failure`` until a commit succeeds, and when the fault clears the same
store works again without being reopened.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ticktape.domain import SessionStatus
from ticktape.errors import StoreUnavailable
from ticktape.store.sqlite import SqliteStore

Run = Callable[[Coroutine[Any, Any, Any]], Any]
ANSWER_TIMEOUT_S = 10.0  # far above a healthy write; only a wedged writer reaches it


@dataclass
class Plan:
    """Which statement fails, how (the driver's own message) and how many times."""

    prefix: str = ""
    message: str = "disk I/O error"
    times: int = 0
    hits: list[str] = field(default_factory=list)

    def check(self, sql: str) -> None:
        if self.times and sql.lstrip().upper().startswith(self.prefix):
            self.times -= 1
            self.hits.append(sql)
            raise sqlite3.OperationalError(self.message)


def faulty_connection(plan: Plan) -> type[sqlite3.Connection]:
    class FaultyConnection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            plan.check(sql)
            return super().execute(sql, *args)

        def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            plan.check(sql)
            return super().executemany(sql, *args)

    return FaultyConnection


@pytest.fixture
def plan() -> Plan:
    return Plan()


@pytest.fixture
def store(run: Run, tmp_path: Path, plan: Plan) -> Iterator[SqliteStore]:
    s = SqliteStore(
        f"sqlite:///{tmp_path}/faults.db",
        connection_factory=faulty_connection(plan),
        failure_hold_s=0,
    )
    run(s.open())
    yield s
    plan.times = 0
    run(s.close())


async def _answer(coro: Coroutine[Any, Any, Any]) -> Any:
    """The outcome of one store call, within a bound: a wedged writer fails the test."""
    return await asyncio.wait_for(coro, ANSWER_TIMEOUT_S)


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("BEGIN", "disk I/O error"),
        ("INSERT INTO SESSIONS", "database or disk is full"),
        ("SAVEPOINT", "disk I/O error"),
        ("COMMIT", "database or disk is full"),
        ("COMMIT", "database disk image is malformed"),
    ],
)
def test_a_failing_statement_answers_every_queued_write_and_the_store_recovers(
    run: Run, store: SqliteStore, plan: Plan, make_session: Any, prefix: str, message: str
) -> None:
    async def body() -> None:
        plan.prefix, plan.message, plan.times = prefix, message, 1
        drafts = [make_session() for _ in range(5)]
        outcomes = await _answer(
            asyncio.gather(
                *(store.sessions.create_session(d, actor="t") for d in drafts),
                return_exceptions=True,
            )
        )
        assert plan.hits, "the fault was injected"
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert failed, outcomes
        assert all(isinstance(o, StoreUnavailable) for o in failed), failed
        assert message in str(failed[0])
        # One group failed and was recorded. Whether ``write_failure`` still shows it
        # depends on how the five writes were grouped: a later group that committed
        # clears it (failure_hold_s=0), as it should (test_the_failure_is_logged_once...).
        assert store.write_failures == 1
        # The fault is gone: the same store takes writes again, nothing reopened.
        again = make_session()
        created = await _answer(store.sessions.create_session(again, actor="t"))
        assert created.id == again.id
        assert store.write_failure is None
        assert (await store.sessions.get_session(again.id)).status is SessionStatus.PENDING
        # What failed was not half-written: a failed write's session is not there,
        # an acknowledged one is.
        for draft, outcome in zip(drafts, outcomes, strict=True):
            ids = {s.id for s in (await store.sessions.list_sessions(_all())).sessions}
            assert (draft.id in ids) == (not isinstance(outcome, BaseException))

    run(body())


def test_a_commit_failure_followed_by_a_failing_rollback_never_wedges_the_writer(
    run: Run, store: SqliteStore, plan: Plan, make_session: Any
) -> None:
    """The reported wedge: COMMIT fails, then ROLLBACK raises too."""

    class Both(Plan):
        def check(self, sql: str) -> None:
            word = sql.lstrip().upper().split(" ", 1)[0]
            if self.times and word in {"COMMIT", "ROLLBACK"}:
                self.times -= 1
                self.hits.append(sql)
                raise sqlite3.OperationalError(self.message)

    async def body() -> None:
        both = Both(times=2, message="database or disk is full")
        plan.check = both.check  # type: ignore[method-assign]
        with pytest.raises(StoreUnavailable, match="disk is full"):
            await _answer(store.sessions.create_session(make_session(), actor="t"))
        assert [h.split()[0] for h in both.hits] == ["COMMIT", "ROLLBACK"]
        # Queued writes behind it are answered, and the writer works again.
        later = [make_session() for _ in range(3)]
        created = await _answer(
            asyncio.gather(*(store.sessions.create_session(d, actor="t") for d in later))
        )
        assert [c.id for c in created] == [d.id for d in later]
        assert store.write_failure is None

    run(body())


def test_a_failing_rollback_of_one_write_fails_its_group_and_reopens_the_connection(
    run: Run, store: SqliteStore, plan: Plan, make_session: Any
) -> None:
    async def body() -> None:
        first = await store.sessions.create_session(make_session(), actor="t")
        plan.prefix, plan.times = "ROLLBACK TO", 1
        # A duplicate id makes the write fail, so its savepoint is rolled back: that fails.
        with pytest.raises(StoreUnavailable, match="disk I/O"):
            await _answer(store.sessions.create_session(first, actor="t"))
        assert plan.hits
        fresh = make_session()
        assert (await _answer(store.sessions.create_session(fresh, actor="t"))).id == fresh.id

    run(body())


def test_the_failure_is_logged_once_per_outage_with_its_cause(
    run: Run, store: SqliteStore, plan: Plan, make_session: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        plan.prefix, plan.times = "BEGIN", 3
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                await _answer(store.sessions.create_session(make_session(), actor="t"))
            # reported until a commit works (each write here is a group of its own)
            assert store.write_failure is not None and "disk I/O" in store.write_failure
        await store.sessions.create_session(make_session(), actor="t")
        assert store.write_failure is None

    with caplog.at_level(logging.WARNING, logger="ticktape.store.sqlite"):
        run(body())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "disk I/O error" in errors[0].getMessage()
    assert not any("work again" in r.getMessage() for r in errors)
    assert store.write_failures == 3


def test_a_failing_checkpoint_on_close_still_closes(
    run: Run, tmp_path: Path, plan: Plan, make_session: Any
) -> None:
    url = f"sqlite:///{tmp_path}/close.db"
    s = SqliteStore(url, connection_factory=faulty_connection(plan), failure_hold_s=0)
    run(s.open())
    kept = run(s.sessions.create_session(make_session(), actor="t"))
    plan.prefix, plan.times = "PRAGMA WAL_CHECKPOINT", 1
    run(asyncio.wait_for(s.close(), ANSWER_TIMEOUT_S))
    assert plan.hits
    reopened = SqliteStore(url)
    run(reopened.open())
    try:
        assert run(reopened.sessions.get_session(kept.id)).id == kept.id  # nothing lost
    finally:
        run(reopened.close())


def _all() -> Any:
    from ticktape.store.base import SessionQuery

    return SessionQuery(include_deleted=True, limit=500)


def test_a_reader_whose_commit_fails_is_not_left_inside_its_transaction(
    run: Run, store: SqliteStore, plan: Plan, make_session: Any
) -> None:
    async def body() -> None:
        created = await store.sessions.create_session(make_session(), actor="t")
        plan.prefix, plan.times = "COMMIT", 1
        with pytest.raises(StoreUnavailable):
            await _answer(store.sessions.get_session(created.id))
        # Every reader thread serves again (none stuck in "transaction within a transaction").
        got = await _answer(
            asyncio.gather(*(store.sessions.get_session(created.id) for _ in range(16)))
        )
        assert {g.id for g in got} == {created.id}

    run(body())


def test_a_write_sqlite_rolled_back_itself_fails_its_whole_group_with_the_cause(
    run: Run, store: SqliteStore, plan: Plan, make_session: Any
) -> None:
    """On SQLITE_FULL or an I/O error SQLite may roll the whole transaction back on its
    own: the earlier writes of the group are gone and the savepoint with them."""

    class AutoRollback(sqlite3.Connection):
        armed = 0

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            if AutoRollback.armed and sql.lstrip().upper().startswith("INSERT INTO SESSIONS"):
                AutoRollback.armed -= 1
                if AutoRollback.armed == 0:  # the second insert of the group
                    super().execute("ROLLBACK")
                    raise sqlite3.OperationalError("database or disk is full")
            return super().execute(sql, *args)

    async def body(s: SqliteStore) -> None:
        drafts = [make_session() for _ in range(3)]
        AutoRollback.armed = 2
        outcomes = await _answer(
            asyncio.gather(
                *(s.sessions.create_session(d, actor="t") for d in drafts),
                return_exceptions=True,
            )
        )
        stored = {x.id for x in (await s.sessions.list_sessions(_all())).sessions}
        for draft, outcome in zip(drafts, outcomes, strict=True):
            # Acknowledged means stored; a failure names the real cause.
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, StoreUnavailable) and "full" in str(outcome)
                assert draft.id not in stored
            else:
                assert draft.id in stored
        assert any(isinstance(o, BaseException) for o in outcomes)

    url = store.url.replace("faults.db", "auto.db")
    s = SqliteStore(url, connection_factory=AutoRollback, failure_hold_s=0)
    run(s.open())
    try:
        run(body(s))
    finally:
        run(s.close())
