"""``GET /api/strategies`` lists the registered strategies with their parameter schemas."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest_api import ApiHarness, Run, make_harness


@pytest.fixture
def api(run: Run[Any]) -> Iterator[ApiHarness]:
    harness = make_harness(run)
    yield harness
    harness.close()


def test_the_built_in_strategies_are_listed_with_their_schemas(api: ApiHarness) -> None:
    response: httpx.Response = api.http.get("/api/strategies")
    assert response.status_code == 200
    listed = {s["name"]: s for s in response.json()["strategies"]}
    assert set(listed) == {"market_maker", "pump_detector", "sma_cross"}
    assert listed["sma_cross"]["forms"] == ["columnar", "event"]
    schema = listed["sma_cross"]["params_schema"]
    assert {"fast", "slow", "size", "allow_short"} <= set(schema["properties"])
    assert listed["market_maker"]["origin"] == "builtin"
