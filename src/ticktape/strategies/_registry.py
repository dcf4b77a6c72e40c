"""Registered strategies: built-ins, a configured directory, and entry points.

A strategy is a class (per-event :class:`Strategy` or :class:`ColumnarStrategy`)
with a ``name``, a ``description`` and a ``params_model``. One name may have both
forms (``sma_cross`` does), with the same parameter model. The API names a
strategy and passes parameters; :meth:`StrategyRegistry.create` validates them
against the declared model — an unknown name or a bad parameter is a 422 with the
field that is wrong — and never runs code that came over the wire.

User strategies are loaded by a server at start-up from ``*.py`` files of a
directory (files starting with ``_`` are skipped) or from the entry-point group
``ticktape.strategies`` (an entry point names a strategy class). A user strategy
may not take a name that is already registered.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pydantic

from ticktape.errors import ValidationError
from ticktape.strategies._contract import ColumnarStrategy, Strategy, StrategyParams
from ticktape.strategies._errors import InvalidParams, UnknownStrategy

ENTRY_POINT_GROUP = "ticktape.strategies"
Form = Literal["event", "columnar"]
StrategyClass = type[Strategy] | type[ColumnarStrategy]


@dataclass(frozen=True)
class StrategySpec:
    name: str
    description: str
    params_model: type[StrategyParams]
    event: type[Strategy] | None
    columnar: type[ColumnarStrategy] | None
    origin: str  # "builtin", "directory:<file>" or "entry_point:<name>"

    @property
    def forms(self) -> list[Form]:
        forms: list[Form] = []
        if self.columnar is not None:
            forms.append("columnar")
        if self.event is not None:
            forms.append("event")
        return forms

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "forms": self.forms,
            "origin": self.origin,
            "params_schema": self.params_model.model_json_schema(),
        }


class StrategyRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, StrategySpec] = {}

    def register(self, cls: StrategyClass, *, origin: str = "builtin") -> None:
        if not (inspect.isclass(cls) and issubclass(cls, Strategy | ColumnarStrategy)):
            raise ValidationError(f"{cls!r} ({origin}) is not a strategy class", field="strategy")
        name = cls.name
        if not name:
            raise ValidationError(f"strategy class {cls.__qualname__} has no name", field="name")
        old = self._specs.get(name)
        is_event = issubclass(cls, Strategy)
        if old is not None:
            taken = old.event if is_event else old.columnar
            if taken is not None or old.params_model is not cls.params_model:
                raise ValidationError(
                    f"strategy {name!r} from {origin} is already registered from {old.origin}",
                    field="strategy",
                )
        self._specs[name] = StrategySpec(
            name=name,
            description=cls.description or (old.description if old else ""),
            params_model=cls.params_model,
            event=cls if issubclass(cls, Strategy) else (old.event if old else None),
            columnar=cls if issubclass(cls, ColumnarStrategy) else (old.columnar if old else None),
            origin=old.origin if old else origin,
        )

    def names(self) -> list[str]:
        return sorted(self._specs)

    def get(self, name: str) -> StrategySpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownStrategy(name, self.names()) from None

    def describe(self) -> list[dict[str, object]]:
        return [self._specs[n].describe() for n in self.names()]

    def validate(self, name: str, params: Mapping[str, object] | None) -> StrategyParams:
        """The strategy's parameters, validated; raises a 422 error naming the bad field."""
        spec = self.get(name)
        try:
            return spec.params_model.model_validate(dict(params or {}))
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            field = f"params.{where}" if where else "params"
            raise InvalidParams(
                f"strategy {name!r}: {field}: {first['msg']}", field=field
            ) from None

    def create(
        self, name: str, params: Mapping[str, object] | None = None, form: Form | None = None
    ) -> Strategy | ColumnarStrategy:
        """A fresh instance; ``form`` None prefers the columnar form when there is one."""
        spec = self.get(name)
        checked = self.validate(name, params)
        if form is None:
            form = spec.forms[0]
        cls: StrategyClass | None = spec.columnar if form == "columnar" else spec.event
        if cls is None:
            raise ValidationError(
                f"strategy {name!r} has no {form} form (it has: {', '.join(spec.forms)})",
                field="form",
            )
        return cls(checked)

    def load_directory(self, directory: Path) -> list[str]:
        """Register every strategy class defined in ``directory/*.py``; their names."""
        if not directory.is_dir():
            raise ValidationError(f"strategies directory {directory} does not exist", field="dir")
        added: list[str] = []
        for path in sorted(directory.glob("*.py")):
            if path.name.startswith("_"):
                continue
            module_name = f"ticktape_user_strategies.{path.stem}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                continue
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                raise ValidationError(
                    f"strategy file {path} failed to load: {type(exc).__name__}: {exc}",
                    field="strategies_dir",
                ) from exc
            for obj in vars(module).values():
                if _is_own_strategy(obj, module_name):
                    self.register(obj, origin=f"directory:{path.name}")
                    added.append(obj.name)
        return added

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        added: list[str] = []
        for ep in importlib.metadata.entry_points(group=group):
            try:
                obj = ep.load()
            except Exception as exc:
                raise ValidationError(
                    f"strategy entry point {ep.name!r} ({ep.value}) failed to load: {exc}",
                    field="entry_points",
                ) from exc
            for cls in obj if isinstance(obj, list | tuple) else [obj]:
                self.register(cls, origin=f"entry_point:{ep.name}")
                added.append(cls.name)
        return added


def _is_own_strategy(obj: object, module_name: str) -> bool:
    return (
        inspect.isclass(obj)
        and issubclass(obj, Strategy | ColumnarStrategy)
        and obj.__module__ == module_name
        and bool(getattr(obj, "name", ""))
    )


def builtin_classes() -> Iterable[StrategyClass]:
    from ticktape.strategies._market_maker import MarketMaker
    from ticktape.strategies._pump_detector import PumpDetector
    from ticktape.strategies._sma_cross import SmaCross, SmaCrossColumnar

    return (SmaCrossColumnar, SmaCross, MarketMaker, PumpDetector)


def default_registry(
    directory: Path | None = None, *, entry_points: bool = True
) -> StrategyRegistry:
    """Built-ins, then ``directory``'s strategies, then installed entry points."""
    registry = StrategyRegistry()
    for cls in builtin_classes():
        registry.register(cls)
    if directory is not None:
        registry.load_directory(directory)
    if entry_points:
        registry.load_entry_points()
    return registry
