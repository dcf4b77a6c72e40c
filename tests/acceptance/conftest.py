"""Acceptance fixtures: a real ``ticktape serve`` on each store backend users run.

Every test that uses ``server`` (or ``store_url``) runs on the embedded SQLite
store and on a real QuestDB (tables of its own, on the session's server).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.helpers import LIFTED_LIMITS
from tests.conftest import _drop_tables, isolated_questdb_url, questdb_available
from ticktape.testing import ServerProcess, running_server

ACCEPTANCE_ENV = {
    "TICKTAPE_HEARTBEAT_S": "0.5",
    "TICKTAPE_LEASE_S": "3",
    **LIFTED_LIMITS,
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        kinds = [pytest.param("sqlite", id="sqlite")]
        kinds.append(pytest.param("questdb", id="questdb", marks=[pytest.mark.questdb]))
        metafunc.parametrize("store_kind", kinds)


@pytest.fixture
def store_url(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if store_kind == "sqlite":
        return f"sqlite:///{tmp_path}/ticktape.db"
    if not questdb_available():
        pytest.skip("no QuestDB here (needs Java >= 17 and mvn)")
    url = isolated_questdb_url(request.getfixturevalue("questdb_url"))
    # after the server stops (finalizers run last-registered first): the server's heap
    # holds every table's metadata, and nine tables per test would exhaust it
    request.addfinalizer(lambda: _drop_tables(url))
    return url


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(store_url, tmp_path, env=ACCEPTANCE_ENV) as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the test item (``item.rep_call``), so that fixtures
    can tell in their teardown that the test failed (the dashboard tests' screenshots)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
