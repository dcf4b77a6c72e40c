"""The ResultStore contract and ``TickStore.read_window`` (``ticktape.store.base``), on
every backend."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from tests.conformance.test_tick_store import BASE_US, OWNER, books, trades
from ticktape.domain import Session, SessionStatus
from ticktape.errors import LeaseLost, ValidationError
from ticktape.store import Store
from ticktape.store.base import (
    PARTIAL_RESULTS,
    ResultPart,
    ResultRow,
    StoredResults,
    TickQuery,
)
from ticktape.ticks import BookBatch, TickCounts, TradeBatch

Run = Callable[[Coroutine[Any, Any, Any]], Any]
StartSession = Callable[..., Session]


def _results(n_orders: int = 3, tag: str = "a") -> StoredResults:
    # awkward bodies: unicode, quotes, backslashes, floats in shortest form
    orders = [
        f'{{"order_id":{i},"price":0.1,"tag":"{tag}\\u00e9\\\\\\"x"}}' for i in range(n_orders)
    ]
    fills = [f'{{"fill_id":{i},"qty":1e-09}}' for i in range(n_orders // 2)]
    equity = [f'{{"equity":100000.5,"ts_us":{i}}}' for i in range(n_orders + 2)]
    return StoredResults(
        orders=orders,
        fills=fills,
        equity=equity,
        summary='{"pnl":-1.5,"trade_count":1}',
        hash=f"h-{tag}",
        status="completed",
    )


def test_no_results_is_none_and_empty(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session()
    assert run(store.results.summary(s.id)) is None
    assert run(store.results.rows(s.id, "orders")) == []
    assert run(store.results.summary("no-such-session")) is None


def test_written_results_read_back_exactly(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    written = _results(7)
    run(store.results.write(s.id, written, owner=OWNER))
    summary = run(store.results.summary(s.id))
    assert summary is not None
    assert (summary.hash, summary.status, summary.summary) == ("h-a", "completed", written.summary)
    assert (summary.orders, summary.fills, summary.equity) == (7, 3, 9)
    for table in ("orders", "fills", "equity"):
        rows = run(store.results.rows(s.id, table))
        assert [r.body for r in rows] == getattr(written, table)
        assert [r.seq for r in rows] == list(range(len(rows)))


def test_rows_are_cursor_paged(store: Store, run: Run, running_session: StartSession) -> None:
    s = running_session(owner=OWNER)
    written = _results(25)
    run(store.results.write(s.id, written, owner=OWNER))
    seen: list[ResultRow] = []
    after = -1
    while True:
        page = run(store.results.rows(s.id, "orders", after=after, limit=4))
        if not page:
            break
        assert len(page) <= 4
        seen.extend(page)
        after = page[-1].seq
    assert [r.body for r in seen] == written.orders
    with pytest.raises(ValidationError):
        run(store.results.rows(s.id, "orders", limit=0))


def test_a_write_replaces_the_previous_results(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    run(store.results.write(s.id, _results(9, "first"), owner=OWNER))
    second = _results(2, "second")
    run(store.results.write(s.id, second, owner=OWNER))
    summary = run(store.results.summary(s.id))
    assert summary is not None and summary.hash == "h-second" and summary.orders == 2
    assert [r.body for r in run(store.results.rows(s.id, "orders"))] == second.orders
    assert [r.body for r in run(store.results.rows(s.id, "equity"))] == second.equity


def test_results_of_sessions_are_apart(
    store: Store, run: Run, running_session: StartSession
) -> None:
    a = running_session(owner=OWNER)
    b = running_session(owner=OWNER)
    run(store.results.write(a.id, _results(3, "a"), owner=OWNER))
    run(store.results.write(b.id, _results(5, "b"), owner=OWNER))
    assert len(run(store.results.rows(a.id, "orders"))) == 3
    assert len(run(store.results.rows(b.id, "orders"))) == 5


def test_results_write_is_fenced_by_owner_and_status(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    with pytest.raises(LeaseLost):
        run(store.results.write(s.id, _results(), owner="someone-else"))
    assert run(store.results.summary(s.id)) is None
    run(store.results.write(s.id, _results(4, "kept"), owner=OWNER))
    current = run(store.sessions.get_session(s.id))
    run(
        store.sessions.transition(
            s.id,
            expected_version=current.version,
            to_status=SessionStatus.FAILED,
            actor="test",
            reason="error",
        )
    )
    with pytest.raises(LeaseLost):
        run(store.results.write(s.id, _results(1, "late"), owner=OWNER))
    summary = run(store.results.summary(s.id))
    assert summary is not None and summary.hash == "h-kept"
    with pytest.raises(LeaseLost):
        run(store.results.write("no-such-session", _results(), owner=OWNER))


def test_results_seen_from_another_handle(
    store: Store, other_handle: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    written = _results(6)
    run(store.results.write(s.id, written, owner=OWNER))
    summary = run(other_handle.results.summary(s.id))
    assert summary is not None and summary.hash == written.hash
    assert [r.body for r in run(other_handle.results.rows(s.id, "fills"))] == written.fills


# --------------------------------------------------------------------------- append


def _part(run_id: str, written: StoredResults, at: tuple[int, int, int], size: int) -> ResultPart:
    """Rows ``at`` .. ``at + size`` of each table of ``written`` as one part of ``run_id``."""
    o, f, e = at
    return ResultPart(
        run_id,
        written.orders[o : o + size],
        written.fills[f : f + size],
        written.equity[e : e + size],
        orders_at=o,
        fills_at=f,
        equity_at=e,
    )


def _append_all(
    store: Store, run: Run, session_id: str, run_id: str, written: StoredResults, size: int
) -> None:
    at = (0, 0, 0)
    tables = (written.orders, written.fills, written.equity)
    while any(n < len(t) for n, t in zip(at, tables, strict=True)):
        part = _part(run_id, written, at, size)
        run(store.results.append(session_id, part, owner=OWNER))
        at = (at[0] + len(part.orders), at[1] + len(part.fills), at[2] + len(part.equity))
        summary = run(store.results.summary(session_id))
        assert summary is not None and summary.status == PARTIAL_RESULTS
        assert (summary.orders, summary.fills, summary.equity) == at  # whole parts, so far
        assert len(run(store.results.rows(session_id, "equity", limit=10_000))) == at[2]
    last = ResultPart(
        run_id,
        [],
        [],
        [],
        orders_at=at[0],
        fills_at=at[1],
        equity_at=at[2],
        status=written.status,
        summary=written.summary,
        hash=written.hash,
    )
    run(store.results.append(session_id, last, owner=OWNER))


def test_appended_parts_read_back_as_one_write(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    written = _results(23)
    _append_all(store, run, s.id, "run-1", written, 4)
    summary = run(store.results.summary(s.id))
    assert summary is not None
    assert (summary.hash, summary.status, summary.summary) == ("h-a", "completed", written.summary)
    assert (summary.orders, summary.fills, summary.equity) == (23, 11, 25)
    for table in ("orders", "fills", "equity"):
        rows = run(store.results.rows(s.id, table, limit=10_000))
        assert [r.body for r in rows] == getattr(written, table)
        assert [r.seq for r in rows] == list(range(len(rows)))
    paged = run(store.results.rows(s.id, "orders", after=9, limit=3))
    assert [r.seq for r in paged] == [10, 11, 12]


def test_a_new_run_replaces_an_older_runs_rows_and_a_write_replaces_both(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    first = _results(15, "first")
    run(store.results.append(s.id, _part("run-1", first, (0, 0, 0), 10), owner=OWNER))
    second = _results(6, "second")
    _append_all(store, run, s.id, "run-2", second, 2)  # a claimed replay starts over
    assert [r.body for r in run(store.results.rows(s.id, "orders"))] == second.orders
    summary = run(store.results.summary(s.id))
    assert summary is not None and summary.hash == "h-second" and summary.orders == 6
    third = _results(3, "third")
    run(store.results.write(s.id, third, owner=OWNER))
    assert [r.body for r in run(store.results.rows(s.id, "fills"))] == third.fills
    _append_all(store, run, s.id, "run-3", second, 5)  # and appends replace a write
    assert [r.body for r in run(store.results.rows(s.id, "equity"))] == second.equity


def test_a_part_must_continue_its_run_and_a_retried_part_changes_nothing(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    written = _results(12)
    one = _part("run-1", written, (0, 0, 0), 4)
    run(store.results.append(s.id, one, owner=OWNER))
    run(store.results.append(s.id, one, owner=OWNER))  # the same part again: a retry
    with pytest.raises(ValidationError):  # a gap
        run(store.results.append(s.id, _part("run-1", written, (8, 4, 8), 2), owner=OWNER))
    with pytest.raises(ValidationError):  # a new run must start at zero
        run(store.results.append(s.id, _part("run-2", written, (4, 4, 4), 2), owner=OWNER))
    summary = run(store.results.summary(s.id))
    assert summary is not None and (summary.orders, summary.fills, summary.equity) == (4, 4, 4)
    assert [r.body for r in run(store.results.rows(s.id, "orders"))] == written.orders[:4]


def test_appends_are_fenced_by_owner_and_status(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER)
    written = _results(6)
    with pytest.raises(LeaseLost):
        run(store.results.append(s.id, _part("r", written, (0, 0, 0), 3), owner="someone"))
    assert run(store.results.summary(s.id)) is None
    run(store.results.append(s.id, _part("r", written, (0, 0, 0), 3), owner=OWNER))
    current = run(store.sessions.get_session(s.id))
    run(
        store.sessions.transition(
            s.id,
            expected_version=current.version,
            to_status=SessionStatus.FAILED,
            actor="test",
            reason="error",
        )
    )
    with pytest.raises(LeaseLost):
        run(store.results.append(s.id, _part("r", written, (3, 3, 3), 3), owner=OWNER))
    # the rows flushed before the owner died stay readable, marked partial
    summary = run(store.results.summary(s.id))
    assert summary is not None and summary.status == PARTIAL_RESULTS and summary.orders == 3
    assert [r.body for r in run(store.results.rows(s.id, "orders"))] == written.orders[:3]
    with pytest.raises(LeaseLost):
        run(store.results.append("no-such", _part("r", written, (0, 0, 0), 1), owner=OWNER))


# --------------------------------------------------------------------------- read_window


def _write_ticks(
    store: Store, run: Run, session_id: str
) -> tuple[list[TradeBatch], list[BookBatch]]:
    t = [
        trades(session_id, "BTC_USDT", n=40, step_us=1000, seed=1),
        trades(session_id, "ETH_USDT", n=30, step_us=1500, seed=2),
    ]
    b = [
        books(session_id, "BTC_USDT", n=8, depth=3, step_us=5000, seed=3),
        books(session_id, "ETH_USDT", n=6, depth=3, step_us=7000, seed=4),
    ]
    run(store.ticks.write([*t, *b], owner=OWNER))
    run(store.ticks.wait_visible(10.0))
    return t, b


def test_read_window_returns_exactly_the_window(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER, symbols=("BTC_USDT", "ETH_USDT"))
    t, b = _write_ticks(store, run, s.id)
    lo, hi = BASE_US + 7_000, BASE_US + 31_000
    got = run(store.ticks.read_window(s.id, lo, hi))
    assert [(type(x).__name__, x.symbol) for x in got] == [
        ("TradeBatch", "BTC_USDT"),
        ("BookBatch", "BTC_USDT"),
        ("TradeBatch", "ETH_USDT"),
        ("BookBatch", "ETH_USDT"),
    ]
    sources: list[TradeBatch | BookBatch] = [*t, *b]
    for src in sources:
        mask = (src.ts_us >= lo) & (src.ts_us < hi)
        (out,) = [x for x in got if type(x) is type(src) and x.symbol == src.symbol]
        np.testing.assert_array_equal(out.ts_us, src.ts_us[mask])
        if isinstance(src, TradeBatch):
            assert isinstance(out, TradeBatch)
            np.testing.assert_array_equal(out.trade_id, src.trade_id[mask])
            np.testing.assert_array_equal(out.price, src.price[mask])  # exact, not close
            np.testing.assert_array_equal(out.qty, src.qty[mask])
            np.testing.assert_array_equal(out.side, src.side[mask])
        else:
            assert isinstance(out, BookBatch)
            for col in ("bid_price", "bid_qty", "ask_price", "ask_qty"):
                np.testing.assert_array_equal(getattr(out, col), getattr(src, col)[mask])


def test_read_window_symbols_and_empty(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER, symbols=("BTC_USDT", "ETH_USDT"))
    _write_ticks(store, run, s.id)
    only = run(store.ticks.read_window(s.id, BASE_US, BASE_US + 10**9, ("ETH_USDT",)))
    assert {x.symbol for x in only} == {"ETH_USDT"}
    assert sum(len(x) for x in only) == 30 + 6
    assert run(store.ticks.read_window(s.id, BASE_US - 10**6, BASE_US)) == []
    # a symbol no session can have (quotes, a placeholder, the table prefix) is just absent
    odd = ("E'TH_USDT", "%s", "tt_trades", "ETH_USDT' OR '1'='1")
    assert run(store.ticks.read_window(s.id, BASE_US, BASE_US + 10**9, odd)) == []
    assert run(store.ticks.read_window("no-such-session", BASE_US, BASE_US + 10**9)) == []


def test_count_window_counts_what_read_window_returns(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER, symbols=("BTC_USDT", "ETH_USDT"))
    _write_ticks(store, run, s.id)
    ranges = [
        (BASE_US, BASE_US + 10**9),
        (BASE_US + 7_000, BASE_US + 31_000),
        (BASE_US + 7_001, BASE_US + 7_002),
        (BASE_US - 10**6, BASE_US),
    ]
    for lo, hi in ranges:
        for symbols in (None, ("ETH_USDT",), ("BTC_USDT", "ETH_USDT"), ()):
            got = run(store.ticks.read_window(s.id, lo, hi, symbols))
            counted = run(store.ticks.count_window(s.id, lo, hi, symbols))
            expected = TickCounts(
                sum(len(x) for x in got if isinstance(x, TradeBatch)),
                sum(len(x) for x in got if isinstance(x, BookBatch)),
            )
            assert counted == expected, (lo, hi, symbols)
    whole = run(store.ticks.count_window(s.id, BASE_US, BASE_US + 10**9))
    assert whole == run(store.ticks.count(s.id)) and whole.orderbook > 0
    assert run(store.ticks.count_window(s.id, BASE_US, BASE_US + 10**9, ("ETH_USDT",))) == (
        TickCounts(30, 6)
    )
    odd = ("E'TH_USDT", "%s", "tt_trades")
    assert run(store.ticks.count_window(s.id, BASE_US, BASE_US + 10**9, odd)) == TickCounts()
    assert run(store.ticks.count_window("no-such", BASE_US, BASE_US + 10**9)) == TickCounts()


def _window_rows(
    batches: list[Any],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """A window's batches as rows in the shape of ``read_trades`` / ``read_orderbook``:
    (symbol, ts µs, trade id, price, qty, side) and (symbol, ts µs, bids, asks), the
    padding of a shallower snapshot (NaN price, zero quantity) left out."""
    trade_rows: list[tuple[Any, ...]] = []
    book_rows: list[tuple[Any, ...]] = []
    for b in batches:
        if isinstance(b, TradeBatch):
            assert b.side.dtype == np.int8 and b.ts_us.dtype == np.int64
            trade_rows += [
                (b.symbol, ts, tid, px, qty, "buy" if side == 1 else "sell")
                for ts, tid, px, qty, side in zip(
                    b.ts_us.tolist(),
                    b.trade_id.tolist(),
                    b.price.tolist(),
                    b.qty.tolist(),
                    b.side.tolist(),
                    strict=True,
                )
            ]
        else:
            assert isinstance(b, BookBatch)
            for i, ts in enumerate(b.ts_us.tolist()):
                bids = [
                    (p, q)
                    for p, q in zip(b.bid_price[i].tolist(), b.bid_qty[i].tolist(), strict=True)
                    if not (np.isnan(p) and q == 0.0)
                ]
                asks = [
                    (p, q)
                    for p, q in zip(b.ask_price[i].tolist(), b.ask_qty[i].tolist(), strict=True)
                    if not (np.isnan(p) and q == 0.0)
                ]
                book_rows.append((b.symbol, ts, bids, asks))
    return trade_rows, book_rows


def test_read_window_equals_the_row_reads(
    store: Store, run: Run, running_session: StartSession
) -> None:
    # The replay's columnar read (per backend its own transfer: blobs on SQLite, Parquet
    # over HTTP on QuestDB) returns exactly the ticks the row reads return: every value
    # bit for bit, trades of one microsecond by trade id, snapshots of two depths padded.
    s = running_session(owner=OWNER, symbols=("BTC_USDT", "ETH_USDT", "SOL_USDT"))
    burst = TradeBatch(
        s.id,
        "ETH_USDT",
        np.full(6, BASE_US + 20_000, dtype=np.int64),
        np.array([907, 903, 905, 901, 909, 902], dtype=np.int64),
        np.array([0.1, 1e-12, 7e4 + 1e-9, 3.0, 2.5, 1 / 3]),
        np.array([1.0, 2.0, 0.5, 1e-8, 4.0, 1 / 7]),
        np.array([1, -1, -1, 1, 1, -1], dtype=np.int8),
    )
    batches: list[Any] = [
        trades(s.id, "BTC_USDT", n=40, step_us=1000, seed=1),
        trades(s.id, "ETH_USDT", n=30, step_us=1500, seed=2),
        burst,
        books(s.id, "BTC_USDT", n=8, depth=3, step_us=5000, seed=3),
        books(s.id, "BTC_USDT", n=4, depth=5, start_us=BASE_US + 2_500, step_us=5000, seed=5),
        books(s.id, "SOL_USDT", n=6, depth=1, step_us=7000, seed=4),
    ]
    run(store.ticks.write(batches, owner=OWNER))
    run(store.ticks.wait_visible(10.0))
    stored_trades = [
        (t.symbol, _us(t.ts), t.trade_id, t.price, t.qty, t.side)
        for t in run(store.ticks.read_trades(TickQuery(s.id, limit=1000)))
    ]
    stored_books = [
        (b.symbol, _us(b.ts), [tuple(x) for x in b.bids], [tuple(x) for x in b.asks])
        for b in run(store.ticks.read_orderbook(TickQuery(s.id, limit=1000)))
    ]
    assert len(stored_trades) == 76 and len(stored_books) == 18

    def key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return row[:3]  # (symbol, ts, trade id) for trades; (symbol, ts, bids) for books

    got_trades, got_books = _window_rows(
        run(store.ticks.read_window(s.id, BASE_US, BASE_US + 10**9))
    )
    assert got_trades == sorted(stored_trades, key=key)
    assert got_books == sorted(stored_books, key=lambda r: r[:2])
    mixed = [
        b
        for b in run(store.ticks.read_window(s.id, BASE_US, BASE_US + 10**9))
        if isinstance(b, BookBatch) and b.symbol == "BTC_USDT"
    ]
    assert mixed[0].bid_price.shape == (12, 5)
    # consecutive windows of several sizes, and a subset of symbols, give the same rows
    for step in (997, 10_001):
        rows_t: list[tuple[Any, ...]] = []
        rows_b: list[tuple[Any, ...]] = []
        lo = BASE_US
        while lo < BASE_US + 60_000:
            t_part, b_part = _window_rows(
                run(store.ticks.read_window(s.id, lo, lo + step, ("ETH_USDT", "SOL_USDT")))
            )
            rows_t += t_part
            rows_b += b_part
            lo += step
        assert sorted(rows_t, key=key) == sorted(
            [r for r in stored_trades if r[0] != "BTC_USDT"], key=key
        )
        assert sorted(rows_b, key=lambda r: r[:2]) == sorted(
            [r for r in stored_books if r[0] != "BTC_USDT"], key=lambda r: r[:2]
        )


def _us(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_consecutive_windows_cover_every_tick_once(
    store: Store, run: Run, running_session: StartSession
) -> None:
    s = running_session(owner=OWNER, symbols=("BTC_USDT", "ETH_USDT"))
    _write_ticks(store, run, s.id)
    span = run(store.ticks.span(s.id))
    assert span is not None and span[0] == BASE_US
    total = 0
    lo = span[0]
    while lo <= span[1]:
        total += sum(len(x) for x in run(store.ticks.read_window(s.id, lo, lo + 3_333)))
        lo += 3_333
    assert total == 40 + 30 + 8 + 6
    rows = run(store.ticks.read_trades(TickQuery(s.id, limit=1000)))
    assert len(rows) == 70
