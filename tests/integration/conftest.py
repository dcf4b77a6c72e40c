"""Fixtures for the integration tier beyond the shared ones in ``tests/conftest.py``."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run, _drop_tables, isolated_questdb_url
from ticktape import questdb_server as qs
from ticktape.domain import Reason, Session, SessionStatus
from ticktape.store import RetryingStore, Store, open_store

OwnQuestDB = Callable[..., qs.ServerHandle]


async def fail_session(store: Store, session: Session, reason: Reason) -> Session:
    """``session`` (as read before) failed by a transition from that version, checked
    in the transition's answer and in a fresh read of the store."""
    failed = await store.sessions.transition(
        session.id,
        expected_version=session.version,
        to_status=SessionStatus.FAILED,
        actor="t",
        reason=reason,
    )
    assert failed.status is SessionStatus.FAILED
    assert (await store.sessions.get_session(session.id)).status is SessionStatus.FAILED
    return failed


async def assert_kept(
    store: Store, created: Sequence[Session], make_session: Callable[..., Session]
) -> None:
    """Every session of ``created`` is read back as created, and a create with its
    idempotency key answers with it (the key row is kept and found too)."""
    for session in created:
        assert await store.sessions.get_session(session.id) == session
        again = make_session(idempotency_key=session.idempotency_key)
        assert await store.sessions.create_session(again, actor="t") == session


@pytest.fixture
def qdb_url(questdb_url: str) -> Iterator[str]:
    """The suite's QuestDB with tables of this test's own, dropped after it."""
    url = isolated_questdb_url(questdb_url)
    yield url
    _drop_tables(url)


@pytest.fixture(params=["sqlite", pytest.param("questdb", marks=pytest.mark.questdb)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL of each backend with storage of its own: a SQLite file in the test's
    directory, or the suite's QuestDB with tables of the test's own, dropped after it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    url = isolated_questdb_url(request.getfixturevalue("questdb_url"))
    yield url
    _drop_tables(url)


@contextlib.contextmanager
def opened_stores(url: str, count: int, run: Run[Any]) -> Iterator[list[RetryingStore]]:
    """``count`` instances' stores on the store at ``url`` (the same tables), with the
    retry layer, opened; closed at the end."""
    opened = [open_store(url) for _ in range(count)]
    for store in opened:
        run(store.open())
    try:
        yield opened
    finally:
        for store in opened:
            run(store.close())


@pytest.fixture
def stores(qdb_url: str, run: Run[Any]) -> Iterator[tuple[RetryingStore, RetryingStore]]:
    """Two instances' stores on one QuestDB, tables of this test's own: an owner's (a
    stale or lost one, in the fencing tests) and another's (the reaper's)."""
    with opened_stores(qdb_url, 2, run) as (owner, other):
        yield owner, other


@pytest.fixture
def own_questdb(tmp_path: Path) -> Iterator[OwnQuestDB]:
    """Starts a QuestDB of the test's own (never the suite's shared one, which other
    tests use) on free ports: ``own_questdb(("key", "value"), ...)`` adds those
    ``server.conf`` properties. A test that stops, freezes or restarts its server needs
    one; the test is skipped where QuestDB cannot run. Every server started is stopped
    at the end, thawed first if the test left it frozen (SIGSTOP). QuestDB's own idle
    timeout, as the suite's server, unless ``pg_idle_timeout_s=`` says otherwise."""
    handles: list[qs.ServerHandle] = []

    def start(
        *extra_properties: tuple[str, str],
        pg_idle_timeout_s: float | None = None,
        extra_jvm_options: tuple[str, ...] = (),
    ) -> qs.ServerHandle:
        config = qs.QuestDBServerConfig.with_free_ports(
            tmp_path / f"qdb{len(handles)}",
            extra_properties=extra_properties,
            pg_idle_timeout_s=pg_idle_timeout_s,
            extra_jvm_options=extra_jvm_options,
        )
        try:
            qs.find_java()
            qs.ensure_jar(config)
        except (qs.JavaNotFound, qs.JarUnavailable) as exc:
            pytest.skip(f"cannot run QuestDB here: {exc}")
        handle = qs.start(config, wait_timeout_s=60)
        handles.append(handle)
        return handle

    try:
        yield start
    finally:
        for handle in handles:
            if handle.process.poll() is None:  # still ours and alive: never leave it frozen
                with contextlib.suppress(ProcessLookupError):
                    os.kill(handle.pid, signal.SIGCONT)
            handle.stop()  # (a no-op if the test stopped it)
