"""The batches' fast constructors (``trade_batch``, ``book_batch``: the sim feed's hot
path) make the very batch the dataclass constructor makes: the same type, every field,
equality, repr, and still frozen."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ticktape.ticks import BookBatch, TradeBatch, book_batch, trade_batch


def _same(a: object, b: object) -> None:
    assert type(a) is type(b)
    for f in dataclasses.fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x is y, f.name  # the very objects given, no copy
    assert repr(a) == repr(b)


def test_trade_batch_is_the_dataclass_batch() -> None:
    def i64() -> np.ndarray:
        return np.arange(3, dtype=np.int64)

    # a distinct object per field: a constructor that swapped two fields would be caught
    args = ("s", "BTC", i64(), i64(), np.ones(3), np.ones(3), np.ones(3, dtype=np.int8), 7, i64())
    made = trade_batch(*args)
    _same(made, TradeBatch(*args))
    _same(trade_batch(*args[:7]), TradeBatch(*args[:7]))  # defaults: seq 0, no recv
    assert len(made) == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.seq = 8  # type: ignore[misc]


def test_book_batch_is_the_dataclass_batch() -> None:
    def lv() -> np.ndarray:
        return np.ones((2, 3))

    ts, recv = np.arange(2, dtype=np.int64), np.arange(2, dtype=np.int64)
    args = ("s", "BTC", ts, lv(), lv(), lv(), lv(), 4, recv)
    made = book_batch(*args)
    _same(made, BookBatch(*args))
    _same(book_batch(*args[:7]), BookBatch(*args[:7]))
    assert len(made) == 2 and made.depth == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.symbol = "ETH"  # type: ignore[misc]
