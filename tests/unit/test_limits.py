"""Configured limits: each refuses with a clear 4xx/429 that names its setting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.conftest_api import BASE_URL, FakeRuntime, Run, SyncAsgiTransport
from ticktape import service as service_module
from ticktape.api import create_app
from ticktape.api.limits import CreateRateLimiter
from ticktape.config import Settings
from ticktape.domain import Reason, SessionStatus, validate_spec
from ticktape.errors import LimitExceeded
from ticktape.metrics import Metrics
from ticktape.runtime.budget import check_disk_budget
from ticktape.service import ACTIVE_COUNT_MAX_AGE_S, SessionService
from ticktape.store.memory import MemoryStore
from ticktape.store.sqlite import SqliteStore

BODY = {"kind": "collect", "symbols": ["BTC_USDT"]}
BASE = Settings(store_url="memory://", instance_name="limits", allowed_hosts=("ticktape.test",))


class Harness:
    def __init__(self, run: Run[Any], **overrides: Any) -> None:
        self.settings = replace(BASE, **overrides)
        self.store = MemoryStore()
        self.runtime = FakeRuntime(self.store)
        self.service = SessionService(self.store, self.runtime, self.settings, Metrics())
        self.app = create_app(self.settings, service=self.service)
        self.http = httpx.Client(transport=SyncAsgiTransport(self.app, run), base_url=BASE_URL)


@pytest.fixture
def harness(run: Run[Any]) -> Iterator[Any]:
    made: list[Harness] = []

    def make(**overrides: Any) -> Harness:
        made.append(Harness(run, **overrides))
        return made[-1]

    yield make
    for h in made:
        h.http.close()


def _refused(response: httpx.Response, status: int, setting: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert setting in error["message"], error
    return error


def test_symbols_per_session(harness: Any) -> None:
    h = harness(max_symbols_per_session=2)
    ok = h.http.post("/api/sessions", json={**BODY, "symbols": ["A_B", "C_D"]})
    assert ok.status_code == 201
    too_many = h.http.post("/api/sessions", json={**BODY, "symbols": ["A_B", "C_D", "E_F"]})
    assert _refused(too_many, 422, "TICKTAPE_MAX_SYMBOLS")["field"] == "symbols"


def test_running_sessions_per_instance(harness: Any) -> None:
    h = harness(max_running_per_instance=2)
    h.runtime.running = ["a", "b"]
    refused = h.http.post("/api/sessions", json=BODY)
    error = _refused(refused, 429, "TICKTAPE_MAX_RUNNING_PER_INSTANCE")
    assert error["code"] == "limit_exceeded" and "Retry-After" in refused.headers
    h.runtime.running = ["a"]
    assert h.http.post("/api/sessions", json=BODY).status_code == 201


def test_active_sessions_per_store(harness: Any) -> None:
    h = harness(max_running_per_store=2)
    for _ in range(2):
        assert h.http.post("/api/sessions", json=BODY).status_code == 201
    refused = h.http.post("/sessions/start", json={"session_type": "collect", "symbols": ["A_B"]})
    _refused(refused, 429, "TICKTAPE_MAX_RUNNING_PER_STORE")
    first = h.http.get("/api/sessions").json()["sessions"][0]["id"]
    h.http.post(f"/api/sessions/{first}/stop?wait=true&timeout=5")
    # Room again once the store is counted anew (at most every ACTIVE_COUNT_MAX_AGE_S).
    deadline = time.monotonic() + 5 * ACTIVE_COUNT_MAX_AGE_S
    while (code := h.http.post("/api/sessions", json=BODY).status_code) == 429:
        assert time.monotonic() < deadline
        time.sleep(0.05)  # waiting out the count's age: there is no event to await
    assert code == 201


SPEC = validate_spec(kind="collect", symbols=["BTC_USDT"])


class GatedCounts:
    """A service at a per-store limit of 3 over a memory store whose counts wait for
    ``gate`` (open at first), add ``extra`` (other instances' active sessions), are
    recorded in ``counts`` and set ``counted`` as each lands. Made inside the test's
    loop; with ``ACTIVE_COUNT_MAX_AGE_S`` 0 every count is stale."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        settings = replace(BASE, max_running_per_store=3)
        self.service = SessionService(self.store, FakeRuntime(self.store), settings, Metrics())
        self.gate = asyncio.Event()
        self.gate.set()
        self.counted = asyncio.Event()
        self.counts: list[int] = []
        self.extra = 0
        self.count = self.store.sessions.count_sessions
        self.store.sessions.count_sessions = self.gated  # type: ignore[method-assign]

    async def gated(self, query: Any) -> int:
        await self.gate.wait()
        self.counts.append(await self.count(query) + self.extra)
        self.counted.set()
        return self.counts[-1]


def test_a_create_does_not_wait_for_the_per_store_count_while_the_last_is_young(
    run: Run[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every count is stale here (max age 0): the first create waits for the count; the
    next ones start one recount at a time and answer from the last count, younger than
    ACTIVE_COUNT_WAIT_AGE_S, without waiting for it — and the limit holds by the
    recount's answer once it lands. With the wait age 0, a create waits again."""
    monkeypatch.setattr(service_module, "ACTIVE_COUNT_MAX_AGE_S", 0.0)

    async def scenario() -> None:
        g = GatedCounts()
        service, gate, counted, counts = g.service, g.gate, g.counted, g.counts
        await service.create(SPEC)  # no count yet: it waits for the first (0)
        assert counts == [0]
        gate.clear()  # counts now hang until the gate opens
        second = asyncio.ensure_future(service.create(SPEC))
        third = asyncio.ensure_future(service.create(SPEC))
        await asyncio.wait_for(asyncio.gather(second, third), 5)  # neither waited
        assert counts == [0]  # the one recount they started is still under way
        g.extra = 10  # other instances filled the store meanwhile
        counted.clear()
        gate.set()
        await counted.wait()
        assert counts[1] == 13  # the three created here and the others' ten
        counted.clear()
        with pytest.raises(LimitExceeded):  # the recount's answer, not a local guess
            await service.create(SPEC)
        await counted.wait()  # the recount that refused create started has landed
        # with no young count to answer from, a create waits for the count again
        monkeypatch.setattr(service_module, "ACTIVE_COUNT_WAIT_AGE_S", 0.0)
        g.extra = -10
        gate.clear()
        counted.clear()
        waiting = asyncio.ensure_future(service.create(SPEC))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiting.done()
        gate.set()
        await asyncio.wait_for(waiting, 5)
        assert counted.is_set()

    run(scenario())


def test_a_create_that_a_count_saw_is_not_added_to_it_again(
    run: Run[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count that lands while a create is being written may already have seen it: the
    create then does not add itself on top (at the limit, one session counted twice
    refused a create below it)."""
    monkeypatch.setattr(service_module, "ACTIVE_COUNT_MAX_AGE_S", 0.0)

    async def scenario() -> None:
        g = GatedCounts()
        store, service, gate, counted, counts = g.store, g.service, g.gate, g.counted, g.counts
        create = store.sessions.create_session

        async def committed_then_counted(*args: Any, **kwargs: Any) -> Any:
            stored = await create(*args, **kwargs)
            if not gate.is_set():  # the recount reads after this commit, and lands
                counted.clear()
                gate.set()
                await counted.wait()
            return stored

        store.sessions.create_session = committed_then_counted  # type: ignore[method-assign]
        await service.create(SPEC)  # waits for the first count (0), then adds itself
        gate.clear()  # the next create's recount hangs until its own commit
        await service.create(SPEC)
        assert counts == [0, 2]  # the recount saw both sessions
        third = await service.create(SPEC)  # 2 active of 3: allowed, not 3 (2 + 1)
        assert third.status is SessionStatus.PENDING
        with pytest.raises(LimitExceeded):
            await service.create(SPEC)

    run(scenario())


def test_session_creation_rate_per_client(harness: Any) -> None:
    h = harness(create_rate_per_min=3)
    codes = [h.http.post("/api/sessions", json=BODY).status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    refused = h.http.post("/api/sessions", json=BODY)
    _refused(refused, 429, "TICKTAPE_CREATE_RATE_PER_MIN")
    assert int(refused.headers["Retry-After"]) >= 1
    assert "ticktape_limit_refusals_total" in h.http.get("/metrics").text


def test_the_rate_limiter_refills_with_time() -> None:
    now = [0.0]
    limiter = CreateRateLimiter(60, clock=lambda: now[0])  # one a second, burst 60
    for _ in range(60):
        limiter.take("c")
    with pytest.raises(LimitExceeded) as caught:
        limiter.take("c")
    assert caught.value.retry_after_s == pytest.approx(1.0)
    limiter.take("other")  # per client
    now[0] = 1.0
    limiter.take("c")


def test_the_disk_budget_refuses_new_sessions_and_stops_running_ones(
    run: Run[Any], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/budget.db"
    settings = replace(BASE, store_url=url, disk_budget_mb=1.0)

    async def scenario() -> None:
        store = SqliteStore(url)
        await store.open()
        try:
            runtime = FakeRuntime(store)  # type: ignore[arg-type]
            service = SessionService(store, runtime, settings, Metrics())
            spec = validate_spec(kind="collect", symbols=["BTC_USDT"])
            running = await service.create(spec)
            runtime.running = [running.id]
            assert await check_disk_budget(store, service, 1.0) == 0  # under budget
            filler = tmp_path / "budget.db-wal"
            with filler.open("ab") as f:  # the WAL counts: grow it past the budget
                f.write(b"\0" * 1_100_000)
            with pytest.raises(LimitExceeded) as caught:
                await service.create(SPEC)
            assert caught.value.code == "disk_budget"
            assert "TICKTAPE_DISK_BUDGET_MB" in caught.value.message
            assert await check_disk_budget(store, service, 1.0) == 1
            stopped = await service.wait_terminal(running.id, 5)
            assert stopped.status is SessionStatus.STOPPED
            events = await store.sessions.list_events(running.id)
            assert any(e.reason == Reason.DISK_BUDGET for e in events)
        finally:
            await store.close()

    run(scenario())


def _refusals(h: Harness, limit: str) -> float:
    prefix = f'ticktape_limit_refusals_total{{limit="{limit}"}} '
    for line in h.http.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def test_refusals_on_the_original_routes_are_counted_like_ticktapes_own(harness: Any) -> None:
    h = harness(create_rate_per_min=1)
    start = {"session_type": "collect", "symbols": ["A_B"]}
    assert h.http.post("/sessions/start", json=start).status_code == 200
    refused = h.http.post("/sessions/start", json=start)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error_code"] == "limit_exceeded"
    assert _refusals(h, "TICKTAPE_CREATE_RATE_PER_MIN") == 1.0
    h2 = harness(max_running_per_store=1)
    assert h2.http.post("/api/sessions", json=BODY).status_code == 201
    refused = h2.http.post("/sessions/start", json=start)
    assert refused.status_code == 429, refused.text
    assert _refusals(h2, "TICKTAPE_MAX_RUNNING_PER_STORE") == 1.0


def test_a_disk_budget_on_a_store_it_cannot_measure_is_refused_at_start_up() -> None:
    env = {"TICKTAPE_DISK_BUDGET_MB": "100"}
    for url in ("questdb://127.0.0.1:8812?ilp=http://127.0.0.1:9000", "memory://"):
        with pytest.raises(SystemExit) as refused:
            Settings.from_env({**env, "TICKTAPE_STORE": url})
        assert "TICKTAPE_DISK_BUDGET_MB applies to the SQLite store only" in str(refused.value)
    settings = Settings.from_env({**env, "TICKTAPE_STORE": "sqlite:///./x.db"})
    assert settings.disk_budget_mb == 100
