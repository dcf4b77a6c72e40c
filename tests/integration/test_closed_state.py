"""Fail fast, never hang (invariant 9): what waits on something that is closing or gone.

- The SQLite store: a read stuck in a stalled disk fails within the store's bound; a
  close whose checkpoint is stuck in a stalled disk ends within
  the write bound; a call made while the store closes is refused at once
  (:class:`StoreUnavailable`) instead of queued behind the lanes' stop marks.
- The shared grid clock (:mod:`ticktape.feeds.clock`): a closed event loop and its
  tickers are let go (each test's loop is a new one).
- A cancelled store call ends cancelled even when its answer reached the loop in the
  same turn: Python 3.11's ``asyncio.wait_for`` returned the answer then and dropped
  the cancellation, so a crashed instance's heartbeat or flusher ran on and
  ``crash()``/``shutdown()`` waited for it for ever (the CI hang of test_faults_resume).
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from ticktape.errors import StoreUnavailable, WriteTimedOut
from ticktape.feeds.clock import ticker
from ticktape.store.sqlite import SqliteStore

Run = Callable[[Coroutine[Any, Any, Any]], Any]
BOUND_S = 0.5  # the store's write bound in these tests
ANSWER_TIMEOUT_S = 10.0  # far above BOUND_S: only a hang reaches it


class StalledCheckpoint:
    """A connection class whose checkpoint blocks until released, as on a stalled disk."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        outer = self

        class Connection(sqlite3.Connection):
            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
                if "wal_checkpoint" in sql.lower():
                    outer.entered.set()
                    outer.release.wait(ANSWER_TIMEOUT_S)
                return super().execute(sql, *args)

        self.factory = Connection


@pytest.fixture
def stall() -> Iterator[StalledCheckpoint]:
    stalled = StalledCheckpoint()
    yield stalled
    stalled.release.set()  # the writer thread finishes and stops


@pytest.fixture
def store(run: Run, tmp_path: Path, stall: StalledCheckpoint) -> SqliteStore:
    s = SqliteStore(f"sqlite:///{tmp_path}/closing.db", connection_factory=stall.factory)
    s.timeout_s = BOUND_S
    run(s.open())
    return s


class StalledReads:
    """A connection class whose read transactions block, once armed, until released."""

    def __init__(self) -> None:
        self.armed = False
        self.release = threading.Event()
        outer = self

        class Connection(sqlite3.Connection):
            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
                if outer.armed and sql.strip().upper() == "BEGIN":  # a reader's, not the writer's
                    outer.release.wait(ANSWER_TIMEOUT_S)
                return super().execute(sql, *args)

        self.factory = Connection


def test_a_read_stuck_in_a_stalled_disk_fails_within_the_bound(
    run: Run, tmp_path: Path, make_session: Any
) -> None:
    stall = StalledReads()
    s = SqliteStore(f"sqlite:///{tmp_path}/reads.db", connection_factory=stall.factory)
    s.timeout_s = BOUND_S
    run(s.open())
    try:
        created = run(s.sessions.create_session(make_session(), actor="t"))
        stall.armed = True
        started = time.monotonic()
        with pytest.raises(WriteTimedOut, match="did not answer"):
            run(asyncio.wait_for(s.sessions.get_session(created.id), ANSWER_TIMEOUT_S))
        assert time.monotonic() - started < ANSWER_TIMEOUT_S / 2  # the bound ended it
        stall.armed = False
        stall.release.set()
        assert run(s.sessions.get_session(created.id)).id == created.id  # the store works on
    finally:
        stall.release.set()
        run(s.close())


def test_a_close_whose_checkpoint_is_stuck_ends_within_the_write_bound(
    run: Run, store: SqliteStore, stall: StalledCheckpoint
) -> None:
    started = time.monotonic()
    run(asyncio.wait_for(store.close(), ANSWER_TIMEOUT_S))
    assert stall.entered.is_set()
    assert time.monotonic() - started < ANSWER_TIMEOUT_S / 2  # the bound ended it, not ours
    with pytest.raises(StoreUnavailable):  # and it is closed
        run(store.sessions.get_session("any"))


def test_calls_made_while_the_store_closes_are_refused_at_once(
    run: Run, store: SqliteStore, stall: StalledCheckpoint, make_session: Any
) -> None:
    async def scenario() -> None:
        closing = asyncio.create_task(store.close())
        await asyncio.to_thread(stall.entered.wait, ANSWER_TIMEOUT_S)  # mid-checkpoint
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.sessions.get_session("any"), BOUND_S / 5)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(
                store.sessions.create_session(make_session(), actor="t"), BOUND_S / 5
            )
        stall.release.set()
        await asyncio.wait_for(closing, ANSWER_TIMEOUT_S)

    run(scenario())


class AnswerWatchingLoop(asyncio.SelectorEventLoop):
    """Counts the callbacks other threads queue (a store's answers), so a test can block
    the loop until one more has been queued."""

    def __init__(self) -> None:
        super().__init__()
        self._counted = threading.Condition()
        self._begun = self._queued = 0

    def call_soon_threadsafe(self, callback: Any, *args: Any, context: Any = None) -> Any:
        with self._counted:
            self._begun += 1
        handle = super().call_soon_threadsafe(callback, *args, context=context)
        with self._counted:
            self._queued += 1
            self._counted.notify_all()
        return handle

    def settled(self) -> int:
        """The number of answers queued, once none is half-way (its count still to come)."""
        with self._counted:
            assert self._counted.wait_for(lambda: self._begun == self._queued, ANSWER_TIMEOUT_S)
            return self._queued

    def wait_answers(self, count: int) -> None:
        with self._counted:
            assert self._counted.wait_for(lambda: self._queued >= count, ANSWER_TIMEOUT_S)


def test_a_write_cancelled_as_its_answer_arrives_ends_cancelled(
    tmp_path: Path, make_session: Any
) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/cancel.db")

    async def scenario(loop: AnswerWatchingLoop) -> None:
        await store.open()
        try:
            before = loop.settled()
            write = asyncio.create_task(store.sessions.create_session(make_session(), actor="t"))
            await asyncio.sleep(0)  # the write is queued and awaits its answer
            # Block the loop until the writer thread has queued the answer: the cancel below
            # then reaches the task in the same turn of the loop as the answer.
            loop.wait_answers(before + 1)
            write.cancel()
            outcome = (await asyncio.gather(write, return_exceptions=True))[0]
            assert isinstance(outcome, asyncio.CancelledError), outcome
        finally:
            await store.close()

    with asyncio.Runner(loop_factory=AnswerWatchingLoop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, AnswerWatchingLoop)
        runner.run(scenario(loop))


def test_a_closed_loop_and_its_tickers_are_let_go() -> None:
    async def wait_one_point() -> None:
        await ticker(0.01).after(asyncio.get_running_loop().time())

    with asyncio.Runner() as runner:
        runner.run(wait_one_point())
        gone = weakref.ref(runner.get_loop())
    gc.collect()
    assert gone() is None  # no ticker keeps a closed loop (and its tickers) alive
