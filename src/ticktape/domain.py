"""The session model, its state machine and input validation. Pure: no I/O.

A session's state lives only in the store (DESIGN.md, invariant 1); the objects
here are immutable snapshots of what the store said at one moment.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from ticktape.errors import InvalidTransition, UnsupportedError, ValidationError, clip

MAX_SYMBOLS = 100
DEFAULT_BOOK_DEPTH = 3
MAX_BOOK_DEPTH = 20
DEFAULT_SIM_RATE_PER_S = 20.0  # trades per second per symbol on the simulated exchange
MAX_SIM_RATE_PER_S = 1_000_000.0
# The slowest set rate: one trade per symbol every ~17 minutes. Slower rates make the
# feed's spacing (1e6 / rate microseconds) overflow; 0 means "as fast as possible".
MIN_SIM_RATE_PER_S = 0.001
DEFAULT_BOOK_EVERY = 5  # one order-book snapshot per this many simulated trades
MAX_DURATION_S = 30 * 86_400

_SYMBOL_RE = re.compile(r"[A-Z0-9]+_[A-Z0-9]+", re.ASCII)
# Binance USD-M: ``BTCUSDT``, ``1000PEPEUSDT``; delivery contracts carry their date
# (``BTCUSDT_250627``).
_BINANCE_SYMBOL_RE = re.compile(r"[A-Z0-9]{2,30}(?:_[0-9]{6})?", re.ASCII)
EXCHANGES = ("sim", "binance", "mexc")  # where a collect session can record from
_DURATION_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd])\s*", re.ASCII)
_DURATION_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


class SessionKind(StrEnum):
    COLLECT = "collect"
    BACKTEST = "backtest"
    PAPER = "paper"


#: Kinds that can be started today. A backtest or paper session is created from its
#: own fields (``ticktape.strategies.BacktestSpec`` / ``PaperSpec``): :func:`validate_spec`
#: makes collect sessions only.
SUPPORTED_KINDS = frozenset({SessionKind.COLLECT, SessionKind.BACKTEST, SessionKind.PAPER})


class SessionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {SessionStatus.STOPPED, SessionStatus.COMPLETED, SessionStatus.FAILED}
)
ACTIVE_STATUSES = frozenset({SessionStatus.PENDING, SessionStatus.RUNNING, SessionStatus.STOPPING})

#: The state machine of DESIGN.md: every allowed move, and nothing else.
TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.PENDING: frozenset(
        {SessionStatus.RUNNING, SessionStatus.STOPPING, SessionStatus.FAILED}
    ),
    SessionStatus.RUNNING: frozenset(
        {SessionStatus.STOPPING, SessionStatus.COMPLETED, SessionStatus.FAILED}
    ),
    SessionStatus.STOPPING: frozenset({SessionStatus.STOPPED, SessionStatus.FAILED}),
    SessionStatus.STOPPED: frozenset(),
    SessionStatus.COMPLETED: frozenset(),
    SessionStatus.FAILED: frozenset(),
}


class DataType(StrEnum):
    TRADES = "trades"
    ORDERBOOK = "orderbook"


class OwnerLossPolicy(StrEnum):
    FAIL = "fail"
    RESUME = "resume"


class Reason:
    """Reasons recorded with transitions. Plain strings so stores keep them as text."""

    CREATED = "created"
    STARTED = "started"
    USER_STOP = "user_stop"
    DURATION_REACHED = "duration_reached"
    OWNER_LOST = "owner_lost"
    SERVER_SHUTDOWN = "server_shutdown"
    START_FAILED = "start_failed"
    ERROR = "error"
    FLUSHED = "flushed"
    DISK_BUDGET = "disk_budget"  # stopped: the store's files reached TICKTAPE_DISK_BUDGET_MB
    STORE_UNAVAILABLE = "store_unavailable"  # failed: the store failed past the lease
    # Notes in a session's history (events that do not change its status):
    OWNER_CHANGED = "owner_changed"  # a live instance claimed it after its owner was lost
    RESUMED = "resumed"  # recording continues after a claim; the detail gives the gap
    HANDED_OVER = "handed_over"  # a shutting-down owner released it for another to claim
    LEASE_LOST = "lease_lost"  # the owner learnt it no longer owns it (or cannot prove it)
    LEASE_RENEW_FAILED = "lease_renew_failed"  # renewals failed for a while, then recovered
    ZOMBIE_STOPPED = "zombie_stopped"  # a runner that lost its lease stopped itself
    STORE_RETRIED = "store_retried"  # a store operation succeeded after transient errors
    COUNT_MISMATCH = "count_mismatch"  # the runner's tally differs from what is stored
    RUNNER_TALLY = "runner_tally"  # what the runner saw stored, counted by itself (JSON detail)
    STOP_DRAIN = "stop_drain"  # the drain budget ran out: ticks shed at the end (JSON detail)
    FEED_COUNTS = "feed_counts"  # duplicates dropped and malformed messages (ticks.FeedCounts)
    # Backtest and paper sessions:
    SOURCE_EXHAUSTED = "source_exhausted"  # a backtest replayed its whole source
    STRATEGY_ERROR = "strategy_error"  # the strategy raised or overran its time budget
    RESTARTED = "restarted"  # a claimed backtest replays again from the beginning


def can_transition(current: SessionStatus, target: SessionStatus) -> bool:
    return target in TRANSITIONS[current]


def check_transition(session_id: str, current: SessionStatus, target: SessionStatus) -> None:
    if not can_transition(current, target):
        raise InvalidTransition(session_id, current.value, target.value)


def is_valid_history(statuses: list[SessionStatus]) -> bool:
    """True if ``statuses`` (oldest first, starting at creation) is a path of the machine."""
    if not statuses or statuses[0] is not SessionStatus.PENDING:
        return False
    return all(can_transition(a, b) for a, b in itertools.pairwise(statuses))


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_session_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Stats:
    """Records a session has stored, per data type, and errors it counted."""

    trades: int = 0
    orderbook: int = 0
    errors: int = 0

    @property
    def records_collected(self) -> int:
        return self.trades + self.orderbook

    def to_dict(self) -> dict[str, int]:
        return {
            "trades": self.trades,
            "orderbook": self.orderbook,
            "records_collected": self.records_collected,
            "errors": self.errors,
        }


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What a session was asked to do. Validated by :func:`validate_spec`."""

    duration_s: float | None = None
    book_depth: int = DEFAULT_BOOK_DEPTH
    seed: int = 0
    rate_per_s: float = DEFAULT_SIM_RATE_PER_S  # 0 means "as fast as possible"
    book_every: int = DEFAULT_BOOK_EVERY
    on_owner_loss: OwnerLossPolicy = OwnerLossPolicy.FAIL
    #: Request fields accepted and not acted on (the original platform's routes accept
    #: e.g. ``data_path``): ``(name, JSON text)`` pairs, sorted, so they are kept with the
    #: session rather than dropped silently, and the config stays immutable.
    ignored: tuple[tuple[str, str], ...] = ()
    #: A backtest's or paper session's validated request (strategy, params, fill model,
    #: source, speed, ...) as canonical JSON (sorted keys); None for collect sessions.
    strategy_run: str | None = None

    def strategy_fields(self) -> dict[str, object] | None:
        return None if self.strategy_run is None else json.loads(self.strategy_run)

    def ignored_fields(self) -> dict[str, object]:
        return {name: json.loads(text) for name, text in self.ignored}

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "duration_s": self.duration_s,
            "book_depth": self.book_depth,
            "seed": self.seed,
            "rate_per_s": self.rate_per_s,
            "book_every": self.book_every,
            "on_owner_loss": self.on_owner_loss.value,
        }
        if self.ignored:
            out["ignored"] = self.ignored_fields()
        if self.strategy_run is not None:
            out["strategy_run"] = self.strategy_fields()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SessionConfig:
        duration = data.get("duration_s")
        return cls(
            duration_s=None if duration is None else float(duration),  # type: ignore[arg-type]
            book_depth=int(data.get("book_depth", DEFAULT_BOOK_DEPTH)),  # type: ignore[call-overload]
            seed=int(data.get("seed", 0)),  # type: ignore[call-overload]
            rate_per_s=float(data.get("rate_per_s", DEFAULT_SIM_RATE_PER_S)),  # type: ignore[arg-type]
            book_every=int(data.get("book_every", DEFAULT_BOOK_EVERY)),  # type: ignore[call-overload]
            on_owner_loss=OwnerLossPolicy(str(data.get("on_owner_loss", "fail"))),
            ignored=ignored_pairs(data.get("ignored")),
            strategy_run=(
                None
                if data.get("strategy_run") is None
                else json.dumps(data["strategy_run"], sort_keys=True)
            ),
        )


def ignored_pairs(fields: object) -> tuple[tuple[str, str], ...]:
    """``{"data_path": "data"}`` → ``(("data_path", '"data"'),)``, the form kept in a config."""
    if not isinstance(fields, dict):
        return ()
    return tuple(
        sorted((str(name), json.dumps(value, sort_keys=True)) for name, value in fields.items())
    )


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """A validated request to create a session."""

    kind: SessionKind
    symbols: tuple[str, ...]
    exchange: str
    data_types: tuple[DataType, ...]
    config: SessionConfig = field(default_factory=SessionConfig)


@dataclass(frozen=True, slots=True)
class Session:
    """One session as the store last recorded it."""

    id: str
    kind: SessionKind
    status: SessionStatus
    symbols: tuple[str, ...]
    exchange: str
    data_types: tuple[DataType, ...]
    config: SessionConfig
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    reason: str | None = None
    stats: Stats = field(default_factory=Stats)
    owner: str | None = None
    lease_expires_at: datetime | None = None
    version: int = 1
    deleted: bool = False
    idempotency_key: str | None = None
    #: The backend's own record this session was read from, when the read attaches it
    #: (QuestDB's ``find_owned``: the log row): given back as a transition's ``read``
    #: (``SessionStore.transition``), the store need not read the session again. Opaque
    #: outside the store that set it; not part of the session's value (not compared,
    #: hashed or shown), and never served.
    stored_row: object | None = field(default=None, compare=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def evolve(self, **changes: object) -> Session:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """One recorded transition. ``from_status`` is None for the creation event."""

    session_id: str
    seq: int
    at: datetime
    from_status: SessionStatus | None
    to_status: SessionStatus
    actor: str
    reason: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Note:
    """A note to record in a session's history with a transition (``SessionStore.transition``):
    an event that changes no state, as ``SessionStore.add_event`` records one."""

    reason: str
    detail: str | None = None


# --------------------------------------------------------------------------- validation


def parse_duration(text: str | None) -> float | None:
    """``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` → seconds; ``None`` or ``""`` → until stopped."""
    if text is None or (isinstance(text, str) and text.strip() == ""):
        return None
    if not isinstance(text, str):
        raise ValidationError(
            "duration must be a string such as '30s', '5m', '2h' or '1d'", field="duration"
        )
    match = _DURATION_RE.fullmatch(text)
    if not match:
        raise ValidationError(
            f"invalid duration {clip(text)!r}: use a number and a unit s, m, h or d, e.g. '30s'",
            field="duration",
        )
    seconds = float(match.group(1)) * _DURATION_UNIT_S[match.group(2)]
    if seconds <= 0:
        raise ValidationError("duration must be greater than zero", field="duration")
    if seconds > MAX_DURATION_S:
        raise ValidationError(
            f"duration must be at most {MAX_DURATION_S // 86_400}d", field="duration"
        )
    return seconds


def validate_symbols(symbols: object, exchange: str = "sim") -> tuple[str, ...]:
    """Symbols in the exchange's own form: ``BTC_USDT`` (sim, MEXC) or ``BTCUSDT`` (Binance)."""
    if not isinstance(symbols, list | tuple) or not symbols:
        example = "BTCUSDT" if exchange == "binance" else "BTC_USDT"
        raise ValidationError(
            f"symbols must be a non-empty list such as ['{example}']", field="symbols"
        )
    if len(symbols) > MAX_SYMBOLS:
        raise ValidationError(
            f"at most {MAX_SYMBOLS} symbols per session (got {len(symbols)})", field="symbols"
        )
    seen: set[str] = set()
    for sym in symbols:
        if exchange == "binance":
            if not isinstance(sym, str) or not _BINANCE_SYMBOL_RE.fullmatch(sym):
                raise ValidationError(
                    f"invalid symbol {clip(sym)!r} for binance: Binance USD-M symbols are "
                    "upper-case letters and digits without an underscore, e.g. 'BTCUSDT'",
                    field="symbols",
                )
        elif not isinstance(sym, str) or not _SYMBOL_RE.fullmatch(sym):
            raise ValidationError(
                f"invalid symbol {clip(sym)!r}: upper-case letters and digits with one underscore, "
                "e.g. 'BTC_USDT'",
                field="symbols",
            )
        if sym in seen:
            raise ValidationError(f"duplicate symbol {clip(sym)!r}", field="symbols")
        seen.add(sym)
    return tuple(symbols)


def validate_data_types(data_types: object) -> tuple[DataType, ...]:
    if data_types is None:
        return (DataType.TRADES, DataType.ORDERBOOK)
    if not isinstance(data_types, list | tuple) or not data_types:
        raise ValidationError(
            "data_types must be a non-empty list of 'trades', 'orderbook'", field="data_types"
        )
    out: list[DataType] = []
    for item in data_types:
        try:
            dt = DataType(item)
        except ValueError:
            raise ValidationError(
                f"unknown data type {clip(item)!r}: choose from 'trades', 'orderbook'",
                field="data_types",
            ) from None
        if dt in out:
            raise ValidationError(f"duplicate data type {clip(item)!r}", field="data_types")
        out.append(dt)
    return tuple(out)


def validate_kind(kind: object) -> SessionKind:
    try:
        parsed = SessionKind(str(kind)) if isinstance(kind, str) else SessionKind("")
    except ValueError:
        raise ValidationError(
            f"unknown session kind {clip(kind)!r}: choose from 'collect', 'backtest', 'paper'",
            field="kind",
        ) from None
    if parsed not in SUPPORTED_KINDS:
        raise UnsupportedError(
            f"{parsed.value} sessions are not available yet",
            kind=parsed.value,
        )
    return parsed


def validate_spec(
    *,
    kind: object,
    symbols: object,
    exchange: object = "sim",
    data_types: object = None,
    duration: str | None = None,
    book_depth: object = DEFAULT_BOOK_DEPTH,
    seed: object = 0,
    rate_per_s: object = DEFAULT_SIM_RATE_PER_S,
    book_every: object = DEFAULT_BOOK_EVERY,
    on_owner_loss: object = "fail",
) -> SessionSpec:
    """Check every rule of a create request and return the normalised spec."""
    parsed_kind = validate_kind(kind)
    if parsed_kind is not SessionKind.COLLECT:
        # Unsupported, not invalid: this request shape (the collect fields, or the original
        # platform's) cannot start a backtest; POST /api/sessions with its own fields can.
        needs = (
            "'source_session' and 'strategy'"
            if parsed_kind is SessionKind.BACKTEST
            else "'strategy' and 'symbols'"
        )
        raise UnsupportedError(
            f"a {parsed_kind.value} session is created with {needs} "
            "(POST /api/sessions, docs/strategies.md)",
            kind=parsed_kind.value,
        )
    if not isinstance(exchange, str) or exchange not in EXCHANGES:
        raise ValidationError(
            f"unknown exchange {clip(exchange)!r}: choose from 'sim' (the simulated exchange), "
            "'binance' (Binance USD-M futures), 'mexc' (MEXC futures)",
            field="exchange",
        )
    sym = validate_symbols(symbols, exchange)
    dts = validate_data_types(data_types)
    duration_s = parse_duration(duration)
    if (
        isinstance(book_depth, bool)
        or not isinstance(book_depth, int)
        or not (1 <= book_depth <= MAX_BOOK_DEPTH)
    ):
        raise ValidationError(
            f"book_depth must be an integer from 1 to {MAX_BOOK_DEPTH}", field="book_depth"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or not (0 <= seed < 2**63):
        raise ValidationError("seed must be a non-negative integer", field="seed")
    if (
        isinstance(rate_per_s, bool)
        or not isinstance(rate_per_s, int | float)
        or not (rate_per_s == 0 or MIN_SIM_RATE_PER_S <= rate_per_s <= MAX_SIM_RATE_PER_S)
    ):
        raise ValidationError(
            f"rate_per_s must be 0 (as fast as possible) or from {MIN_SIM_RATE_PER_S:g} "
            f"to {MAX_SIM_RATE_PER_S:g}",
            field="rate_per_s",
        )
    if (
        isinstance(book_every, bool)
        or not isinstance(book_every, int)
        or not (1 <= book_every <= 1000)
    ):
        raise ValidationError("book_every must be an integer from 1 to 1000", field="book_every")
    try:
        policy = (
            OwnerLossPolicy(str(on_owner_loss))
            if isinstance(on_owner_loss, str)
            else OwnerLossPolicy("")
        )
    except ValueError:
        raise ValidationError(
            "on_owner_loss must be 'fail' or 'resume'", field="on_owner_loss"
        ) from None
    return SessionSpec(
        kind=parsed_kind,
        symbols=sym,
        exchange=exchange,
        data_types=dts,
        config=SessionConfig(
            duration_s=duration_s,
            book_depth=book_depth,
            seed=seed,
            rate_per_s=float(rate_per_s),
            book_every=book_every,
            on_owner_loss=policy,
        ),
    )
