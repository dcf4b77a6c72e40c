"""Small HTTP helpers shared by the acceptance tests."""

from __future__ import annotations

import time
from typing import Any

import httpx

from ticktape.domain import SessionStatus, is_valid_history

TERMINAL = {"stopped", "completed", "failed"}

# Acceptance tests start hundreds of sessions from one client in seconds; the limits
# have tests of their own (tests/unit/test_limits.py).
LIFTED_LIMITS = {
    "TICKTAPE_CREATE_RATE_PER_MIN": "1000000",
    "TICKTAPE_MAX_RUNNING_PER_INSTANCE": "100000",
    "TICKTAPE_MAX_RUNNING_PER_STORE": "100000",
}


def start_collect(client: httpx.Client, **body: Any) -> dict[str, Any]:
    payload = {"kind": "collect", "symbols": ["BTC_USDT", "ETH_USDT"], **body}
    response = client.post("/api/sessions", json=payload)
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


def wait_for(
    client: httpx.Client,
    session_id: str,
    predicate: Any,
    timeout_s: float = 30.0,
    what: str = "condition",
) -> dict[str, Any]:
    """Poll the session until ``predicate(session)``; the server owns the clock here."""
    deadline = time.monotonic() + timeout_s
    while True:
        session: dict[str, Any] = client.get(f"/api/sessions/{session_id}").json()
        if predicate(session):
            return session
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen {session}")
        time.sleep(0.05)


def wait_for_event(
    client: httpx.Client, session_id: str, reason: str, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """Poll the session's history until an event with ``reason`` is in it; the history."""
    deadline = time.monotonic() + timeout_s
    while True:
        events: list[dict[str, Any]] = client.get(f"/api/sessions/{session_id}/events").json()[
            "events"
        ]
        if any(e["reason"] == reason for e in events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"no {reason!r} event in {timeout_s}s: {events}")
        time.sleep(0.05)


def assert_valid_history(client: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = client.get(f"/api/sessions/{session_id}/events").json()["events"]
    transitions = [e for e in events if e["from_status"] != e["to_status"]]
    statuses = [SessionStatus(transitions[0]["to_status"])] + [
        SessionStatus(e["to_status"]) for e in transitions[1:]
    ]
    assert transitions[0]["from_status"] is None
    assert is_valid_history(statuses), statuses
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    return events


def stored_counts(client: httpx.Client, session_id: str) -> dict[str, int]:
    """Rows the data routes return for the session (paging through every row)."""
    counts = {}
    for kind in ("trades", "orderbook"):
        total, start = 0, None
        seen_last: set[Any] = set()
        while True:
            params: dict[str, Any] = {"limit": 10_000}
            if start is not None:
                params["start"] = start
            body = client.get(f"/api/sessions/{session_id}/{kind}", params=params).json()
            rows = body[kind]
            fresh = [r for r in rows if _key(kind, r) not in seen_last]
            total += len(fresh)
            if len(rows) < 10_000:
                break
            # continue from the last timestamp; rows at that exact time are de-duplicated
            start = rows[-1]["ts"]
            seen_last = {_key(kind, r) for r in rows if r["ts"] == start}
        counts[kind] = total
    return counts


def _key(kind: str, row: dict[str, Any]) -> tuple[Any, ...]:
    if kind == "trades":
        return (row["symbol"], row["trade_id"])
    return (row["symbol"], row["ts"])
