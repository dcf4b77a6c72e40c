from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ticktape.testing import ServerProcess, running_server


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/ticktape.db"


@pytest.fixture
def server(store_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(
        store_url, tmp_path, env={"TICKTAPE_HEARTBEAT_S": "0.5", "TICKTAPE_LEASE_S": "3"}
    ) as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c
