"""Idempotency keys (Stripe's semantics) and validation that bounds every number.

The property test draws whole create requests — every field of the request model,
in and around its bounds — and checks that whatever validation accepts can run:
the simulated feed is built from it and generates blocks, the pacing arithmetic
is finite, and the session renders as JSON.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.conftest_api import ApiHarness, Run, make_harness
from ticktape.api.models import CreateSessionRequest, session_out
from ticktape.config import IDEMPOTENCY_KEY_TTL_S
from ticktape.domain import MAX_SIM_RATE_PER_S, Session, SessionStatus, new_session_id, utcnow
from ticktape.errors import TicktapeError
from ticktape.feeds.sim import SimExchange
from ticktape.store.base import SessionQuery

BODY = {"kind": "collect", "symbols": ["BTC_USDT"], "rate_per_s": 10}


@pytest.fixture
def api(run: Run[Any]) -> Iterator[ApiHarness]:
    harness = make_harness(run)
    yield harness
    harness.close()


def test_the_same_key_with_a_different_body_is_refused_naming_the_key(api: ApiHarness) -> None:
    first = api.http.post("/api/sessions", json=BODY, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    again = api.http.post(
        "/api/sessions", json={**BODY, "symbols": ["ETH_USDT"]}, headers={"Idempotency-Key": "k-1"}
    )
    assert again.status_code == 409, again.text
    error = again.json()["error"]
    assert error["code"] == "idempotency_key_reused" and "'k-1'" in error["message"]
    same = api.http.post("/api/sessions", json=BODY, headers={"Idempotency-Key": "k-1"})
    assert same.status_code == 201 and same.json()["id"] == first.json()["id"]
    assert api.run(api.store.sessions.count_sessions(SessionQuery())) == 1


def test_a_key_reused_after_its_session_was_deleted_follows_the_same_rules(
    api: ApiHarness,
) -> None:
    first = api.http.post("/api/sessions", json=BODY, headers={"Idempotency-Key": "k-del"})
    sid = first.json()["id"]
    api.http.post(f"/api/sessions/{sid}/stop?wait=true&timeout=5")
    assert api.http.delete(f"/api/sessions/{sid}").status_code == 200
    other = api.http.post(
        "/api/sessions", json={**BODY, "seed": 7}, headers={"Idempotency-Key": "k-del"}
    )
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    same = api.http.post("/api/sessions", json=BODY, headers={"Idempotency-Key": "k-del"})
    assert same.status_code == 201 and same.json()["id"] == sid  # the same answer, deleted


def test_a_key_older_than_its_lifetime_has_expired(api: ApiHarness) -> None:
    old = utcnow() - timedelta(seconds=IDEMPOTENCY_KEY_TTL_S + 60)
    spec = CreateSessionRequest.model_validate(BODY).spec()
    session = Session(
        id=new_session_id(),
        kind=spec.kind,
        status=SessionStatus.PENDING,
        symbols=spec.symbols,
        exchange=spec.exchange,
        data_types=spec.data_types,
        config=spec.config,
        created_at=old,
        idempotency_key="k-old",
    )
    api.run(api.store.sessions.create_session(session, actor="t"))
    response = api.http.post("/api/sessions", json=BODY, headers={"Idempotency-Key": "k-old"})
    assert response.status_code == 422, response.text
    assert "expired" in response.json()["error"]["message"]


@pytest.mark.parametrize("rate", [1e-310, 5e-324, 1e-4, -1.0, MAX_SIM_RATE_PER_S * 1.0001])
def test_rates_the_feed_cannot_run_are_refused(api: ApiHarness, rate: float) -> None:
    response = api.http.post("/api/sessions", json={**BODY, "rate_per_s": rate})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "rate_per_s"


def test_a_huge_json_number_is_refused_cleanly(api: ApiHarness) -> None:
    for raw in ('{"kind":"collect","symbols":["BTC_USDT"],"rate_per_s":1e400}',
                '{"kind":"collect","symbols":["BTC_USDT"],"seed":' + "9" * 5000 + "}",
                '{"kind":"collect","symbols":["BTC_USDT"],"book_depth":1e308}'):  # fmt: skip
        response = api.http.post(
            "/api/sessions", content=raw, headers={"Content-Type": "application/json"}
        )
        assert 400 <= response.status_code < 500, response.text
        assert len(response.text) < 600


# --------------------------------------------------------------------------- property

_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 0.001, 0.0009999, 1e-310, 1_000_000, 1_000_001, 2**63, 2**63 - 1]),
)
_durations = st.one_of(
    st.none(),
    st.sampled_from(["1s", "0.000001s", "30d", "31d", "720h", "0s", "1e3s", "", " 5 m "]),
    st.builds(lambda n, u: f"{n}{u}", st.floats(0, 1e9).map(lambda f: f"{f:.6f}"),
              st.sampled_from("smhd")),
)  # fmt: skip
_requests = st.fixed_dictionaries(
    {"kind": st.just("collect"), "symbols": st.just(["BTC_USDT", "ETH_USDT"])},
    optional={
        "rate_per_s": _numbers,
        "book_depth": _numbers,
        "seed": _numbers,
        "book_every": _numbers,
        "duration": _durations,
        "data_types": st.sampled_from([["trades"], ["orderbook"], ["trades", "orderbook"]]),
        "on_owner_loss": st.sampled_from(["fail", "resume"]),
    },
)


@settings(max_examples=300)
@given(_requests)
def test_anything_validation_accepts_runs_without_an_exception(body: dict[str, Any]) -> None:
    try:
        spec = CreateSessionRequest.model_validate(body).spec()
    except (TicktapeError, ValueError):
        return  # refused with a clear error: the API answers 4xx
    cfg = spec.config
    feed = SimExchange(
        "s",
        spec.symbols,
        data_types=spec.data_types,
        depth=cfg.book_depth,
        seed=cfg.seed,
        rate_per_s=cfg.rate_per_s,
        book_every=cfg.book_every,
    )
    for _ in range(2):
        for batch in feed.next_block():
            assert len(batch.ts_us) > 0 and int(batch.ts_us.max()) < 2**62
    if cfg.rate_per_s > 0:  # the pacing the feed waits on is a finite time
        assert math.isfinite(feed.block_events / cfg.rate_per_s)
    if cfg.duration_s is not None:
        assert math.isfinite(cfg.duration_s) and utcnow() + timedelta(seconds=cfg.duration_s)
    session = Session(
        id="s", kind=spec.kind, status=SessionStatus.PENDING, symbols=spec.symbols,
        exchange=spec.exchange, data_types=spec.data_types, config=cfg, created_at=utcnow(),
    )  # fmt: skip
    session_out(replace(session, status=SessionStatus.RUNNING)).model_dump_json()


def test_the_feed_paces_the_slowest_rate_without_overflow(run: Run[Any]) -> None:
    feed = SimExchange("s", ("BTC_USDT",), rate_per_s=0.001)

    async def first_wait() -> None:
        stop = asyncio.Event()
        blocks = feed.blocks(stop)
        task = asyncio.ensure_future(blocks.__anext__())
        await asyncio.sleep(0)
        stop.set()  # the feed waits ~1000 s for its first block: a stop ends the wait
        with pytest.raises(StopAsyncIteration):
            await task

    run(first_wait())
