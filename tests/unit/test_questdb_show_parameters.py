"""A store's open reads the server's idle timeout (``SHOW PARAMETERS``): QuestDB 9.3.4
answers some of several such reads made at once with a ClassCastException, and an open
must not fail on that — the read is made again, and a server that never answers is one
that does not say. An unreachable server still fails the open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from ticktape.errors import StoreError, StoreUnavailable
from ticktape.store.questdb import SHOW_PARAMETERS_ATTEMPTS, adopt_idle_timeout

CAST = "read server parameters: QuestDB error (class java.lang.Object cannot be cast to ...)"


class _Cursor:
    async def fetchall(self) -> list[tuple[Any, ...]]:
        return [("pg.net.connection.timeout", "x", "1500")]


class _Db:
    """A store's connections whose first ``failures`` reads raise ``error``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.idle_reconnect_s = 10.0
        self.failures, self.error, self.reads = failures, error, 0

    @asynccontextmanager
    async def reader(self, what: str) -> AsyncIterator[Any]:
        self.reads += 1
        if self.reads <= self.failures:
            raise self.error
        yield self

    async def execute(self, sql: str) -> _Cursor:
        assert sql == "SHOW PARAMETERS"
        return _Cursor()


def test_a_read_refused_by_the_servers_race_is_made_again() -> None:
    db = _Db(failures=SHOW_PARAMETERS_ATTEMPTS - 1, error=StoreError(CAST))
    asyncio.run(adopt_idle_timeout(db))  # type: ignore[arg-type]
    assert db.reads == SHOW_PARAMETERS_ATTEMPTS
    assert db.idle_reconnect_s == pytest.approx(0.75)  # half of the server's 1.5 s


def test_a_server_that_never_answers_leaves_the_setting(caplog: pytest.LogCaptureFixture) -> None:
    db = _Db(failures=SHOW_PARAMETERS_ATTEMPTS, error=StoreError(CAST))
    asyncio.run(adopt_idle_timeout(db))  # type: ignore[arg-type]
    assert db.reads == SHOW_PARAMETERS_ATTEMPTS
    assert db.idle_reconnect_s == 10.0
    assert "keeping the idle reconnect at 10.0 s" in caplog.text


def test_an_unreachable_server_still_fails_the_open() -> None:
    db = _Db(failures=1, error=StoreUnavailable("read server parameters: connection refused"))
    with pytest.raises(StoreUnavailable):
        asyncio.run(adopt_idle_timeout(db))  # type: ignore[arg-type]
    assert db.reads == 1
