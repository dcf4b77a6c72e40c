"""No driver exception escapes a backend: each maps its drivers' errors in one table.

The tables are checked entry by entry (most specific first), then each real backend is
made to fail for real — an unopenable SQLite file, a QuestDB port nobody listens on —
and what comes out must be a ticktape store error caused by the driver's.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from questdb import QuestDBError, QuestDBErrorCode

from tests.conftest import Run
from ticktape.errors import StoreBusy, StoreError, StoreUnavailable
from ticktape.store import open_store
from ticktape.store.questdb import DRIVER_ERRORS as QUESTDB_ERRORS
from ticktape.store.questdb import QuestDBAddress
from ticktape.store.sqlite import DRIVER_ERRORS as SQLITE_ERRORS


@pytest.mark.parametrize(
    ("driver_error", "expected"),
    [
        (sqlite3.OperationalError("database is locked"), StoreBusy),
        (sqlite3.OperationalError("database table is busy"), StoreBusy),
        (sqlite3.OperationalError("unable to open database file"), StoreUnavailable),
        (sqlite3.OperationalError("disk I/O error"), StoreUnavailable),
        (sqlite3.OperationalError("attempt to write a readonly database"), StoreUnavailable),
        (sqlite3.OperationalError("no such table: x"), StoreError),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), StoreError),
        # A file that cannot be used (replaced, corrupt, full) is a store outage: 503.
        (sqlite3.DatabaseError("file is not a database"), StoreUnavailable),
        (sqlite3.DatabaseError("database disk image is malformed"), StoreUnavailable),
        (sqlite3.OperationalError("database or disk is full"), StoreUnavailable),
        (FileExistsError(17, "File exists"), StoreUnavailable),
    ],
)
def test_sqlite_table_maps_each_driver_error(driver_error: Exception, expected: type) -> None:
    error = SQLITE_ERRORS.translate(driver_error, "op")
    assert type(error) is expected
    assert str(error).startswith("op: ") and str(driver_error) in str(error)


@pytest.mark.parametrize(
    ("driver_error", "expected"),
    [
        (psycopg.errors.InternalError("table busy [reason=insert]"), StoreBusy),
        (psycopg.OperationalError("Timeout expired on waiting for the async command"), StoreBusy),
        (psycopg.OperationalError("connection refused"), StoreUnavailable),
        (psycopg.DatabaseError("cancelled by user [fd=118111753443]"), StoreUnavailable),
        (ConnectionResetError("reset by peer"), StoreUnavailable),
        (QuestDBError(QuestDBErrorCode.SocketError, "could not flush"), StoreUnavailable),
        (psycopg.errors.SyntaxError("unexpected token"), StoreError),
        (psycopg.ProgrammingError("bad parameters"), StoreError),
    ],
)
def test_questdb_table_maps_each_driver_error(driver_error: Exception, expected: type) -> None:
    error = QUESTDB_ERRORS.translate(driver_error, "op")
    assert type(error) is expected
    assert str(error).startswith("op: ")


def test_the_boundary_raises_the_ticktape_error_from_the_driver_error() -> None:
    original = sqlite3.OperationalError("database is locked")
    with pytest.raises(StoreBusy) as caught, SQLITE_ERRORS.wrap("write"):
        raise original
    assert caught.value.__cause__ is original
    busy = StoreBusy("already ours")
    with pytest.raises(StoreBusy) as passed, SQLITE_ERRORS.wrap("write"):
        raise busy
    assert passed.value is busy  # ticktape's own errors pass unchanged


def _assert_store_error(exc: BaseException) -> None:
    assert isinstance(exc, StoreError), f"a driver error escaped: {exc!r}"
    assert exc.__cause__ is not None  # the driver's error is kept as the cause


def test_an_unopenable_sqlite_file_is_a_store_error(tmp_path: Path, run: Run[Any]) -> None:
    (tmp_path / "not-a-dir").write_text("a file where a directory should be")
    store = open_store(f"sqlite:///{tmp_path}/not-a-dir/t.db")
    with pytest.raises(Exception) as caught:
        run(store.open())
    run(store.close())
    _assert_store_error(caught.value)
    assert isinstance(caught.value, StoreUnavailable)


def test_a_corrupt_sqlite_file_is_a_store_error(tmp_path: Path, run: Run[Any]) -> None:
    (tmp_path / "t.db").write_bytes(b"this is not an SQLite database" * 100)
    store = open_store(f"sqlite:///{tmp_path}/t.db")
    with pytest.raises(Exception) as caught:
        run(store.open())
    run(store.close())
    _assert_store_error(caught.value)


def test_an_unreachable_questdb_is_store_unavailable(run: Run[Any]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = open_store(f"questdb://127.0.0.1:{port}?ilp=http://127.0.0.1:{port}")
    with pytest.raises(Exception) as caught:
        run(store.open())
    run(store.close())
    _assert_store_error(caught.value)
    assert isinstance(caught.value, StoreUnavailable)


@pytest.mark.questdb
def test_a_statement_questdb_cancels_is_retryable(questdb_url: str) -> None:
    """What a QuestDB restart does to a running statement, made for real: the server
    cancels it ("cancelled by user", as ``conn.cancel()`` makes it) — StoreUnavailable,
    which the store handle retries, not a plain StoreError."""
    address = QuestDBAddress.from_url(questdb_url)
    with psycopg.connect(address.conninfo, autocommit=True, prepare_threshold=None) as conn:
        done = threading.Event()

        def cancel_until_done() -> None:  # a cancel sent before the query began is lost
            while not done.wait(0.2):
                conn.cancel()

        canceller = threading.Thread(target=cancel_until_done)
        canceller.start()
        try:
            with pytest.raises(psycopg.Error) as caught:
                conn.execute(  # runs for a minute unless cancelled
                    "SELECT count() FROM long_sequence(3000000000) "
                    "WHERE x % 7 = 3 AND rnd_double() > 0.5"
                ).fetchall()
        finally:
            done.set()
            canceller.join()
    error = QUESTDB_ERRORS.translate(caught.value, "read")
    assert type(error) is StoreUnavailable, (caught.value, error)
