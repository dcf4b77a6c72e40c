"""The QuestDB columnar read's SQL inlining and its errors (``ticktape.store.questdb`` ``_export``).

``/exp`` takes no bind parameters, so values are written into the SQL: strings only
through ``literal`` (quotes doubled), everything else must be an int. A server that
cannot be reached is ``StoreUnavailable`` (retried by the store boundary), never a
raw httpx error.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.conftest import Run
from ticktape.errors import StoreUnavailable
from ticktape.store.questdb import ParquetExport
from ticktape.store.questdb import sql_inline as inline
from ticktape.store.questdb import sql_literal as literal


def test_literal_doubles_quotes() -> None:
    assert literal("abc") == "'abc'"
    assert literal("a'b''c") == "'a''b''''c'"
    assert literal("x' OR '1'='1") == "'x'' OR ''1''=''1'"


def test_inline_takes_ints_only_and_counts_placeholders() -> None:
    sql = " AND NOT ((tenure = %s AND batch_seq > %s))"
    assert inline(sql, [3, -1]) == " AND NOT ((tenure = 3 AND batch_seq > -1))"
    assert inline("", []) == ""
    with pytest.raises(TypeError):
        inline("a = %s", ["1; DROP TABLE x"])
    with pytest.raises(TypeError):
        inline("a = %s", [True])
    with pytest.raises(ValueError):
        inline("a = %s AND b = %s", [1])


def test_an_unreachable_server_is_store_unavailable(run: Run[Any]) -> None:
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    heard: list[StoreUnavailable] = []
    export = ParquetExport(
        f"http://127.0.0.1:{port}", "admin", "quest", lambda: 2.0, on_unavailable=heard.append
    )
    try:
        with pytest.raises(StoreUnavailable, match="read tick window: cannot reach QuestDB") as e:
            run(export.table("SELECT 1", "read tick window"))
    finally:
        run(export.close())
    assert heard == [e.value]  # the store's health hears of it, as of a failed PG read
