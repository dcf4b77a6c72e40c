"""The shutdown grace is a setting: ``TICKTAPE_SHUTDOWN_GRACE_S`` (default
``SHUTDOWN_TIMEOUT_S``) is how long a SIGTERMed server's sessions get to stop or be
handed over before their runners are cancelled. An instance with many sessions on a
busy store needs more than the default (docs/operations.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run
from ticktape.api import create_app
from ticktape.config import SHUTDOWN_TIMEOUT_S, Settings
from ticktape.runtime.supervisor import Supervisor


def test_the_grace_is_read_from_its_variable_and_defaults_to_the_constant() -> None:
    assert Settings.from_env({}).shutdown_grace_s == SHUTDOWN_TIMEOUT_S
    assert Settings.from_env({"TICKTAPE_SHUTDOWN_GRACE_S": "60"}).shutdown_grace_s == 60.0


@pytest.mark.parametrize("raw", ["0", "-5"])
def test_a_grace_that_is_not_positive_is_refused(raw: str) -> None:
    with pytest.raises(SystemExit, match="TICKTAPE_SHUTDOWN_GRACE_S must be greater than zero"):
        Settings.from_env({"TICKTAPE_SHUTDOWN_GRACE_S": raw})


def test_the_server_shuts_its_supervisor_down_within_the_grace_set(
    tmp_path: Path, run: Run[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    graces: list[float] = []
    shutdown = Supervisor.shutdown

    async def recorded(self: Supervisor, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        graces.append(timeout_s)
        await shutdown(self, timeout_s)

    monkeypatch.setattr(Supervisor, "shutdown", recorded)
    settings = Settings.from_env(
        {"TICKTAPE_STORE": f"sqlite:///{tmp_path}/grace.db", "TICKTAPE_SHUTDOWN_GRACE_S": "42.5"}
    )
    app = create_app(settings)

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            pass

    run(scenario())
    assert graces == [42.5]
