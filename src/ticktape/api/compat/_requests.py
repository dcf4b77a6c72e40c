"""``POST /sessions/start`` bodies as the original platform's clients send them.

The original accepted any JSON object and read what it knew; ticktape reads
the same fields with the same meaning, applies its own domain rules to them
(:func:`ticktape.domain.validate_spec`: the same messages as ``/api/sessions``),
and keeps every other field in the session's config under ``ignored`` — never
silently dropped. Wrong *types* or values of the fields it uses are a 400.

======================================  =====================================
original field                          ticktape
======================================  =====================================
``session_type``                        kind: ``collect``, ``backtest``,
                                        ``paper`` (see :func:`_strategy_run`);
                                        ``live`` is refused, pointing to
                                        ``paper``
``symbols`` (top level), else every     ``symbols`` (upper-cased; the
list in ``strategy_config``             original's fallback order)
``config.data_collection.duration``,    ``duration``; ``"continuous"``,
``config.duration``, ``duration``       ``"infinite"`` or absent = until
                                        stopped (the original's default was
                                        ``"1h"``; ticktape's is "until
                                        stopped", as on its own API)
``config.data_types``                   ``price``/``prices``/``trades`` →
                                        ``trades``; ``orderbook``
``config.exchange``, ``book_depth``,    the same ticktape options
``seed``, ``rate_per_s``,
``book_every``, ``on_owner_loss``
``idempotent: true``                    see :attr:`StartRequest.idempotent`
anything else                           ``config.ignored``
======================================  =====================================
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, replace

from ticktape.domain import (
    DEFAULT_BOOK_DEPTH,
    DEFAULT_BOOK_EVERY,
    DEFAULT_SIM_RATE_PER_S,
    OwnerLossPolicy,
    SessionKind,
    SessionSpec,
    ignored_pairs,
    validate_spec,
)
from ticktape.errors import SessionNotFound, UnsupportedError, ValidationError
from ticktape.service import SessionService, paper_spec
from ticktape.strategies import BacktestSpec, StrategyRegistry, validate_backtest, validate_paper

MAX_IGNORED_JSON_CHARS = 16_384  # ignored fields are stored with the session: keep them small

#: Durations the original took as "until stopped".
UNTIL_STOPPED = frozenset({"continuous", "infinite"})

#: Original names of data types → ticktape's (the original stored trades as "prices").
DATA_TYPE_NAMES = {
    "price": "trades",
    "prices": "trades",
    "trades": "trades",
    "orderbook": "orderbook",
}

#: ``config`` keys that are ticktape's own session options, with their defaults.
_OPTIONS: dict[str, object] = {
    "exchange": "sim",
    "book_depth": DEFAULT_BOOK_DEPTH,
    "seed": 0,
    "rate_per_s": DEFAULT_SIM_RATE_PER_S,
    "book_every": DEFAULT_BOOK_EVERY,
    "on_owner_loss": "fail",
}

#: ``strategy_config`` key under which the original's session dialog lists strategy names
#: (``{"strategies": ["..."]}``); every other key of ``strategy_config`` names a strategy.
STRATEGY_LIST_KEY = "strategies"

#: The original's risk fields → the strategy parameter they set, where the strategy has it.
RISK_PARAMS = {"stop_loss_percent": "stop_loss_pct", "take_profit_percent": "take_profit_pct"}
#: The original's replay speed (10 = ten times exchange time); the first one given is used.
SPEED_FIELDS = ("acceleration_factor", "replay_speed")
#: The original's budget → the simulator's starting cash; the first one given is used.
BUDGET_FIELDS = ("budget.global_cap", "global_budget", "initial_balance")

_KINDS = {
    "collect": SessionKind.COLLECT,
    "backtest": SessionKind.BACKTEST,
    "paper": SessionKind.PAPER,
}


class LiveTradingRefused(UnsupportedError):
    code = "live_trading_not_supported"


class OneStrategyPerSession(UnsupportedError):
    """The original ran several strategies in one session; a ticktape session runs one."""

    code = "one_strategy_per_session"


@dataclass(frozen=True, slots=True)
class StartRequest:
    #: The session to create: complete for collect and paper; for a backtest, the
    #: source session still has to be checked (:meth:`resolve`).
    spec: SessionSpec | None
    #: The original's ``idempotent: true``: when a session of the same kind, with the
    #: same symbols and the same options is already active (starting or running), its
    #: id is answered instead of starting another one.
    idempotent: bool
    backtest: BacktestSpec | None = None
    on_owner_loss: OwnerLossPolicy = OwnerLossPolicy.FAIL
    ignored: tuple[tuple[str, str], ...] = ()

    async def resolve(self, service: SessionService) -> SessionSpec:
        """The spec to create; a backtest is checked against its source session here
        (not found, not finished, no data, symbols it did not record: 400 naming
        ``config.session_id`` or ``symbols``)."""
        if self.backtest is None:
            assert self.spec is not None
            return self.spec
        run = self.backtest
        if run.symbols is not None and run.start is None and run.end is None:
            # The original's pages send every symbol of the recording (the trading-session
            # page selects them all): that is the whole recording, whose progress is known.
            with contextlib.suppress(SessionNotFound):
                source = await service.get(run.source_session)
                if sorted(set(run.symbols)) == sorted(source.symbols) == sorted(run.symbols):
                    run = run.model_copy(update={"symbols": None})
        try:
            spec = await service.backtest_spec(run, on_owner_loss=self.on_owner_loss)
        except ValidationError as exc:
            if exc.field != "source_session":
                raise
            raise ValidationError(
                exc.message.replace("source_session", "config.session_id", 1),
                field="config.session_id",
            ) from None
        return replace(spec, config=replace(spec.config, ignored=self.ignored))


def _object(value: object, field: str) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{field} must be a JSON object", field=field)
    return value


def _symbols(
    body: dict[str, object], strategy_config: dict[str, object], *, required: bool = True
) -> list[str] | None:
    given = body.get("symbols")
    if given is not None and not isinstance(given, list):
        raise ValidationError("symbols must be a list such as ['BTC_USDT']", field="symbols")
    if given:
        return [s.upper() if isinstance(s, str) else s for s in given]
    found: set[str] = set()
    for key, value in strategy_config.items():
        if isinstance(value, dict):  # {"<strategy>": {"symbols": [...], <params>}}
            value = value.get("symbols")
        if isinstance(value, list) and key != STRATEGY_LIST_KEY:
            found.update(str(s).upper() for s in value)
    if not found and not required:
        return None
    if not found:
        raise ValidationError(
            "symbols are required: give 'symbols' or lists of symbols in 'strategy_config'",
            field="symbols",
        )
    return sorted(found)


def _duration(body: dict[str, object], config: dict[str, object]) -> str | None:
    nested = _object(config.get("data_collection"), "config.data_collection")
    for field, value in (
        ("config.data_collection.duration", nested.get("duration")),
        ("config.duration", config.get("duration")),
        ("duration", body.get("duration")),
    ):
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ValidationError(
                f"{field} must be a string such as '30s', '5m', '2h' or 'continuous'", field=field
            )
        return None if value.strip().lower() in UNTIL_STOPPED else value
    return None


def _data_types(config: dict[str, object]) -> list[str] | None:
    nested = _object(config.get("data_collection"), "config.data_collection")
    given = config.get("data_types", nested.get("data_types"))
    if given is None:
        return None
    if not isinstance(given, list) or not given:
        raise ValidationError(
            "data_types must be a non-empty list of 'price', 'orderbook'", field="data_types"
        )
    out: list[str] = []
    for item in given:
        name = DATA_TYPE_NAMES.get(item) if isinstance(item, str) else None
        if name is None:
            raise ValidationError(
                f"unknown data type {item!r}: choose from 'price' (trades), 'orderbook'",
                field="data_types",
            )
        if name not in out:
            out.append(name)
    return out


def _ignored(
    body: dict[str, object],
    config: dict[str, object],
    *,
    used_config: frozenset[str] = frozenset({"duration", "data_types", *_OPTIONS}),
    strategy_used: bool = False,
    budget_used: bool = False,
) -> dict[str, object]:
    used_top = {"session_type", "symbols", "config", "idempotent", "duration", "strategy_config"}
    if strategy_used:
        used_top.add("selected_strategies")
    ignored: dict[str, object] = {k: v for k, v in body.items() if k not in used_top}
    strategy_config = body.get("strategy_config")
    if (
        not strategy_used
        and strategy_config
        and set(_object(strategy_config, "strategy_config")) != {"symbols"}
    ):
        ignored["strategy_config"] = strategy_config
    for key, value in config.items():
        if key == "budget" and budget_used and isinstance(value, dict):
            for name, part in value.items():
                if name != "global_cap":
                    ignored[f"config.budget.{name}"] = part
        elif key == "data_collection" and isinstance(value, dict):
            rest = {k: v for k, v in value.items() if k not in {"duration", "data_types"}}
            if rest:
                ignored["config.data_collection"] = rest
        elif key not in used_config:
            ignored[f"config.{key}"] = value
    if len(json.dumps(ignored)) > MAX_IGNORED_JSON_CHARS:
        raise ValidationError(
            f"the request's unused fields exceed {MAX_IGNORED_JSON_CHARS} characters of JSON"
        )
    return ignored


def _strategy(
    body: dict[str, object], strategy_config: dict[str, object], registry: StrategyRegistry
) -> tuple[str, dict[str, object]]:
    """The one strategy named by ``selected_strategies`` (else ``strategy_config``'s
    ``strategies`` list, else its keys), and its parameters (``strategy_config[name]``
    when that is an object)."""
    selected = body.get("selected_strategies")
    if selected is not None and not (
        isinstance(selected, list) and all(isinstance(n, str) for n in selected)
    ):
        raise ValidationError(
            "selected_strategies must be a list of strategy names", field="selected_strategies"
        )
    names: list[str] = list(selected or [])
    if not names:
        listed = strategy_config.get(STRATEGY_LIST_KEY)
        if isinstance(listed, list):
            names = [str(n) for n in listed]
        else:
            names = [k for k in strategy_config if k != "symbols"]
    names = list(dict.fromkeys(names))
    if not names:
        raise ValidationError(
            "a strategy is required: name it in selected_strategies or as a key of "
            f"strategy_config; choose from {', '.join(registry.names())}",
            field="selected_strategies",
        )
    if len(names) > 1:
        raise OneStrategyPerSession(
            f"a ticktape session runs one strategy; got {len(names)} ({', '.join(names)}): "
            "start one session per strategy"
        )
    name = names[0]
    registry.get(name)  # unknown: 422 naming it and listing the registered ones
    own = strategy_config.get(name)
    params = {k: v for k, v in own.items() if k != "symbols"} if isinstance(own, dict) else {}
    return name, params


def _number(value: object, where: str, *, positive: bool) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        bound = "greater than 0" if positive else "0 or more"
        raise ValidationError(f"{where} must be a number {bound}", field=where)
    return float(value)


def _first(config: dict[str, object], names: tuple[str, ...]) -> tuple[str, object] | None:
    budget = config.get("budget")
    for name in names:
        if name.startswith("budget."):
            value = budget.get(name[7:]) if isinstance(budget, dict) else None
        else:
            value = config.get(name)
        if value is not None:
            return name, value
    return None


def _strategy_run(
    body: dict[str, object],
    config: dict[str, object],
    strategy_config: dict[str, object],
    registry: StrategyRegistry,
    *,
    backtest: bool,
) -> tuple[dict[str, object], set[str]]:
    """Fields for ``validate_backtest`` / ``validate_paper`` from the original's body, and
    the ``config`` keys they used (every other key is recorded as ignored)."""
    name, params = _strategy(body, strategy_config, registry)
    used: set[str] = set()
    run: dict[str, object] = {"strategy": name}
    speed = _first(config, SPEED_FIELDS) if backtest else None
    if speed is not None:
        # 0 = as fast as possible (ticktape's default when none is given); the upper
        # bound is BacktestSpec's (its message is renamed in _parse_backtest)
        run["speed"] = _number(speed[1], f"config.{speed[0]}", positive=False)
        used.add(speed[0])
    budget = _first(config, BUDGET_FIELDS)
    if budget is not None:
        run["initial_cash"] = _number(budget[1], f"config.{budget[0]}", positive=True)
        used.add(budget[0])
    accepts = registry.get(name).params_model.model_fields
    for field_name, param in RISK_PARAMS.items():
        value = config.get(field_name)
        if value is not None and param in accepts and param not in params:
            params[param] = value
            used.add(field_name)
    run["params"] = params
    return run, used


def _owner_loss(value: object) -> OwnerLossPolicy:
    try:
        return OwnerLossPolicy(value if isinstance(value, str) else "")
    except ValueError:
        raise ValidationError(
            "config.on_owner_loss must be 'fail' or 'resume'", field="config.on_owner_loss"
        ) from None


def _parse_backtest(
    body: dict[str, object],
    config: dict[str, object],
    strategy_config: dict[str, object],
    idempotent: bool,
    registry: StrategyRegistry,
) -> StartRequest:
    source = config.get("session_id")
    if not isinstance(source, str) or not source:
        raise ValidationError(
            "config.session_id is required for a backtest: the id of a recorded collect "
            "session (GET /api/data-collection/sessions)",
            field="config.session_id",
        )
    run, used = _strategy_run(body, config, strategy_config, registry, backtest=True)
    fields: dict[str, object] = {**run, "source_session": source, "seed": config.get("seed", 0)}
    symbols = _symbols(body, strategy_config, required=False)
    if symbols is not None:
        fields["symbols"] = symbols
    try:
        spec = validate_backtest(fields, registry)
    except ValidationError as exc:
        original = next((f"config.{n}" for n in SPEED_FIELDS if n in used), None)
        if exc.field != "speed" or original is None:
            raise
        raise ValidationError(exc.message.replace("speed", original, 1), field=original) from None
    used_config = frozenset({"session_id", "seed", "on_owner_loss", *used})
    ignored = _ignored(
        body,
        config,
        used_config=used_config,
        strategy_used=True,
        budget_used="budget.global_cap" in used,
    )
    return StartRequest(
        spec=None,
        idempotent=idempotent,
        backtest=spec,
        on_owner_loss=_owner_loss(config.get("on_owner_loss", "fail")),
        ignored=ignored_pairs(ignored),
    )


def parse_start(body: object, registry: StrategyRegistry) -> StartRequest:
    """The original's start body → a validated request (raises ticktape errors)."""
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object")
    session_type = body.get("session_type")
    if session_type is None:
        raise ValidationError(
            "session_type is required: 'collect', 'backtest' or 'paper'", field="session_type"
        )
    if session_type == "live":
        raise LiveTradingRefused(
            "live trading (real orders on an exchange) is not offered by ticktape; "
            "start a 'paper' session to run a strategy on a live feed with simulated fills"
        )
    if not isinstance(session_type, str) or session_type not in _KINDS:
        raise ValidationError(
            f"unknown session_type {session_type!r}: choose from 'collect', 'backtest', 'paper'",
            field="session_type",
        )
    config = _object(body.get("config"), "config")
    strategy_config = _object(body.get("strategy_config"), "strategy_config")
    idempotent = body.get("idempotent", False)
    if not isinstance(idempotent, bool):
        raise ValidationError("idempotent must be true or false", field="idempotent")
    if session_type == "backtest":
        return _parse_backtest(body, config, strategy_config, idempotent, registry)
    symbols = _symbols(body, strategy_config)
    options = {key: config.get(key, default) for key, default in _OPTIONS.items()}
    spec = validate_spec(
        kind="collect",  # a paper session records its feed like a collect session
        symbols=symbols,
        data_types=_data_types(config),
        duration=_duration(body, config),
        **options,
    )
    if session_type == "paper":
        run, used = _strategy_run(body, config, strategy_config, registry, backtest=False)
        paper = validate_paper(
            {
                **run,
                "symbols": list(spec.symbols),
                "exchange": spec.exchange,
                "seed": spec.config.seed,
            },
            registry,
        )
        spec = paper_spec(spec, paper)
        unused = _ignored(
            body,
            config,
            used_config=frozenset({"duration", "data_types", *_OPTIONS, *used}),
            strategy_used=True,
            budget_used="budget.global_cap" in used,
        )
    else:
        unused = _ignored(body, config)
    ignored = ignored_pairs(unused)
    return StartRequest(
        spec=replace(spec, config=replace(spec.config, ignored=ignored)), idempotent=idempotent
    )
