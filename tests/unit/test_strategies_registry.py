"""Strategies are registered with a parameter schema: unknown names and bad parameters are 422s."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from ticktape.errors import ValidationError
from ticktape.strategies import (
    ColumnarStrategy,
    InvalidParams,
    Strategy,
    StrategyRegistry,
    UnknownStrategy,
    default_registry,
)


def test_the_built_ins_are_listed_with_their_parameter_schemas() -> None:
    registry = default_registry(entry_points=False)
    described = {d["name"]: d for d in registry.describe()}
    assert set(described) == {"sma_cross", "market_maker", "pump_detector"}
    assert described["sma_cross"]["forms"] == ["columnar", "event"]
    assert described["market_maker"]["forms"] == ["event"]
    schema = described["pump_detector"]["params_schema"]
    assert isinstance(schema, dict)
    assert {"stop_loss_pct", "take_profit_pct", "trailing_pct"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_an_unknown_strategy_is_a_validation_error_naming_the_known_ones() -> None:
    with pytest.raises(UnknownStrategy) as err:
        default_registry(entry_points=False).create("nope", {})
    assert isinstance(err.value, ValidationError)  # the API answers 422
    assert err.value.field == "strategy"
    assert "market_maker" in str(err.value)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"fast": 50, "slow": 10}, "params"),
        ({"fast": "quick"}, "params.fast"),
        ({"size": -1}, "params.size"),
        ({"colour": "red"}, "params.colour"),
    ],
)
def test_bad_parameters_are_refused_with_the_field_that_is_wrong(
    params: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidParams) as err:
        default_registry(entry_points=False).create("sma_cross", params)
    assert err.value.field == field
    assert err.value.code == "invalid_params"


def test_defaults_and_forms() -> None:
    registry = default_registry(entry_points=False)
    assert isinstance(registry.create("sma_cross"), ColumnarStrategy)
    assert isinstance(registry.create("sma_cross", form="event"), Strategy)
    with pytest.raises(ValidationError, match="has no columnar form"):
        registry.create("market_maker", form="columnar")


def test_user_strategies_load_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "momentum.py").write_text(
        textwrap.dedent(
            """
            from pydantic import Field
            from ticktape.strategies import Strategy, StrategyParams

            class P(StrategyParams):
                lookback: int = Field(5, ge=1)

            class Momentum(Strategy):
                name = "momentum"
                description = "a user strategy"
                params_model = P
            """
        )
    )
    (tmp_path / "_helper.py").write_text("raise RuntimeError('never imported')\n")
    registry = default_registry(tmp_path, entry_points=False)
    assert "momentum" in registry.names()
    assert registry.get("momentum").origin == "directory:momentum.py"
    with pytest.raises(InvalidParams):
        registry.create("momentum", {"lookback": 0})


def test_a_broken_user_file_or_a_taken_name_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import nothing_by_this_name\n")
    with pytest.raises(ValidationError, match=r"broken\.py failed to load"):
        default_registry(tmp_path, entry_points=False)
    (tmp_path / "broken.py").unlink()
    (tmp_path / "clash.py").write_text(
        "from ticktape.strategies import Strategy\n"
        "class Clash(Strategy):\n    name = 'market_maker'\n"
    )
    with pytest.raises(ValidationError, match="already registered"):
        default_registry(tmp_path, entry_points=False)


def test_user_strategies_load_from_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real installed distribution: a dist-info with entry_points.txt on sys.path.
    (tmp_path / "acme_strats.py").write_text(
        "from ticktape.strategies import Strategy\n"
        "class Acme(Strategy):\n    name = 'acme'\n    description = 'from a package'\n"
    )
    info = tmp_path / "acme_strats-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-strats\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ticktape.strategies]\nacme = acme_strats:Acme\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = StrategyRegistry()
        assert registry.load_entry_points() == ["acme"]
        assert registry.get("acme").origin == "entry_point:acme"
    finally:
        sys.modules.pop("acme_strats", None)
