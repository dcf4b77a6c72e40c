"""The store's time bound bounds reads as well as writes: it is ``TICKTAPE_STORE_TIMEOUT_S``,
and its former name ``TICKTAPE_STORE_WRITE_TIMEOUT_S`` still works, with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ticktape.cli import main as cli_main
from ticktape.config import QUESTDB_LOG_TRANSACTION_MAX_S, STORE_TIMEOUT_S, Settings
from ticktape.store import open_store
from ticktape.store.questdb import QuestDBStore


def test_the_bound_is_read_from_its_name_and_defaults_to_the_constant() -> None:
    assert Settings.from_env({}).store_timeout_s == STORE_TIMEOUT_S
    settings = Settings.from_env({"TICKTAPE_STORE_TIMEOUT_S": "4.5"})
    assert (settings.store_timeout_s, settings.deprecated_env) == (4.5, ())


def test_the_former_name_is_read_when_the_new_one_is_unset_and_named_as_deprecated() -> None:
    settings = Settings.from_env({"TICKTAPE_STORE_WRITE_TIMEOUT_S": "7"})
    assert settings.store_timeout_s == 7.0
    assert settings.deprecated_env == ("TICKTAPE_STORE_WRITE_TIMEOUT_S",)


def test_the_new_name_wins_over_the_former_one() -> None:
    settings = Settings.from_env(
        {"TICKTAPE_STORE_TIMEOUT_S": "2", "TICKTAPE_STORE_WRITE_TIMEOUT_S": "9"}
    )
    assert (settings.store_timeout_s, settings.deprecated_env) == (2.0, ())


@pytest.mark.parametrize("name", ["TICKTAPE_STORE_TIMEOUT_S", "TICKTAPE_STORE_WRITE_TIMEOUT_S"])
def test_a_bound_of_zero_is_refused_by_either_name(name: str) -> None:
    with pytest.raises(SystemExit, match="TICKTAPE_STORE_TIMEOUT_S must be greater than zero"):
        Settings.from_env({name: "0"})


def test_a_malformed_value_names_the_variable_it_came_from() -> None:
    with pytest.raises(SystemExit, match="TICKTAPE_STORE_WRITE_TIMEOUT_S='soon' is not a number"):
        Settings.from_env({"TICKTAPE_STORE_WRITE_TIMEOUT_S": "soon"})


class _Stop(Exception):
    """Ends run_server where it would open the store."""


def test_serve_warns_at_start_up_about_the_former_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_store(settings: Settings, store_wait_s: float) -> None:
        raise _Stop

    monkeypatch.setattr(cli_main, "check_store", no_store)
    settings = Settings.from_env({"TICKTAPE_STORE_WRITE_TIMEOUT_S": "7"}, store_url="memory://")
    with caplog.at_level(logging.WARNING, logger="ticktape"), pytest.raises(_Stop):
        cli_main.run_server(settings)
    assert [r.getMessage() for r in caplog.records if r.name == "ticktape"] == [
        "TICKTAPE_STORE_WRITE_TIMEOUT_S is deprecated: set TICKTAPE_STORE_TIMEOUT_S instead"
    ]


@pytest.mark.parametrize("url", ["memory://", "sqlite:///{tmp}/t.db"])
def test_the_store_attribute_is_timeout_s_through_every_layer(url: str, tmp_path: Path) -> None:
    store = open_store(url.format(tmp=tmp_path), timeout_s=3.5)
    assert (store.timeout_s, store.inner.timeout_s) == (3.5, 3.5)  # the backend's own bound
    store.timeout_s = 2.0
    assert store.inner.timeout_s == 2.0


def test_the_log_transaction_bound_is_read_from_its_variable_and_reaches_the_store() -> None:
    assert Settings.from_env({}).questdb_log_transaction_max_s == QUESTDB_LOG_TRANSACTION_MAX_S
    settings = Settings.from_env({"TICKTAPE_QUESTDB_LOG_TRANSACTION_MAX_S": "2.5"})
    assert settings.questdb_log_transaction_max_s == 2.5
    store = open_store(
        "questdb://127.0.0.1:1", log_transaction_max_s=settings.questdb_log_transaction_max_s
    )
    assert isinstance(store.inner, QuestDBStore)
    assert store.inner.log_transaction_max_s == 2.5
    with pytest.raises(SystemExit, match="LOG_TRANSACTION_MAX_S must be greater than zero"):
        Settings.from_env({"TICKTAPE_QUESTDB_LOG_TRANSACTION_MAX_S": "0"})
