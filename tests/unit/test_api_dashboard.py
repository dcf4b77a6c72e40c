"""The routes the dashboard draws from (chart buckets, exchanges, list order) and how
``/`` and ``/ui/...`` serve the built dashboard, or say that it is not built."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ticktape.api import app as app_module
from ticktape.api.charts import EXCHANGE_CANDIDATES, WIDTHS_US, width_for

from .conftest_api import ApiHarness, Run, make_harness
from .test_api import assert_error

T0_US = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z, on a 5 s edge


@pytest.fixture
def api(run: Run[Any]) -> Iterator[ApiHarness]:
    harness = make_harness(run)
    yield harness
    harness.close()


def _raw(http: httpx.Client, sid: str, symbol: str) -> list[dict[str, Any]]:
    got = http.get(f"/api/sessions/{sid}/trades", params={"symbol": symbol, "limit": 10_000})
    assert got.status_code == 200
    trades: list[dict[str, Any]] = got.json()["trades"]
    return trades


def test_chart_of_a_small_session_has_one_bucket_per_trade(api: ApiHarness) -> None:
    sid = api.create(symbols=["BTC_USDT", "ETH_USDT"])["id"]
    api.write_ticks(sid, "BTC_USDT", n=10, t0_us=T0_US)
    api.write_ticks(sid, "ETH_USDT", n=4, t0_us=T0_US)
    chart = api.http.get(f"/api/sessions/{sid}/chart").json()
    assert chart["symbol"] == "BTC_USDT"  # the session's first symbol by default
    assert chart["trades"] == 10 and len(chart["buckets"]) == 10
    assert [b["count"] for b in chart["buckets"]] == [1] * 10
    assert chart["width_us"] == 20_000  # 9 s in 600 points: the smallest width that fits
    assert chart["truncated"] is False
    times = [b["t_us"] for b in chart["buckets"]]
    assert times == [T0_US + i * 1_000_000 for i in range(10)]
    eth = api.http.get(f"/api/sessions/{sid}/chart", params={"symbol": "ETH_USDT"}).json()
    assert eth["trades"] == 4


def test_chart_downsamples_to_the_points_asked_and_agrees_with_the_trades(
    api: ApiHarness,
) -> None:
    sid = api.create()["id"]
    api.write_ticks(sid, n=10, t0_us=T0_US)
    chart = api.http.get(f"/api/sessions/{sid}/chart", params={"points": 3}).json()
    assert chart["width_us"] == 5_000_000  # 9 s in at most 3 buckets on round edges
    assert [(b["t_us"], b["count"]) for b in chart["buckets"]] == [
        (T0_US, 5),
        (T0_US + 5_000_000, 5),
    ]
    raw = _raw(api.http, sid, "BTC_USDT")
    assert sum(b["count"] for b in chart["buckets"]) == len(raw) == chart["trades"]
    assert sum(b["volume"] for b in chart["buckets"]) == pytest.approx(sum(t["qty"] for t in raw))


def test_chart_zoom_gives_finer_buckets_inside_the_range(api: ApiHarness) -> None:
    sid = api.create()["id"]
    api.write_ticks(sid, n=10, t0_us=T0_US)
    params = {"points": 4, "start": "2023-11-14T22:13:22Z", "end": "2023-11-14T22:13:25Z"}
    chart = api.http.get(f"/api/sessions/{sid}/chart", params=params).json()
    assert chart["width_us"] == 1_000_000
    assert [b["t_us"] for b in chart["buckets"]] == [T0_US + i * 1_000_000 for i in (2, 3, 4)]


def test_chart_of_a_session_without_trades_is_empty(api: ApiHarness) -> None:
    sid = api.create()["id"]
    chart = api.http.get(f"/api/sessions/{sid}/chart").json()
    assert chart["buckets"] == [] and chart["trades"] == 0 and chart["start"] is None


def test_chart_refuses_bad_requests_with_their_reason(api: ApiHarness) -> None:
    sid = api.create()["id"]
    http = api.http
    assert_error(http.get("/api/sessions/nope/chart"), 404)
    assert_error(
        http.get(f"/api/sessions/{sid}/chart", params={"symbol": "XRP_USDT"}),
        422,
        mentions="not one of the session's symbols",
    )
    bad_range = {"start": "2024-01-02T00:00:00Z", "end": "2024-01-01T00:00:00Z"}
    assert_error(http.get(f"/api/sessions/{sid}/chart", params=bad_range), 422)
    for points in (0, 5_001, "many"):
        assert_error(http.get(f"/api/sessions/{sid}/chart", params={"points": points}), 422)


def test_bucket_widths_divide_a_day_and_fit_the_points() -> None:
    assert all(86_400_000_000 % w == 0 for w in WIDTHS_US)
    assert list(WIDTHS_US) == sorted(WIDTHS_US)
    for span in (1, 999, 10**6, 7 * 10**9 + 3, 86_400 * 10**6):
        for points in (1, 10, 600):
            w = width_for(T0_US + 17, T0_US + 17 + span, points)
            assert (T0_US + 16 + span) // w - (T0_US + 17) // w + 1 <= points or w == WIDTHS_US[-1]


def test_exchanges_lists_exactly_what_a_create_accepts(api: ApiHarness) -> None:
    listed = api.http.get("/api/exchanges").json()["exchanges"]
    assert "sim" in listed
    for name in EXCHANGE_CANDIDATES:
        body = {"kind": "collect", "symbols": ["BTC_USDT"], "exchange": name}
        answer = api.http.post("/api/sessions", json=body)
        assert answer.status_code == (201 if name in listed else 422), (name, answer.text)


def test_list_order_oldest_pages_in_creation_order(api: ApiHarness) -> None:
    ids = [api.create()["id"] for _ in range(5)]
    http = api.http
    newest = http.get("/api/sessions").json()["sessions"]
    assert [s["id"] for s in newest] == ids[::-1]
    seen: list[str] = []
    params: dict[str, Any] = {"order": "oldest", "limit": 2}
    while True:
        page = http.get("/api/sessions", params=params).json()
        seen += [s["id"] for s in page["sessions"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == ids
    assert_error(http.get("/api/sessions", params={"order": "sideways"}), 422)


def test_dashboard_pages_are_served_from_the_build(
    run: Run[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>built</title>")
    (tmp_path / "assets" / "app.js").write_text("console.log('app')")
    monkeypatch.setattr(app_module, "dashboard_dir", lambda: tmp_path)
    harness = make_harness(run)
    try:
        for path in ("/", "/ui", "/ui/sessions/0123-abc", "/ui/compare?ids=a,b"):
            page = harness.http.get(path)
            assert page.status_code == 200 and "<title>built</title>" in page.text, path
        script = harness.http.get("/assets/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert harness.http.get("/assets/missing.js").status_code == 404
    finally:
        harness.close()


def test_a_missing_build_is_said_at_the_dashboard_url(
    run: Run[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "dashboard_dir", lambda: None)
    harness = make_harness(run)
    try:
        page = harness.http.get("/")
        assert page.status_code == 503
        assert "dashboard is not built" in page.text and "npm run build" in page.text
        assert harness.http.get("/api/sessions").status_code == 200  # the API still works
    finally:
        harness.close()
