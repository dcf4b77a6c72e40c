"""Multi-row INSERTs (``values_statements``) and ``IN`` lists (``in_list``) of a few fixed
shapes, and log rows whose parameter types do not change (``log_params``): what QuestDB
compiles once and then finds in its caches, instead of a text per row count or list
length, or a compile per change of a parameter's declared type."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from psycopg.adapt import PyFormat, Transformer

from ticktape.store.questdb import SESSION_LOG_COLUMNS, in_list, log_params, values_statements

HEAD = "INSERT INTO t (a, b, c)"


def _rows(n: int) -> list[tuple[int, str, int]]:
    return [(i, f"v{i}", -i) for i in range(n)]


def _shape(sql: str) -> tuple[int, list[int]]:
    """Rows of a statement and its placeholders' numbers, in order."""
    assert sql.startswith(f"{HEAD} VALUES (")
    marks = [int(m) for m in re.findall(r"\$(\d+)", sql)]
    return sql.count("("), marks


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 37, 511, 512, 513, 1500])
def test_every_row_is_sent_once_in_order_by_power_of_two_statements(n: int) -> None:
    rows = _rows(n)
    statements = values_statements(HEAD, rows)
    sent: list[object] = []
    sizes = []
    for sql, params in statements:
        groups, marks = _shape(sql)
        rows_in = groups - 1  # the head's column list is one pair of parentheses
        sizes.append(rows_in)
        assert rows_in & (rows_in - 1) == 0 and rows_in <= 512, sql[:80]
        # the server's own placeholders, $1 … $n in order, one per value
        assert marks == list(range(1, len(params) + 1))
        assert len(params) == 3 * rows_in
        sent.extend(params)
    assert sent == [value for row in rows for value in row]
    assert sizes == sorted(sizes, reverse=True)
    # the fewest statements of those sizes: full ones of 512, then one per bit of the rest
    assert len(statements) == n // 512 + bin(n % 512).count("1")


def test_the_texts_are_few_whatever_the_row_counts() -> None:
    texts = {sql for n in range(1, 300) for sql, _ in values_statements(HEAD, _rows(n))}
    assert len(texts) == 9  # 1, 2, 4, … 256 rows


def test_a_smaller_bound_caps_the_statements() -> None:
    statements = values_statements(HEAD, _rows(20), most=8)
    assert [_shape(sql)[0] - 1 for sql, _ in statements] == [8, 8, 4]


def test_no_rows_no_statement() -> None:
    assert values_statements(HEAD, []) == []


@pytest.mark.parametrize(("n", "count"), [(1, 1), (2, 2), (3, 4), (5, 8), (8, 8), (33, 64)])
def test_an_in_list_is_padded_to_a_power_of_two_with_its_last_value(n: int, count: int) -> None:
    values = [f"s{i}" for i in range(n)]
    marks, params = in_list(values)
    assert marks == ", ".join(["%s"] * count)
    assert params[:n] == values
    assert params[n:] == [values[-1]] * (count - n)
    assert set(params) == set(values)  # the same IN, whatever the padding


def test_an_empty_in_list_is_refused_before_any_query() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        in_list([])


def test_in_lists_have_a_text_per_power_of_two() -> None:
    assert len({in_list(list(range(n)))[0] for n in range(1, 1001)}) == 11  # 1 … 1024


def _declared(values: list[object]) -> tuple[int, ...]:
    """The parameter types psycopg declares to the server for ``values``."""
    tx = Transformer()
    tx.dump_sequence(values, [PyFormat.AUTO] * len(values))
    return tuple(tx.types)


def _row(*, empty: bool) -> list[object]:
    """A log row: ``empty``, its nullable columns empty and its counts small (a session
    just created); otherwise all set and large (one that ended after a long run)."""
    at = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
    by_kind = {
        "LONG": 1 if empty else 5_000_000_000,
        "TIMESTAMP": None if empty else at,
        "BOOLEAN": False,
        "VARCHAR": None if empty else "text",
        "SYMBOL": None if empty else "sym",
    }
    values = [by_kind.get(kind, "id") for _, kind in SESSION_LOG_COLUMNS]
    names = [name for name, _ in SESSION_LOG_COLUMNS]
    values[names.index("ts")] = at  # never empty
    if empty:
        values[names.index("tick_floor")] = None  # a LONG that may be empty
    return values


def test_a_log_row_declares_the_same_parameter_types_whatever_it_holds() -> None:
    empty, full = _row(empty=True), _row(empty=False)
    assert _declared(empty) != _declared(full)  # as psycopg declares them by itself
    assert _declared(log_params(empty)) == _declared(log_params(full))


def test_a_log_row_sends_timestamps_as_microseconds_and_empty_numbers_as_questdb_null() -> None:
    full, empty = log_params(_row(empty=False)), log_params(_row(empty=True))
    names = [name for name, _ in SESSION_LOG_COLUMNS]
    at_us = int(datetime(2026, 12, 3, 9, 30, tzinfo=UTC).timestamp()) * 1_000_000
    assert full[names.index("ts")] == at_us
    assert full[names.index("trades")] == 5_000_000_000
    assert empty[names.index("ended_at")] == -(2**63)  # QuestDB's NULL of a TIMESTAMP
    assert empty[names.index("tick_floor")] == -(2**63)  # and of a LONG
    assert empty[names.index("reason")] is None  # other columns as they are
