"""Real feeds in real sessions: ``ticktape serve`` records from local exchanges that speak
Binance's and MEXC's protocols, through drops and sequence breaks, and a SIGKILL mid-reconnect.

The fake exchange runs on its own event loop in a thread of the test process (so the test
scripts it while the server, a subprocess, is connected to it); the server finds it through
``TICKTAPE_BINANCE_*`` / ``TICKTAPE_MEXC_*``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.acceptance.conftest import ACCEPTANCE_ENV
from tests.acceptance.helpers import TERMINAL, assert_valid_history, wait_for
from ticktape.feeds.fakes import FakeBinance, FakeExchange, FakeMexc
from ticktape.testing import ServerProcess, running_server

T = TypeVar("T")
F = TypeVar("F", bound=FakeExchange)

DEPTH = 5


class FakeInThread:
    """A fake exchange on its own event loop, driven from the (synchronous) test."""

    def __init__(self, fake: FakeExchange) -> None:
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeInThread:
        self.thread.start()
        self.call(self.fake.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.fake.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def do(self, fn: Callable[[], T]) -> T:
        """Run a synchronous scripting call on the exchange's loop (no race with its I/O)."""

        async def run() -> T:
            return fn()

        return self.call(run())


def _env(fake: FakeExchange) -> dict[str, str]:
    return {
        **ACCEPTANCE_ENV,
        "TICKTAPE_BINANCE_WS_URL": fake.ws_base,
        "TICKTAPE_BINANCE_REST_URL": fake.http_url,
        "TICKTAPE_MEXC_WS_URL": f"{fake.ws_base}/edge",
        "TICKTAPE_MEXC_REST_URL": fake.http_url,
        "TICKTAPE_FEED_STALE_S": "3",
        "TICKTAPE_FEED_RECONNECT_MAX_S": "0.2",
        "TICKTAPE_FLUSH_INTERVAL_S": "0.05",
        # these scenarios drive MEXC's incremental book (sequence breaks, resyncs);
        # test_mexc_full_depth_snapshots_in_base_units turns full depth back on
        "TICKTAPE_MEXC_FULL_DEPTH": "0",
    }


@pytest.fixture
def binance(tmp_path: Path) -> Iterator[FakeInThread]:
    with FakeInThread(FakeBinance()) as fx:
        yield fx


@pytest.fixture
def mexc(tmp_path: Path) -> Iterator[FakeInThread]:
    with FakeInThread(FakeMexc()) as fx:
        yield fx


def _rows(c: httpx.Client, sid: str, kind: str) -> list[dict[str, Any]]:
    """Every stored row of a kind (sessions here are small: one page)."""
    body = c.get(f"/api/sessions/{sid}/{kind}", params={"limit": 10_000}).json()
    rows: list[dict[str, Any]] = body[kind]
    assert len(rows) < 10_000
    return rows


def _until(
    predicate: Callable[[], bool], what: str, move: Callable[[], object] | None = None
) -> None:
    """Poll (the server's state lives in another process) until ``predicate()``; ``move``
    keeps the market moving meanwhile (a book resyncs once an update follows its snapshot)."""
    deadline = time.monotonic() + 30.0
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if move is not None:
            move()
        time.sleep(0.05)


def _create(c: httpx.Client, exchange: str, symbol: str, **extra: Any) -> str:
    body = {
        "kind": "collect",
        "exchange": exchange,
        "symbols": [symbol],
        "book_depth": DEPTH,
        **extra,
    }
    response = c.post("/api/sessions", json=body)
    assert response.status_code == 201, response.text
    sid: str = response.json()["id"]
    return sid


def _stop(c: httpx.Client, sid: str) -> dict[str, Any]:
    response = c.post(f"/api/sessions/{sid}/stop", params={"wait": "true", "timeout": 30})
    assert response.status_code == 200, response.text
    session: dict[str, Any] = response.json()
    assert session["status"] in TERMINAL
    return session


def _quality(c: httpx.Client, sid: str) -> dict[tuple[str, str], dict[str, Any]]:
    response = c.get(f"/api/sessions/{sid}/quality")
    assert response.status_code == 200, response.text
    return {(q["symbol"], q["data_type"]): q for q in response.json()["streams"]}


def _book_gap_causes(c: httpx.Client, sid: str, symbol: str) -> list[str]:
    """The causes of the book's stored gaps: a book gap is stored once it is closed, by
    the first snapshot of the rebuilt book."""
    stream = _quality(c, sid).get((symbol, "orderbook"))
    return [] if stream is None else [g["cause"] for g in stream["gap_rows"]]


def _metrics(c: httpx.Client) -> dict[str, float]:
    text = c.get("/metrics").text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _us(ts: str) -> int:
    d = datetime.fromisoformat(ts)
    return int(d.timestamp()) * 1_000_000 + d.microsecond


def _assert_no_book_inside_a_gap(books: list[dict[str, Any]], gaps: list[dict[str, Any]]) -> None:
    times = [_us(b["ts"]) for b in books]
    for g in gaps:
        start, end = _us(g["start"]), _us(g["end"])
        inside = [t for t in times if start < t < end]
        assert inside == [], (g, inside)


def _assert_stats_equal_rows(c: httpx.Client, sid: str) -> dict[str, Any]:
    session: dict[str, Any] = c.get(f"/api/sessions/{sid}").json()
    stats = session["stats"]
    assert stats["trades"] == len(_rows(c, sid, "trades")), stats
    assert stats["orderbook"] == len(_rows(c, sid, "orderbook")), stats
    return session


# --------------------------------------------------------------------------- recording


@dataclass
class Recorded:
    """A stopped recording session: what was sent, what is stored, its quality streams."""

    c: httpx.Client
    fake: Any
    sent: list[Any]
    trades: list[dict[str, Any]]
    qt: dict[str, Any]  # trades
    qb: dict[str, Any]  # order books


class Recording:
    """What one exchange's recording scenario sends and expects. The scenario itself is
    the same for every exchange: ``test_a_session_records_through_sequence_breaks_and_a_drop``.
    """

    exchange: str
    symbol: str
    depth_skip: int  # depth updates the exchange skips: a sequence break of the book
    trades_before_drop: int
    trades_total: int

    def make(self) -> FakeExchange:
        raise NotImplementedError

    def send_before_break(self, fx: FakeInThread) -> list[Any]:
        raise NotImplementedError

    def while_down(self, fx: FakeInThread) -> None:
        """What the market does while the link is down."""

    def send_after_drop(self, fx: FakeInThread) -> list[Any]:
        raise NotImplementedError

    def check(self, done: Recorded) -> None:
        """The exchange's own assertions on the stopped session."""


class BinanceRecording(Recording):
    """Trades: aggregate ids ``a``, a jump of 7 (sequence break) and 4 lost while down;
    depth: a break (``pu`` != previous ``u``)."""

    exchange, symbol, depth_skip = "binance", "BTCUSDT", 3
    trades_before_drop, trades_total = 150, 180

    def make(self) -> FakeExchange:
        return FakeBinance()

    def send_before_break(self, fx: FakeInThread) -> list[Any]:
        fake: FakeBinance = fx.fake  # type: ignore[assignment]
        sent = fx.call(fake.send_trades(self.symbol, 100))
        fx.do(lambda: fake.skip_trades(self.symbol, 7))  # trades never sent: ``a`` jumps by 7
        sent += fx.call(fake.send_trades(self.symbol, 50))
        return sent

    def while_down(self, fx: FakeInThread) -> None:
        fake: FakeBinance = fx.fake  # type: ignore[assignment]
        fx.do(lambda: fake.skip_trades(self.symbol, 4))  # trades while the link was down

    def send_after_drop(self, fx: FakeInThread) -> list[Any]:
        fake: FakeBinance = fx.fake  # type: ignore[assignment]
        return list(fx.call(fake.send_trades(self.symbol, 30)))

    def check(self, done: Recorded) -> None:
        c, fake, sent, trades, qt, qb = done.c, done.fake, done.sent, done.trades, done.qt, done.qb
        # What the exchange sent, exactly once; what it did not send is counted as lost.
        assert [t["trade_id"] for t in trades] == [t.agg_id for t in sent]
        assert [t["price"] for t in trades] == [t.price for t in sent]
        exchange_made = fake.trades[-1].agg_id - fake.trades[0].agg_id + 1
        assert qt["lost"] == 11 == exchange_made - len(trades)
        trade_gaps = sorted((g["cause"], g["lost"]) for g in qt["gap_rows"])
        assert trade_gaps == [("disconnect", 4), ("sequence_break", 7)]
        assert (qt["reconnects"], qt["sequence_breaks"]) == (1, 1)
        book_causes = sorted(g["cause"] for g in qb["gap_rows"])
        assert book_causes == ["disconnect", "sequence_break"]
        assert qt["latency"]["p50_ms"] is not None and qt["latency"]["max_ms"] >= 0
        assert 0 < qt["coverage_pct"] < 100
        metrics = _metrics(c)
        assert (
            metrics['ticktape_feed_rows_received_total{data_type="trades",exchange="binance"}']
            == 180
        )
        assert metrics['ticktape_feed_gaps_total{cause="sequence_break",exchange="binance"}'] == 2
        assert metrics['ticktape_feed_gaps_total{cause="disconnect",exchange="binance"}'] == 2
        assert metrics['ticktape_feed_messages_lost_total{exchange="binance"}'] >= 11
        assert metrics["ticktape_feed_commit_lag_seconds_count"] > 0


class MexcRecording(Recording):
    """Deals carry no id (ticktape numbers them), some identical; depth: versions 5 behind."""

    exchange, symbol, depth_skip = "mexc", "BTC_USDT", 5
    trades_before_drop, trades_total = 100, 125

    def make(self) -> FakeExchange:
        return FakeMexc()

    def send_before_break(self, fx: FakeInThread) -> list[Any]:
        fake: FakeMexc = fx.fake  # type: ignore[assignment]
        # Distinct deals with the same time, price and size are both kept.
        sent = fx.call(fake.send_deals(self.symbol, 40, per_message=4, same=True))
        sent += fx.call(fake.send_deals(self.symbol, 60))
        return sent

    def send_after_drop(self, fx: FakeInThread) -> list[Any]:
        fake: FakeMexc = fx.fake  # type: ignore[assignment]
        return list(fx.call(fake.send_deals(self.symbol, 25)))

    def check(self, done: Recorded) -> None:
        sent, trades, qt, qb = done.sent, done.trades, done.qt, done.qb
        by_id = sorted(trades, key=lambda t: t["trade_id"])
        assert [t["trade_id"] for t in by_id] == list(range(1, 126))  # ticktape's numbering
        assert [(t["price"], t["qty"]) for t in by_id] == [(d.price, d.qty) for d in sent]
        assert [(g["cause"], g["lost"]) for g in qt["gap_rows"]] == [("disconnect", None)]
        book_gaps = sorted((g["cause"], g["lost"]) for g in qb["gap_rows"])
        assert book_gaps[0][0] == "disconnect"
        assert book_gaps[1] == ("sequence_break", 5)


@pytest.mark.parametrize(
    "recording", [BinanceRecording(), MexcRecording()], ids=lambda r: str(r.exchange)
)
def test_a_session_records_through_sequence_breaks_and_a_drop(
    store_url: str, tmp_path: Path, recording: Recording
) -> None:
    sym = recording.symbol
    with (
        FakeInThread(recording.make()) as fx,
        running_server(store_url, tmp_path, env=_env(fx.fake)) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as c,
    ):
        fake: Any = fx.fake  # both fakes send depth and skip depth updates

        def move() -> None:
            fx.call(fake.send_depth(sym, 1))

        sid = _create(c, recording.exchange, sym)
        fx.call(fake.wait_subscribed((sym,), ("trades", "depth")))
        _until(lambda: len(_rows(c, sid, "orderbook")) > 0, "a first book", move=move)
        sent = recording.send_before_break(fx)
        fx.do(lambda: fake.skip_depth(sym, recording.depth_skip))  # a sequence break
        # Rebuilt means the break's gap is closed (by the first snapshot after the resync),
        # not "more rows stored": rows made before the break may still be on their way to
        # the store, and a drop that meets the break unresolved joins its open gap (one
        # gap, cause sequence_break) instead of making a disconnect gap of its own.
        _until(
            lambda: "sequence_break" in _book_gap_causes(c, sid, sym),
            "the book rebuilt after the break",
            move=move,
        )
        stored = recording.trades_before_drop
        _until(lambda: len(_rows(c, sid, "trades")) == stored, f"{stored} trades stored")
        fx.call(fake.drop())  # a network failure
        recording.while_down(fx)
        fx.call(fake.wait_subscribed((sym,), ("trades", "depth")))
        sent += recording.send_after_drop(fx)
        _until(
            lambda: "disconnect" in _book_gap_causes(c, sid, sym),
            "the book rebuilt after the drop",
            move=move,
        )
        total = recording.trades_total
        _until(lambda: len(_rows(c, sid, "trades")) == total, f"{total} trades stored")
        session = _stop(c, sid)
        assert session["status"] == "stopped", session

        trades = _rows(c, sid, "trades")
        q = _quality(c, sid)
        qt, qb = q[(sym, "trades")], q[(sym, "orderbook")]
        books = _rows(c, sid, "orderbook")
        assert (qt["rows"], qb["rows"]) == (total, len(books))
        recording.check(Recorded(c, fake, sent, trades, qt, qb))
        _assert_no_book_inside_a_gap(books, qb["gap_rows"])
        _assert_stats_equal_rows(c, sid)
        assert_valid_history(c, sid)


def test_binance_symbols_in_the_wrong_form_are_refused(
    store_url: str, tmp_path: Path, binance: FakeInThread
) -> None:
    with (
        running_server(store_url, tmp_path, env=_env(binance.fake)) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as c,
    ):
        body = {"kind": "collect", "exchange": "binance", "symbols": ["BTC_USDT"]}
        response = c.post("/api/sessions", json=body)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "validation_error" and "BTCUSDT" in error["message"]


def test_a_refused_subscription_fails_the_session_naming_the_symbol(
    store_url: str, tmp_path: Path, mexc: FakeInThread
) -> None:
    fake: FakeMexc = mexc.fake  # type: ignore[assignment]
    mexc.do(lambda: fake.refused.add("NOPE_USDT"))
    with (
        running_server(store_url, tmp_path, env=_env(fake)) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as c,
    ):
        sid = _create(c, "mexc", "NOPE_USDT")
        session = wait_for(c, sid, lambda s: s["status"] in TERMINAL, what="the session to end")
        assert session["status"] == "failed"
        events = c.get(f"/api/sessions/{sid}/events").json()["events"]
        assert "NOPE_USDT" in (events[-1]["detail"] or ""), events[-1]


# --------------------------------------------------------------------------- MEXC


def test_a_stop_while_the_exchange_is_down_is_prompt_and_keeps_the_open_gap(
    store_url: str, tmp_path: Path, mexc: FakeInThread
) -> None:
    fx = mexc
    fake: FakeMexc = fx.fake  # type: ignore[assignment]
    sym = "ETH_USDT"
    with (
        running_server(store_url, tmp_path, env=_env(fake)) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as c,
    ):
        sid = _create(c, "mexc", sym, data_types=["trades"])
        fx.call(fake.wait_subscribed((sym,), ("trades",)))
        fx.call(fake.send_deals(sym, 20))
        _until(lambda: len(_rows(c, sid, "trades")) == 20, "20 deals stored")
        fx.call(fake.stop())  # the exchange goes away: the feed keeps reconnecting
        started = time.monotonic()
        session = _stop(c, sid)
        assert time.monotonic() - started < 10.0
        assert session["status"] == "stopped"
        gaps = _quality(c, sid)[(sym, "trades")]["gap_rows"]
        assert [g["cause"] for g in gaps] == ["disconnect"]  # still open at the stop
        assert _us(gaps[0]["end"]) >= _us(gaps[0]["start"])
        _assert_stats_equal_rows(c, sid)
        fx.call(fake.start())  # for the fixture's teardown


# --------------------------------------------------------------------------- crash


def test_sigkill_while_the_feed_reconnects_then_restart_resumes_without_double_counting(
    store_url: str, tmp_path: Path, binance: FakeInThread
) -> None:
    fx = binance
    fake: FakeBinance = fx.fake  # type: ignore[assignment]
    sym = "ETHUSDT"
    server = ServerProcess(store_url, tmp_path, env=_env(fake))
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            sid = _create(c, "binance", sym, data_types=["trades"], on_owner_loss="resume")
            fx.call(fake.wait_subscribed((sym,), ("trades",)))
            sent = fx.call(fake.send_trades(sym, 60))
            _until(lambda: len(_rows(c, sid, "trades")) == 60, "60 trades stored")
            wait_for(c, sid, lambda s: s["stats"]["trades"] == 60, what="a heartbeat")
        fx.call(fake.drop())  # the feed is reconnecting ...
        server.kill()  # ... when the server dies
        fx.do(lambda: fake.skip_trades(sym, 9))  # the market goes on meanwhile
        server.start()  # same instance name: it reaps its dead incarnation and resumes
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            fx.call(fake.wait_subscribed((sym,), ("trades",)))
            sent += fx.call(fake.send_trades(sym, 40))
            _until(lambda: len(_rows(c, sid, "trades")) == 100, "100 trades stored")
            session = _stop(c, sid)
            assert session["status"] == "stopped", session
            trades = _rows(c, sid, "trades")
            assert [t["trade_id"] for t in trades] == [t.agg_id for t in sent]
            session = _assert_stats_equal_rows(c, sid)
            assert session["stats"]["trades"] == 100  # nothing counted twice
            q = _quality(c, sid)[(sym, "trades")]
            restart = [g for g in q["gap_rows"] if g["cause"] == "restart"]
            assert len(restart) == 1 and restart[0]["lost"] == 9, q["gap_rows"]
            events = assert_valid_history(c, sid)
            assert any(e["reason"] == "resumed" for e in events), events
    finally:
        server.stop()


def test_duplicates_and_malformed_messages_are_stored_with_the_session(
    store_url: str, tmp_path: Path, binance: FakeInThread
) -> None:
    """The fake sends N trades again (duplicates) and M malformed messages: the quality
    report shows exactly N (on the symbol's trades) and M (per kind) — also from a new
    server process on the same store, so the numbers come from the store, not memory."""
    fx = binance
    fake: FakeBinance = fx.fake  # type: ignore[assignment]
    sym = "SOLUSDT"
    server = ServerProcess(store_url, tmp_path, env=_env(fake))
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            sid = _create(c, "binance", sym, data_types=["trades"])
            fx.call(fake.wait_subscribed((sym,), ("trades",)))
            sent = fx.call(fake.send_trades(sym, 30))
            duplicates = fx.call(fake.resend_trades(sent[5:12]))  # 7 trades sent again
            malformed = 0
            for text in ("{not json", '["a list"]', "{not json either"):
                malformed += fx.call(fake.send_raw(text))
            sent += fx.call(fake.send_trades(sym, 10))
            _until(lambda: len(_rows(c, sid, "trades")) == 40, "40 trades stored")
            assert _stop(c, sid)["status"] == "stopped"
            assert (duplicates, malformed) == (7, 3)  # each delivered to the one connection
        server.stop()
        server.start()  # a new process: nothing of the old one's memory
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            body = c.get(f"/api/sessions/{sid}/quality").json()
            q = {(s["symbol"], s["data_type"]): s for s in body["streams"]}
            assert q[(sym, "trades")]["duplicates_dropped"] == duplicates
            assert q[(sym, "trades")]["rows"] == 40
            assert body["malformed"] == malformed
            assert sum(body["malformed_by_kind"].values()) == malformed
            assert body["malformed_by_kind"]["invalid JSON"] == 2
            assert [t["trade_id"] for t in _rows(c, sid, "trades")] == [t.agg_id for t in sent]
            _assert_stats_equal_rows(c, sid)
            assert_valid_history(c, sid)
    finally:
        server.stop()


def test_mexc_full_depth_snapshots_in_base_units(store_url: str, tmp_path: Path) -> None:
    """With its default settings a MEXC session of depth <= 20 records ``sub.depth.full``
    snapshots; deal and book volumes are stored in the base asset (contracts *
    contractSize from the contract detail), and a symbol without a detail fails the
    session naming it."""
    sym, size = "BTC_USDT", 0.0001
    fake = FakeMexc(contract_sizes={sym: size}, default_contract_size=None)
    with (
        FakeInThread(fake) as fx,
        running_server(
            store_url, tmp_path, env={**_env(fake), "TICKTAPE_MEXC_FULL_DEPTH": "1"}
        ) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as c,
    ):
        sid = _create(c, "mexc", sym)  # depth 5: sub.depth.full with limit 5
        fx.call(fake.wait_subscribed((sym,), ("trades", "depth.full")))
        sent = fx.call(fake.send_deals(sym, 12))
        for _ in range(3):
            fx.do(lambda: fake.skip_depth(sym, 2))  # the book moves between pushes
            fx.call(fake.send_full_depth(sym, 5))
        _until(lambda: len(_rows(c, sid, "trades")) == 12, "12 trades stored")
        _until(lambda: len(_rows(c, sid, "orderbook")) == 3, "3 snapshots stored")
        assert _stop(c, sid)["status"] == "stopped"
        assert fake.snapshot_requests == 0  # no REST book: the pushes are whole snapshots
        trades = sorted(_rows(c, sid, "trades"), key=lambda t: t["trade_id"])
        assert [t["qty"] for t in trades] == [round(d.qty * size, 12) for d in sent]
        bids, asks = fx.do(lambda: fake.book(sym, DEPTH))
        last = _rows(c, sid, "orderbook")[-1]
        assert last["bids"] == [[p, round(q * size, 12)] for p, q in bids]
        assert last["asks"] == [[p, round(q * size, 12)] for p, q in asks]
        _assert_stats_equal_rows(c, sid)

        other = _create(c, "mexc", "ETH_USDT")  # the exchange has no detail for it
        session = wait_for(c, other, lambda s: s["status"] in TERMINAL, what="the session to end")
        assert session["status"] == "failed"
        events = c.get(f"/api/sessions/{other}/events").json()["events"]
        assert "contract.detail ETH_USDT" in (events[-1]["detail"] or ""), events[-1]
