"""``POST /sessions/start`` bodies as the original platform's clients send them.

The original accepted any JSON object and read what it knew; ticktape reads
the same fields with the same meaning, applies its own domain rules to them
(:func:`ticktape.domain.validate_spec`: the same messages as ``/api/sessions``),
and keeps every other field in the session's config under ``ignored`` — never
silently dropped. Wrong *types* or values of the fields it uses are a 400.

======================================  =====================================
original field                          ticktape
======================================  =====================================
``session_type``                        kind: ``collect``; ``backtest`` and
                                        ``paper`` are mapped and refused as not
                                        built yet (422); ``live`` is refused,
                                        pointing to ``paper``
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

import json
from dataclasses import dataclass, replace

from ticktape.domain import (
    DEFAULT_BOOK_DEPTH,
    DEFAULT_BOOK_EVERY,
    DEFAULT_SIM_RATE_PER_S,
    SessionKind,
    SessionSpec,
    ignored_pairs,
    validate_spec,
)
from ticktape.errors import UnsupportedError, ValidationError

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

_KINDS = {
    "collect": SessionKind.COLLECT,
    "backtest": SessionKind.BACKTEST,
    "paper": SessionKind.PAPER,
}


class LiveTradingRefused(UnsupportedError):
    code = "live_trading_not_supported"


@dataclass(frozen=True, slots=True)
class StartRequest:
    spec: SessionSpec
    #: The original's ``idempotent: true``: when a session of the same kind, with the
    #: same symbols and the same options is already active (starting or running), its
    #: id is answered instead of starting another one.
    idempotent: bool


def _object(value: object, field: str) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{field} must be a JSON object", field=field)
    return value


def _symbols(body: dict[str, object], strategy_config: dict[str, object]) -> list[str]:
    given = body.get("symbols")
    if given is not None and not isinstance(given, list):
        raise ValidationError("symbols must be a list such as ['BTC_USDT']", field="symbols")
    if given:
        return [s.upper() if isinstance(s, str) else s for s in given]
    found: set[str] = set()
    for value in strategy_config.values():
        if isinstance(value, list):
            found.update(str(s).upper() for s in value)
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


def _ignored(body: dict[str, object], config: dict[str, object]) -> dict[str, object]:
    used_top = {"session_type", "symbols", "config", "idempotent", "duration", "strategy_config"}
    used_config = {"duration", "data_types", *_OPTIONS}
    ignored: dict[str, object] = {k: v for k, v in body.items() if k not in used_top}
    strategy_config = body.get("strategy_config")
    if strategy_config and set(_object(strategy_config, "strategy_config")) != {"symbols"}:
        ignored["strategy_config"] = strategy_config
    for key, value in config.items():
        if key == "data_collection" and isinstance(value, dict):
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


def parse_start(body: object) -> StartRequest:
    """The original's start body → a validated spec (raises ticktape errors)."""
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
    if session_type == "backtest" and not config.get("session_id"):
        raise ValidationError(
            "config.session_id is required for a backtest: the id of a recorded collect "
            "session (GET /api/data-collection/sessions)",
            field="config.session_id",
        )
    symbols = _symbols(body, strategy_config)
    options = {key: config.get(key, default) for key, default in _OPTIONS.items()}
    spec = validate_spec(
        kind=session_type,  # backtest / paper: refused here as not built yet (422)
        symbols=symbols,
        data_types=_data_types(config),
        duration=_duration(body, config),
        **options,
    )
    ignored = ignored_pairs(_ignored(body, config))
    return StartRequest(
        spec=replace(spec, config=replace(spec.config, ignored=ignored)), idempotent=idempotent
    )
