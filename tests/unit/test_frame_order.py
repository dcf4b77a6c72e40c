"""A send's rows go to QuestDB in timestamp order, equal timestamps in their own order.

A grouped send holds one session's rows after another's, so its timestamps jump back;
``serialise_frame`` orders them (QuestDB's WAL apply would otherwise sort the
transaction on its single apply thread). The sort must be stable: two rows with the
same DEDUP keys have the same timestamp, and the later one must stay later so that it
still wins. Read from the client's ILP buffer, no server needed.
"""

from __future__ import annotations

import warnings

import numpy as np

from ticktape.store.questdb import serialise_frame, trades_frame
from ticktape.ticks import TradeBatch

T0_US = 1_700_000_000_000_000


def _buffer() -> object:
    with warnings.catch_warnings():  # the legacy import path is where Buffer lives
        warnings.simplefilter("ignore", DeprecationWarning)
        from questdb.ingress import Buffer
    return Buffer(protocol_version=1)  # text ILP: lines readable in the test


def _batch(sid: str, offsets_us: list[int], ids: list[int], prices: list[float]) -> TradeBatch:
    n = len(ids)
    return TradeBatch(
        sid,
        "BTC_USDT",
        T0_US + np.array(offsets_us, dtype=np.int64),
        np.array(ids, dtype=np.int64),
        np.array(prices),
        np.ones(n),
        np.ones(n, dtype=np.int8),
    )


def _stamps_and_prices(buffer: object) -> list[tuple[int, str]]:
    out = []
    for line in bytes(buffer).decode().strip().splitlines():  # type: ignore[call-overload]
        fields = dict(f.split("=", 1) for f in line.split(" ")[1].split(","))
        out.append((int(line.rsplit(" ", 1)[1]), fields["price"]))
    return out


def test_a_sends_rows_are_serialised_in_timestamp_order_and_ties_keep_their_order() -> None:
    # session a's rows, then b's earlier ones; b repeats a key (same ts, id 7) later on
    batches = [
        _batch("a", [30, 40], [1, 2], [1.5, 2.5]),
        _batch("b", [10, 20, 20], [6, 7, 7], [3.5, 4.5, 9.5]),
    ]
    frame = trades_frame(batches, {"a": 1, "b": 1})
    buffer = _buffer()
    serialise_frame(buffer, "tt_trades", frame)
    rows = _stamps_and_prices(buffer)
    stamps = [ts for ts, _ in rows]
    assert stamps == sorted(stamps) and len(rows) == 5
    assert [price for _, price in rows] == ["3.5", "4.5", "9.5", "1.5", "2.5"]


def test_rows_already_in_order_go_as_they_are() -> None:
    frame = trades_frame([_batch("a", [10, 10, 20], [1, 2, 3], [1.5, 2.5, 3.5])], {"a": 1})
    buffer = _buffer()
    serialise_frame(buffer, "tt_trades", frame)
    assert [price for _, price in _stamps_and_prices(buffer)] == ["1.5", "2.5", "3.5"]
