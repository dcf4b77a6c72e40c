"""``POST /api/sessions`` for backtests and the results routes, over the in-memory store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ticktape.domain import SessionStatus
from ticktape.store.base import StoredResults
from ticktape.testing import record_source, sim_blocks

from .conftest_api import OWNER, ApiHarness, Run, make_harness


@pytest.fixture
def api(run: Run[Any]) -> Iterator[ApiHarness]:
    harness = make_harness(run)
    yield harness
    harness.close()


@pytest.fixture
def source(api: ApiHarness) -> str:
    session = api.run(record_source(api.store, sim_blocks(500)))
    return session.id


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_a_backtest_is_created_from_its_source_and_strategy(api: ApiHarness, source: str) -> None:
    body = {
        "kind": "backtest",
        "source_session": source,
        "strategy": "sma_cross",
        "params": {"fast": 5, "slow": 20},
        "speed": 0,
        "seed": 3,
    }
    created = api.http.post("/api/sessions", json=body)
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["kind"] == "backtest" and session["status"] == "pending"
    assert session["symbols"] == ["BTC_USDT", "ETH_USDT"]  # the source's
    run = session["config"]["strategy_run"]
    assert run["strategy"] == "sma_cross" and run["params"] == {"fast": 5, "slow": 20}
    assert run["source_session"] == source and run["seed"] == 3
    assert "ticks_total" not in run
    recorded = api.run(api.store.sessions.get_session(source)).stats.records_collected
    assert recorded >= 500
    assert session["stats"]["ticks_total"] == recorded
    assert session["stats"]["progress"] == 0.0
    assert api.runtime.launched == [session["id"]]


def _stored_ticks(api: ApiHarness, source: str, lo: int, hi: int, symbols: Any) -> int:
    batches = api.run(api.store.ticks.read_window(source, lo, hi, symbols))
    return sum(len(b) for b in batches)


def test_a_narrowed_backtest_totals_the_ticks_it_will_replay(api: ApiHarness, source: str) -> None:
    span = api.run(api.store.ticks.span(source))
    assert span is not None
    first, last = span
    whole = _stored_ticks(api, source, first, last + 1, None)
    mid = first + (last - first) // 3
    end = first + 2 * (last - first) // 3
    cases: list[tuple[dict[str, Any], int, int, Any]] = [
        ({"symbols": ["ETH_USDT"]}, first, last + 1, ("ETH_USDT",)),
        ({"start": _iso(mid)}, mid, last + 1, None),
        ({"end": _iso(end)}, first, end, None),
        ({"symbols": ["BTC_USDT"], "start": _iso(mid), "end": _iso(end)}, mid, end, ("BTC_USDT",)),
    ]
    for change, lo, hi, symbols in cases:
        body = {"kind": "backtest", "source_session": source, "strategy": "sma_cross", **change}
        created = api.http.post("/api/sessions", json=body)
        assert created.status_code == 201, created.text
        stats = created.json()["stats"]
        expected = _stored_ticks(api, source, lo, hi, symbols)
        assert 0 < expected < whole, change  # really narrower than the source
        assert stats["ticks_total"] == expected, change
        assert stats["progress"] == 0.0
    # a range with no ticks: nothing to replay, no progress total
    after = {"kind": "backtest", "source_session": source, "strategy": "sma_cross"}
    created = api.http.post("/api/sessions", json=after | {"start": _iso(last + 1_000_000)})
    assert created.status_code == 201, created.text
    assert created.json()["stats"]["ticks_total"] is None


def _iso(us: int) -> str:
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return at.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("change", "field", "mentions"),
    [
        ({"strategy": "no_such"}, "strategy", "no_such"),
        ({"params": {"fast": 0}}, "fast", "fast"),
        ({"params": {"colour": 1}}, "colour", "colour"),
        ({"speed": -1}, "speed", "speed"),
        ({"source_session": "nope"}, "source_session", "'nope' not found"),
        ({"symbols": ["XRP_USDT"]}, "symbols", "XRP_USDT were not recorded"),
        ({"rate_per_s": 5.0}, "rate_per_s", "applies to collect sessions"),
        ({"on_owner_loss": "maybe"}, "on_owner_loss", "'fail' or 'resume'"),
    ],
)
def test_bad_backtest_requests_are_422_naming_the_field(
    api: ApiHarness, source: str, change: dict[str, Any], field: str, mentions: str
) -> None:
    body = {"kind": "backtest", "source_session": source, "strategy": "sma_cross", **change}
    error = _error(api.http.post("/api/sessions", json=body), 422)
    assert mentions in error["message"]
    assert field in (error.get("field") or "") or field in error["message"]
    assert api.runtime.launched == []


def test_strategy_fields_on_a_collect_request_are_422(api: ApiHarness) -> None:
    body = {"kind": "collect", "symbols": ["BTC_USDT"], "strategy": "sma_cross"}
    error = _error(api.http.post("/api/sessions", json=body), 422)
    assert error["field"] == "strategy" and "backtest" in error["message"]


def test_results_routes_serve_the_stored_results_paged(api: ApiHarness, source: str) -> None:
    body = {"kind": "backtest", "source_session": source, "strategy": "sma_cross"}
    session_id = api.http.post("/api/sessions", json=body).json()["id"]
    missing = _error(api.http.get(f"/api/sessions/{session_id}/results"), 404)
    assert missing["code"] == "results_not_found"
    assert api.http.get(f"/api/sessions/{session_id}/fills").json() == {
        "rows": [],
        "next_cursor": None,
    }
    session = api.run(api.store.sessions.get_session(session_id))
    api.run(
        api.store.sessions.transition(
            session_id,
            expected_version=session.version,
            to_status=SessionStatus.RUNNING,
            actor=OWNER,
            reason="started",
        )
    )
    orders = [json.dumps({"order_id": i, "price": 1.5}) for i in range(5)]
    results = StoredResults(
        orders=orders,
        fills=['{"fill_id":0}'],
        equity=['{"equity":1.0,"ts_us":0}'],
        summary='{"pnl": 2.5, "sharpe": null}',
        hash="abc",
        status="completed",
    )
    api.run(api.store.results.write(session_id, results, owner=OWNER))
    summary = api.http.get(f"/api/sessions/{session_id}/results").json()
    assert summary["hash"] == "abc" and summary["summary"] == {"pnl": 2.5, "sharpe": None}
    assert (summary["orders"], summary["fills"], summary["equity"]) == (5, 1, 1)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.http.get(f"/api/sessions/{session_id}/orders", params=params).json()
        seen.extend(page["rows"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [r["order_id"] for r in seen] == [0, 1, 2, 3, 4]
    bad = _error(api.http.get(f"/api/sessions/{session_id}/orders?cursor=x"), 422)
    assert bad["field"] == "cursor"
    unknown = _error(api.http.get("/api/sessions/nope/equity"), 404)
    assert unknown["code"] == "session_not_found"


def test_a_paper_session_is_created_with_its_strategy_and_recording(api: ApiHarness) -> None:
    body = {
        "kind": "paper",
        "symbols": ["BTC_USDT"],
        "strategy": "market_maker",
        "params": {"qty": 0.1},
        "duration": "10s",
        "rate_per_s": 50.0,
    }
    created = api.http.post("/api/sessions", json=body)
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["kind"] == "paper" and session["config"]["rate_per_s"] == 50.0
    assert session["config"]["strategy_run"]["strategy"] == "market_maker"
    assert session["stats"]["ticks_total"] is None  # a live feed has no total


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"strategy": "no_such"}, "strategy"),
        ({"source_session": "x"}, "source_session"),
        ({"speed": 2.0}, "speed"),
        ({"symbols": None}, "symbols"),
        ({"on_owner_loss": "resume"}, "on_owner_loss"),
        ({"params": {"qty": -1}}, "qty"),
    ],
)
def test_bad_paper_requests_are_422(api: ApiHarness, change: dict[str, Any], field: str) -> None:
    body = {"kind": "paper", "symbols": ["BTC_USDT"], "strategy": "market_maker", **change}
    body = {k: v for k, v in body.items() if v is not None}
    error = _error(api.http.post("/api/sessions", json=body), 422)
    assert field in (error.get("field") or "") or field in error["message"]
    assert api.runtime.launched == []
