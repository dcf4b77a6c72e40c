"""The dashboard in a real headless Chromium against a real ``ticktape serve``.

Chromium is Debian's ``chromium`` package (``scripts/install`` adds it), driven by
Playwright through its executable path. Without it the tests skip, saying so —
except under ``.ci/run`` (``TICKTAPE_REQUIRE_BROWSER=1``), where they fail. The
dashboard must be built (``scripts/install`` runs ``npm ci && npm run build`` in
dashboard/); a missing build fails here, it never skips.

One server and one browser serve the whole module; every test has its own page,
whose network and console are watched: in a normal flow any 4xx/5xx answer, failed
request or console error fails the test. A failing test leaves a screenshot of its
page under its temporary directory (``failure.png``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance import test_feeds as feeds
from tests.acceptance.conftest import ACCEPTANCE_ENV
from tests.acceptance.helpers import start_collect, wait_for
from ticktape.feeds.fakes import FakeBinance
from ticktape.testing import ServerProcess, running_server

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
UPDATE_TIMEOUT_MS = 10_000  # a pushed change shows within the feed period; slack for the host
DIST = Path(__file__).parents[2] / "src" / "ticktape" / "web" / "dist" / "index.html"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if CHROMIUM is None:
        if os.environ.get("TICKTAPE_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required here (TICKTAPE_REQUIRE_BROWSER=1)")
        pytest.skip("no chromium here (apt-get install chromium)")
    assert DIST.is_file(), "the dashboard is not built: cd dashboard && npm ci && npm run build"
    tmp = tmp_path_factory.mktemp("dashboard")
    srv = ServerProcess(f"sqlite:///{tmp}/ticktape.db", tmp, env=ACCEPTANCE_ENV)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser(server: ServerProcess) -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c


@dataclass
class Watched:
    """A page and what its browser saw go wrong."""

    page: Any
    bad_responses: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    list_requests: list[str] = field(default_factory=list)
    in_flight: set[Any] = field(default_factory=set)  # requests not yet answered (no stream)

    def settle(self, timeout_s: float = UPDATE_TIMEOUT_MS / 1000, live: bool = True) -> None:
        """Wait until every request the page made has its answer: leaving a page sooner
        aborts them (the browser's doing, not the page's).

        A page with a live indicator loads once more when its event stream is ready
        (the catch-up), and says "live" only after that load is answered: with
        ``live`` the wait includes it — an empty in-flight set between the first load
        and the catch-up is not a settled page."""
        deadline = time.monotonic() + timeout_s
        indicator = self.page.locator("[data-live]")
        if live and indicator.count():
            expect(indicator.first).to_have_attribute("data-live", "yes", timeout=timeout_s * 1000)
        while self.in_flight:
            assert time.monotonic() < deadline, f"requests still open: {self.in_flight}"
            self.page.wait_for_timeout(20)  # lets Playwright deliver the answers' events

    def assert_clean(self) -> None:
        assert self.bad_responses == [], "requests answered 4xx/5xx in a normal flow"
        assert self.failed_requests == [], "requests failed in a normal flow"
        assert self.console_errors == [], "the page logged errors"


def _watch(page: Any) -> Watched:
    w = Watched(page)

    def on_response(r: Any) -> None:
        if r.status >= 400:
            w.bad_responses.append(f"{r.status} {r.request.method} {r.url}")

    def on_failed(r: Any) -> None:
        # An open event stream is cut when the page goes away: that is no failure.
        if not r.url.endswith("/api/sessions/stream"):
            w.failed_requests.append(f"{r.method} {r.url}: {r.failure}")

    def on_request(r: Any) -> None:
        if not r.url.endswith("/api/sessions/stream"):
            w.in_flight.add(r)

    page.on("request", on_request)
    page.on("requestfinished", lambda r: w.in_flight.discard(r))
    page.on("requestfailed", lambda r: w.in_flight.discard(r))
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    page.on("console", lambda m: w.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: w.console_errors.append(f"uncaught: {e}"))
    page.on(
        "request", lambda r: w.list_requests.append(r.url) if "/api/sessions?" in r.url else None
    )
    return w


@pytest.fixture
def watched(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(UPDATE_TIMEOUT_MS)
    try:
        yield _watch(page)
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        context.close()


def _wait_live(page: Any) -> None:
    expect(page.locator("#updated")).to_have_attribute("data-live", "yes")
    expect(page.locator("#updated")).to_contain_text("live")


def _expect_ids(rows: Any, expected: list[str]) -> None:
    """The list shows exactly these sessions in this order, once it has settled.

    Each check waits: a live update or a page load still on its way re-renders the
    rows, so reading them once right after the count matches could see the old ones.
    """
    expect(rows).to_have_count(len(expected))
    for i, session_id in enumerate(expected):
        expect(rows.nth(i)).to_have_attribute("data-id", session_id)


def _number(text: str) -> int:
    assert re.fullmatch(r"\d{1,3}(,\d{3})*", text), f"not a grouped number: {text!r}"
    return int(text.replace(",", ""))


def test_start_watch_open_chart_and_stop_a_session(
    server: ServerProcess, client: httpx.Client, watched: Watched
) -> None:
    page = watched.page
    page.goto(server.url + "/")
    _wait_live(page)
    loaded = len(watched.list_requests)
    expect(page.locator("#s-exchange option")).to_contain_text(["sim"])

    form = page.locator("#start")
    form.get_by_label("Symbols").fill("SOL_USDT")
    form.get_by_label("Trades/s per symbol").fill("400")
    form.get_by_role("button", name="Start collecting").click()
    expect(page.locator("#message")).to_contain_text("started session")
    sid = page.locator("#message").inner_text().split()[-1]
    row = page.locator(f"#sessions tr[data-id='{sid}']")
    expect(row).to_contain_text("running")
    expect(row).to_contain_text("SOL_USDT")

    # The counts rise without a reload, pushed: past 1,000 (grouped with a comma).
    trades = row.locator("td").nth(5)
    expect(trades).to_have_text(re.compile(r"^\d{1,3},\d{3}$"), timeout=30_000)
    first = _number(trades.inner_text())
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel).textContent.replace(/,/g, '')) > n",
        arg=[f"#sessions tr[data-id='{sid}'] td:nth-child(6)", first],
    )
    assert len(watched.list_requests) == loaded, "the list polled while the stream was live"
    created = row.locator("time")
    assert "UTC" in created.inner_text()
    assert re.search(r"local time .* \(UTC[+-]\d\d:\d\d\)", created.get_attribute("title") or "")

    # Its own page, at a URL to share.
    watched.settle()  # leave no request of this page open behind
    row.get_by_role("link").click()
    page.wait_for_url(f"**/ui/sessions/{sid}")
    status = page.locator("#facts dd[data-fact='status']")
    expect(status).to_have_text("running")
    chart = page.locator("#chart")
    expect(chart.locator("canvas").first).to_be_visible()
    expect(chart).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"))
    expect(page.locator("#book table.depth.bid tbody tr").first).to_be_visible()
    expect(page.locator("#timeline")).to_contain_text("running")

    page.get_by_role("button", name="Stop session").click()
    expect(status).to_have_text("stopped")
    expect(page.locator("#timeline")).to_contain_text("stopped")
    expect(page.get_by_role("button", name="Stop session")).to_have_count(0)

    # The chart, redrawn once the session ended, has exactly the server's buckets,
    # which hold every trade the session recorded.
    final = client.get(f"/api/sessions/{sid}").json()
    answer = client.get(f"/api/sessions/{sid}/chart", params={"points": 600}).json()
    assert sum(b["count"] for b in answer["buckets"]) == final["stats"]["trades"]
    expect(chart).to_have_attribute("data-points", str(len(answer["buckets"])))
    expect(page.locator("#chart-info")).to_contain_text(f"{len(answer['buckets']):,} points")
    facts = page.locator("#facts dd[data-fact='trades']")
    expect(facts).to_have_text(f"{final['stats']['trades']:,}")
    watched.assert_clean()


def test_filter_sort_and_page_through_sessions(
    server: ServerProcess, client: httpx.Client, watched: Watched
) -> None:
    ids = []
    for i in range(12):
        body = {
            "kind": "collect",
            "symbols": ["PAGE_USDT"],
            "rate_per_s": 1,
            "data_types": ["trades"],
        }
        ids.append(client.post("/api/sessions", json=body).json()["id"])
        if i < 9:
            client.post(f"/api/sessions/{ids[-1]}/stop", params={"wait": "true"})
    client.post(
        "/api/sessions", json={"kind": "collect", "symbols": ["OTHER_USDT"], "duration": "1s"}
    )
    page = watched.page
    page.goto(server.url + "/")
    _wait_live(page)

    # Keyboard only: type a symbol in the filter and press Enter.
    page.locator("#f-symbol").focus()
    page.keyboard.type("page_usdt")
    page.keyboard.press("Enter")
    page.locator("#f-limit").select_option("10")
    rows = page.locator("#sessions tr[data-id]")
    _expect_ids(rows, ids[::-1][:10])
    assert "symbol=PAGE_USDT" in page.url and "limit=10" in page.url
    page.get_by_role("button", name="Next →").click()
    _expect_ids(rows, ids[::-1][10:])
    expect(page.get_by_role("button", name="Next →")).to_be_disabled()
    page.get_by_role("button", name="← Previous").click()
    expect(rows).to_have_count(10)

    page.locator("#f-order").select_option("oldest")
    expect(rows.first).to_have_attribute("data-id", ids[0])
    page.locator("#f-status").select_option("running")
    _expect_ids(rows, sorted(ids[9:], key=ids.index))  # oldest first

    # A stop from the list: the row changes live, its button goes.
    target = page.locator(f"#sessions tr[data-id='{ids[9]}']")
    target.get_by_role("button", name=re.compile("stop session")).click()
    expect(target).to_contain_text("stopped")
    expect(target.get_by_role("button")).to_have_count(0)
    for sid in ids[10:]:
        client.post(f"/api/sessions/{sid}/stop", params={"wait": "true"})
    watched.assert_clean()


def test_api_errors_are_shown_as_their_message(
    server: ServerProcess, client: httpx.Client, watched: Watched
) -> None:
    page = watched.page
    page.goto(server.url + "/")
    _wait_live(page)
    body = {
        "kind": "collect",
        "exchange": "sim",
        "symbols": ["not a symbol!"],
        "data_types": ["trades", "orderbook"],
        "duration": None,
        "rate_per_s": 20,
        "book_depth": 3,
    }
    refused = client.post("/api/sessions", json=body)
    assert refused.status_code == 422
    form = page.locator("#start")
    form.get_by_label("Symbols").fill("not a symbol!")
    form.get_by_role("button", name="Start collecting").click()
    message = page.locator("#message")
    expect(message).to_have_text(f"start failed: {refused.json()['error']['message']} (HTTP 422)")
    expect(message).to_have_attribute("role", "alert")
    assert watched.bad_responses == [f"422 POST {server.url}/api/sessions"]

    page.goto(server.url + "/ui/sessions/no-such-session")
    expect(page.locator("#message")).to_have_text("no session has the id no-such-session")


def test_readable_on_a_phone_and_at_1280_px(
    server: ServerProcess, client: httpx.Client, browser: Any
) -> None:
    sid = start_collect(client, duration="1s")["id"]
    wait_for(client, sid, lambda s: s["status"] == "completed", what="the 1 s session to end")
    one = _backtest(client, sid, {"half_spread_bps": 5})["id"]
    two = _backtest(client, sid, {"half_spread_bps": 10})["id"]
    pages = {
        "/": "#sessions tr[data-id]",
        f"/ui/sessions/{sid}": "#chart canvas",
        f"/ui/sessions/{one}": "#equity canvas",
        f"/ui/compare?ids={one},{two}": "#compare-chart canvas",
    }
    for width, height in ((390, 844), (1280, 800)):
        context = browser.new_context(viewport={"width": width, "height": height})
        try:
            w = _watch(context.new_page())
            for path, drawn in pages.items():
                w.page.goto(server.url + path)
                expect(w.page.locator("h1")).to_be_visible()
                expect(w.page.locator(drawn).first).to_be_visible()
                w.settle()
                overflow = w.page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, f"{path} scrolls sideways at {width} px"
            w.assert_clean()
        finally:
            context.close()


def test_a_dropped_push_channel_falls_back_to_polling_and_back(
    server: ServerProcess, client: httpx.Client, watched: Watched
) -> None:
    page = watched.page
    page.goto(server.url + "/")
    _wait_live(page)
    # The channel drops (the server restarts) and cannot come back for now.
    page.route("**/api/sessions/stream", lambda route: route.abort())
    server.stop()
    note = page.locator("#updated")
    expect(note).to_have_attribute("data-live", "no")
    expect(note).to_contain_text("polling every 2 s")
    server.start()
    polled = len(watched.list_requests)
    sid = client.post(
        "/api/sessions", json={"kind": "collect", "symbols": ["POLL_USDT"], "duration": "2s"}
    ).json()["id"]
    expect(page.locator(f"#sessions tr[data-id='{sid}']")).to_be_visible()  # found by polling
    assert len(watched.list_requests) > polled
    # The channel is back: live again, and the polling stops.
    page.unroute("**/api/sessions/stream")
    _wait_live(page)
    settled = len(watched.list_requests)
    client.post(f"/api/sessions/{sid}/stop", params={"wait": "true"})
    expect(page.locator(f"#sessions tr[data-id='{sid}']")).not_to_contain_text("running")
    assert len(watched.list_requests) == settled
    assert all(r.startswith(("5", "4")) is False for r in watched.bad_responses)


def test_zooming_the_chart_loads_finer_buckets_from_the_server(
    server: ServerProcess, client: httpx.Client, watched: Watched
) -> None:
    sid = start_collect(client, symbols=["ZOOM_USDT"], rate_per_s=300, duration="3s")["id"]
    wait_for(client, sid, lambda s: s["status"] == "completed", what="the 3 s session to end")
    overview = client.get(f"/api/sessions/{sid}/chart").json()
    page = watched.page
    details: list[Any] = []

    def on_response(r: Any) -> None:
        # kept, not read here: a listener that reads the body blocks in its own greenlet
        # while the test goes on, so the "zoomed" text could be seen before it appended
        if "/chart?" in r.url and "start=" in r.url and r.status == 200:
            details.append(r)

    page.on("response", on_response)
    page.goto(f"{server.url}/ui/sessions/{sid}")
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-points", str(len(overview["buckets"])))
    box = chart.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(12):
        page.mouse.wheel(0, -400)
    expect(page.locator("#chart-info")).to_contain_text("zoomed")
    # the page shows "zoomed" once a detail response is in: the browser reported that
    # response (received before the page read its body) before this text could appear
    assert details, "zooming asked the server for nothing"
    finer = details[-1].json()
    assert finer["width_us"] < overview["width_us"]
    assert finer["buckets"] and finer["trades"] < overview["trades"]
    page.get_by_role("button", name="Whole session").click()
    expect(page.locator("#chart-info")).not_to_contain_text("zoomed")
    expect(chart).to_have_attribute("data-points", str(len(overview["buckets"])))
    watched.assert_clean()


# --------------------------------------------------------------------------- backtest views


def _recording(client: httpx.Client, symbol: str, rate: int = 300) -> dict[str, Any]:
    """A finished 2 s recording of one symbol (trades and order books)."""
    sid = start_collect(client, symbols=[symbol], rate_per_s=rate, duration="2s")["id"]
    return wait_for(client, sid, lambda s: s["status"] == "completed", what="the recording")


def _backtest(client: httpx.Client, source: str, params: dict[str, Any]) -> dict[str, Any]:
    body = {"kind": "backtest", "source_session": source, "strategy": "market_maker"}
    created = client.post("/api/sessions", json={**body, "params": params})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    return wait_for(client, sid, lambda s: s["status"] == "completed", what="the backtest")


def _rows(client: httpx.Client, sid: str, table: str) -> list[dict[str, Any]]:
    page = client.get(f"/api/sessions/{sid}/{table}", params={"limit": 10_000}).json()
    assert page["next_cursor"] is None, "more rows than one page: the test expects fewer"
    rows: list[dict[str, Any]] = page["rows"]
    return rows


def _iso(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).isoformat()


def test_a_backtest_started_from_the_form_shows_its_equity_fills_and_results(
    server: ServerProcess, client: httpx.Client, watched: Watched
) -> None:
    page = watched.page
    page.goto(server.url + "/")
    _wait_live(page)
    form = page.locator("#start")
    form.get_by_label("Kind").select_option("backtest")
    # A recording that ends while the form is open becomes a source to choose.
    source = _recording(client, "BACK_USDT")
    expect(page.locator(f"#s-source option[value='{source['id']}']")).to_have_count(1)
    page.locator("#s-source").select_option(source["id"])
    page.locator("#s-strategy").select_option("market_maker")

    # Its parameter fields are generated from the strategy's schema, with the defaults.
    strategies = client.get("/api/strategies").json()["strategies"]
    schema = next(s for s in strategies if s["name"] == "market_maker")["params_schema"]
    defaults = {name: p["default"] for name, p in schema["properties"].items()}
    for name, value in defaults.items():
        field = page.locator(f"#p-{name}")
        expect(field).to_be_visible()
        assert float(field.input_value()) == value, name

    # A value the API refuses is shown as the API's own message.
    page.locator("#p-half_spread_bps").fill("-1")
    body = {
        "kind": "backtest",
        "source_session": source["id"],
        "strategy": "market_maker",
        "params": {**defaults, "half_spread_bps": -1},
        "speed": 0,
    }
    refused = client.post("/api/sessions", json=body)
    assert refused.status_code == 422
    form.get_by_role("button", name="Start backtest").click()
    message = page.locator("#message")
    expect(message).to_have_text(f"start failed: {refused.json()['error']['message']} (HTTP 422)")

    page.locator("#p-half_spread_bps").fill("4")
    form.get_by_role("button", name="Start backtest").click()
    expect(message).to_contain_text("started session")
    bid = message.inner_text().split()[-1]
    run = wait_for(client, bid, lambda s: s["status"] == "completed", what="the backtest")
    assert run["config"]["strategy_run"]["params"]["half_spread_bps"] == 4

    watched.settle()  # leave no request of this page open behind
    page.goto(f"{server.url}/ui/sessions/{bid}")
    expect(page.locator("#facts dd[data-fact='status']")).to_have_text("completed")
    expect(page.locator("#facts dd[data-fact='progress']")).to_have_text(
        f"100.0 % of {run['stats']['ticks_total']:,} ticks"
    )
    results = client.get(f"/api/sessions/{bid}/results").json()
    equity = _rows(client, bid, "equity")
    fills = _rows(client, bid, "fills")
    assert results["fills"] == len(fills) > 0 and results["equity"] == len(equity) > 1
    # The equity curve: every row the server has (rows at one instant are one point).
    curve = page.locator("#equity")
    expect(curve.locator("canvas").first).to_be_visible()
    expect(curve).to_have_attribute("data-rows", str(len(equity)))
    expect(curve).to_have_attribute("data-points", str(len({r["ts_us"] for r in equity})))
    # The fills as markers on the price of the replayed recording, drawn from it.
    chart = page.locator("#chart")
    source_chart = client.get(f"/api/sessions/{source['id']}/chart", params={"points": 600}).json()
    expect(chart).to_have_attribute("data-points", str(len(source_chart["buckets"])))
    expect(chart).to_have_attribute("data-fills", str(len(fills)))
    # The summary metrics, as the results route has them.
    summary = results["summary"]
    expect(page.locator("#metrics dd[data-metric='trade_count']")).to_have_text(
        f"{summary['trade_count']:,}"
    )
    expect(page.locator("#metrics dd[data-metric='fills']")).to_have_text(f"{len(fills):,}")
    # Orders and fills tables, cursor-paged (20 a page).
    orders = _rows(client, bid, "orders")
    assert len(orders) > 20, "the run should place more than a page of orders"
    table = page.locator("#orders-table tbody tr")
    expect(table).to_have_count(20)
    expect(table.first.locator("td").first).to_have_text(f"{orders[0]['order_id']:,}")
    orders_section = page.locator("section[aria-labelledby='orders-h']")
    orders_section.get_by_role("button", name="Next →").click()
    expect(table.first.locator("td").first).to_have_text(f"{orders[20]['order_id']:,}")
    expect(page.locator("#fills-table tbody tr")).to_have_count(min(20, len(fills)))
    # Gaps from the recording's quality report; export of the replayed recording.
    quality = client.get(f"/api/sessions/{source['id']}/quality").json()
    gaps = sum(len(s["gap_rows"]) for s in quality["streams"])
    expect(page.locator("#gaps")).to_have_attribute("data-gaps", str(gaps))
    expect(chart).to_have_attribute("data-gaps", str(gaps))
    href = page.locator("#export a[data-export='trades.csv']").get_attribute("href")
    assert href is not None and source["id"] in href
    lines = client.get(href).text.splitlines()
    assert len(lines) == source["stats"]["trades"] + 1
    assert page.locator("#export a[data-export='orderbook.parquet']").count() == 1
    assert watched.bad_responses == [f"422 POST {server.url}/api/sessions"]
    assert watched.failed_requests == []
    # The browser itself logs the refused request; the page logged nothing else.
    assert [e for e in watched.console_errors if "status of 422" not in e] == []
    assert len(watched.console_errors) == 1


def test_a_paper_session_started_from_the_form_shows_its_results(
    server: ServerProcess, client: httpx.Client, watched: Watched
) -> None:
    page = watched.page
    page.goto(server.url + "/")
    _wait_live(page)
    form = page.locator("#start")
    form.get_by_label("Kind").select_option("paper")
    form.get_by_label("Symbols").fill("PAPER_USDT")
    form.get_by_label("Duration").fill("2s")
    form.get_by_label("Trades/s per symbol").fill("300")
    page.locator("#s-strategy").select_option("market_maker")
    form.get_by_role("button", name="Start paper trading").click()
    message = page.locator("#message")
    expect(message).to_contain_text("started session")
    pid = message.inner_text().split()[-1]
    watched.settle()  # leave no request of this page open behind
    page.goto(f"{server.url}/ui/sessions/{pid}")
    expect(page.locator("#facts dd[data-fact='kind']")).to_have_text("paper")
    # Its 2 s run ends by itself; the page sees it through the push channel.
    expect(page.locator("#facts dd[data-fact='status']")).to_have_text("completed", timeout=30_000)
    results = client.get(f"/api/sessions/{pid}/results").json()
    expect(page.locator("#equity")).to_have_attribute("data-rows", str(results["equity"]))
    expect(page.locator("#chart")).to_have_attribute("data-fills", str(results["fills"]))
    expect(page.locator("#metrics dd[data-metric='orders']")).to_have_text(f"{results['orders']:,}")
    watched.assert_clean()


def test_compare_two_backtests_of_one_recording(
    server: ServerProcess, client: httpx.Client, watched: Watched
) -> None:
    source = _recording(client, "CMP_USDT")["id"]
    a = _backtest(client, source, {"half_spread_bps": 3})["id"]
    b = _backtest(client, source, {"half_spread_bps": 30})["id"]
    page = watched.page
    page.goto(f"{server.url}/ui/sessions/{a}")
    # Only backtests of the same recording are offered.
    offered = page.locator("#compare-with input[data-compare]")
    expect(offered).to_have_count(1)
    expect(offered).to_have_attribute("data-compare", b)
    offered.check()
    watched.settle()  # leave no request of this page open behind
    page.locator("#compare-link").click()
    page.wait_for_url(f"**/ui/compare?ids={a},{b}")
    shared = page.url

    def check(p: Any) -> None:
        expect(p.locator("#compare-table thead th[data-id]")).to_have_count(2)
        for i, sid in enumerate((a, b)):
            results = client.get(f"/api/sessions/{sid}/results").json()
            row = p.locator("#compare-table tr[data-metric='trade_count'] td")
            expect(row.nth(i)).to_have_text(f"{results['summary']['trade_count']:,}")
            fills = p.locator("#compare-table tr[data-metric='fills'] td")
            expect(fills.nth(i)).to_have_text(f"{results['fills']:,}")
            legend = p.locator(f"#compare-legend li[data-id='{sid}']")
            expect(legend).to_have_attribute("data-rows", str(results["equity"]))
        expect(p.locator("#compare-chart")).to_have_attribute("data-series", "2")
        expect(p.locator("#compare-chart canvas").first).to_be_visible()

    check(page)
    params = page.locator("#compare-table tr[data-metric='params'] td")
    expect(params.nth(0)).to_contain_text('"half_spread_bps":3')
    expect(params.nth(1)).to_contain_text('"half_spread_bps":30')
    # The URL is the view: opened afresh, it shows the same.
    watched.settle()  # leave no request of this page open behind
    page.goto("about:blank")
    page.goto(shared)
    check(page)
    # One backtest is nothing to compare: the page says how to name more.
    watched.settle()
    page.goto(f"{server.url}/ui/compare?ids={a}")
    expect(page.locator("#message")).to_have_text(
        "name two or more backtests to compare: /ui/compare?ids=<id>,<id>"
    )
    watched.assert_clean()


def test_the_chart_cursor_moves_with_the_keyboard_and_the_book_follows(
    server: ServerProcess, client: httpx.Client, watched: Watched
) -> None:
    sid = _recording(client, "KEYS_USDT", rate=100)["id"]
    buckets = client.get(f"/api/sessions/{sid}/chart", params={"points": 600}).json()["buckets"]
    assert len(buckets) > 14
    page = watched.page
    page.goto(f"{server.url}/ui/sessions/{sid}")
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-points", str(len(buckets)))
    expect(chart).to_have_attribute("aria-label", re.compile("arrow keys move the cursor"))
    # Reached with Tab from the control before it.
    page.get_by_role("button", name="Whole session").focus()
    page.keyboard.press("Tab")
    expect(chart).to_be_focused()

    def at(index: int) -> None:
        t_us = buckets[index]["t_us"]
        expect(chart).to_have_attribute("data-cursor", str(t_us))
        n = index if index >= 0 else len(buckets) + index
        expect(page.locator("#cursor-info")).to_contain_text(f"point {n + 1:,} of {len(buckets):,}")
        book = client.get(
            f"/api/sessions/{sid}/orderbook",
            params={"symbol": "KEYS_USDT", "start": _iso(t_us), "limit": 1},
        ).json()["orderbook"][0]
        expect(page.locator("#book-info")).to_have_attribute("data-at", book["ts"])

    page.keyboard.press("End")
    at(-1)
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    at(-4)
    page.keyboard.press("Shift+ArrowLeft")
    at(-14)
    page.keyboard.press("Home")
    at(0)
    page.keyboard.press("ArrowRight")
    at(1)
    watched.assert_clean()


def test_gaps_from_the_quality_report_are_marked_on_the_chart(
    browser: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A recording from a local exchange that speaks Binance's protocol and skips seven
    trades: its page, and the page of a backtest replaying it, mark that gap."""
    sym = "BTCUSDT"
    with (
        feeds.FakeInThread(FakeBinance()) as fx,
        running_server(f"sqlite:///{tmp_path}/gaps.db", tmp_path, env=feeds._env(fx.fake)) as srv,
        httpx.Client(base_url=srv.url, timeout=30.0) as c,
    ):
        fake: FakeBinance = fx.fake  # type: ignore[assignment]
        sid = feeds._create(c, "binance", sym, data_types=["trades"])
        fx.call(fake.wait_subscribed((sym,), ("trades",)))
        fx.call(fake.send_trades(sym, 40))
        fx.do(lambda: fake.skip_trades(sym, 7))  # never sent: the trade ids jump by 7
        fx.call(fake.send_trades(sym, 40))
        feeds._until(lambda: len(feeds._rows(c, sid, "trades")) == 80, "80 trades stored")
        feeds._stop(c, sid)
        streams = c.get(f"/api/sessions/{sid}/quality").json()["streams"]
        gaps = [g for s in streams for g in s["gap_rows"]]
        assert [(g["cause"], g["lost"]) for g in gaps] == [("sequence_break", 7)]
        bid = _backtest(c, sid, {})["id"]

        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        w = _watch(page)
        page.set_default_timeout(UPDATE_TIMEOUT_MS)
        try:
            for path in (f"/ui/sessions/{sid}", f"/ui/sessions/{bid}"):
                w.settle()  # the previous page's requests answered before leaving it
                page.goto(srv.url + path)
                expect(page.locator("#chart")).to_have_attribute("data-gaps", "1")
                expect(page.locator("#gaps")).to_have_attribute("data-gaps", "1")
                row = page.locator("#gaps tbody tr")
                expect(row).to_have_count(1)
                expect(row).to_contain_text("sequence_break")
                expect(row.locator("td").nth(6)).to_have_text("7")
            w.assert_clean()
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            context.close()
