"""Multi-row INSERTs (``values_statements``) and ``IN`` lists (``in_list``) of a few fixed
shapes: what QuestDB compiles once and then finds in its caches, instead of a text per
row count or list length."""

from __future__ import annotations

import re

import pytest

from ticktape.store.questdb import in_list, values_statements

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


def test_in_lists_have_a_text_per_power_of_two() -> None:
    assert len({in_list(list(range(n)))[0] for n in range(1, 1001)}) == 11  # 1 … 1024
