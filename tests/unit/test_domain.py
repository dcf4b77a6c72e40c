"""Domain rules: spec validation, the state machine, stats, and the stores' shared helpers."""

from __future__ import annotations

import contextlib
import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticktape.domain import (
    ACTIVE_STATUSES,
    DEFAULT_BOOK_DEPTH,
    MAX_DURATION_S,
    MAX_SYMBOLS,
    TERMINAL_STATUSES,
    TRANSITIONS,
    DataType,
    OwnerLossPolicy,
    Session,
    SessionConfig,
    SessionKind,
    SessionSpec,
    SessionStatus,
    Stats,
    can_transition,
    check_transition,
    is_valid_history,
    parse_duration,
    validate_spec,
)
from ticktape.errors import (
    InvalidTransition,
    SessionConflict,
    TicktapeError,
    UnsupportedError,
    ValidationError,
)
from ticktape.store.base import UNCHANGED
from ticktape.store.rules import (
    after_cursor,
    apply_transition,
    decode_cursor,
    encode_cursor,
    from_us,
    to_us,
)

P, R, SG, SD, C, F = (
    SessionStatus.PENDING,
    SessionStatus.RUNNING,
    SessionStatus.STOPPING,
    SessionStatus.STOPPED,
    SessionStatus.COMPLETED,
    SessionStatus.FAILED,
)


def spec(**overrides: Any) -> SessionSpec:
    args: dict[str, Any] = {"kind": "collect", "symbols": ["BTC_USDT"]}
    args.update(overrides)
    return validate_spec(**args)


def invalid(field: str, match: str | None = None, **overrides: Any) -> ValidationError:
    with pytest.raises(ValidationError, match=match) as info:
        spec(**overrides)
    assert info.value.field == field
    return info.value


# --------------------------------------------------------------------------- a valid spec


def test_minimal_spec_is_normalised_with_defaults() -> None:
    result = spec()
    assert result == SessionSpec(
        kind=SessionKind.COLLECT,
        symbols=("BTC_USDT",),
        exchange="sim",
        data_types=(DataType.TRADES, DataType.ORDERBOOK),
        config=SessionConfig(),
    )
    assert result.config.duration_s is None
    assert result.config.book_depth == DEFAULT_BOOK_DEPTH


def test_full_spec_is_normalised() -> None:
    result = spec(
        symbols=("BTC_USDT", "ETH_USDT"),
        data_types=["orderbook"],
        duration="5m",
        book_depth=20,
        seed=7,
        rate_per_s=100,
        book_every=1,
        on_owner_loss="resume",
    )
    assert result.symbols == ("BTC_USDT", "ETH_USDT")
    assert result.data_types == (DataType.ORDERBOOK,)
    assert result.config == SessionConfig(
        duration_s=300.0,
        book_depth=20,
        seed=7,
        rate_per_s=100.0,
        book_every=1,
        on_owner_loss=OwnerLossPolicy.RESUME,
    )
    assert type(result.config.rate_per_s) is float


# --------------------------------------------------------------------------- symbols


@pytest.mark.parametrize(
    "symbols",
    [
        ["BTC_USDT"],
        ["1INCH_USDT"],
        ["A_B"],
        ("BTC_USDT", "ETH_USDT"),
        [f"S{i}_USDT" for i in range(MAX_SYMBOLS)],
    ],
    ids=["one", "digits", "short", "tuple", "max"],
)
def test_valid_symbols(symbols: list[str]) -> None:
    assert spec(symbols=symbols).symbols == tuple(symbols)


@pytest.mark.parametrize(
    "symbol",
    [
        "btc_usdt",
        "Btc_USDT",
        "BTCUSDT",
        "BTC__USDT",
        "BTC_USD_T",
        "_BTC",
        "BTC_",
        "_",
        "",
        "BTC-USDT",
        "BTC USDT",
        " BTC_USDT",
        "BTC_USDT ",
        "BTC_ÜSDT",
        "BTC_USDT\n",
        42,
        None,
    ],
    ids=[
        "lower",
        "mixed-case",
        "no-underscore",
        "two-underscores-adjacent",
        "two-underscores",
        "no-base",
        "no-quote",
        "only-underscore",
        "empty",
        "dash",
        "space",
        "leading-space",
        "trailing-space",
        "non-ascii",
        "trailing-newline",
        "int",
        "none",
    ],
)
def test_invalid_symbol(symbol: object) -> None:
    err = invalid("symbols", "invalid symbol", symbols=["ETH_USDT", symbol])
    assert repr(symbol) in err.message


@pytest.mark.parametrize(
    "symbols",
    [[], (), None, "BTC_USDT", {"BTC_USDT"}, 3],
    ids=["empty-list", "empty-tuple", "none", "string", "set", "int"],
)
def test_symbols_must_be_a_non_empty_list(symbols: object) -> None:
    invalid("symbols", "non-empty list", symbols=symbols)


def test_at_most_max_symbols() -> None:
    err = invalid("symbols", symbols=[f"S{i}_USDT" for i in range(MAX_SYMBOLS + 1)])
    assert err.message == "at most 100 symbols per session (got 101)"


def test_duplicate_symbols() -> None:
    invalid("symbols", "duplicate symbol 'ETH_USDT'", symbols=["ETH_USDT", "BTC_USDT", "ETH_USDT"])


# --------------------------------------------------------------------------- data types


@pytest.mark.parametrize(
    ("data_types", "expected"),
    [
        (None, (DataType.TRADES, DataType.ORDERBOOK)),
        (["trades"], (DataType.TRADES,)),
        (("orderbook", "trades"), (DataType.ORDERBOOK, DataType.TRADES)),
    ],
)
def test_valid_data_types(data_types: object, expected: tuple[DataType, ...]) -> None:
    assert spec(data_types=data_types).data_types == expected


def test_unknown_data_type() -> None:
    invalid("data_types", "unknown data type 'candles'", data_types=["trades", "candles"])


@pytest.mark.parametrize("item", ["Trades", "", None, 1], ids=["case", "empty", "none", "int"])
def test_data_type_spelling_is_exact(item: object) -> None:
    invalid("data_types", "unknown data type", data_types=[item])


def test_duplicate_data_type() -> None:
    invalid("data_types", "duplicate data type 'trades'", data_types=["trades", "trades"])


@pytest.mark.parametrize("data_types", [[], (), "trades"], ids=["empty", "empty-tuple", "str"])
def test_data_types_must_be_a_non_empty_list(data_types: object) -> None:
    invalid("data_types", "non-empty list", data_types=data_types)


# --------------------------------------------------------------------------- duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86_400.0),
        ("1.5m", 90.0),
        ("0.5s", 0.5),
        (" 30s ", 30.0),
        ("30 s", 30.0),
        ("30d", float(MAX_DURATION_S)),
        ("720h", float(MAX_DURATION_S)),
        (None, None),
        ("", None),
        ("   ", None),
    ],
)
def test_valid_durations(text: str | None, seconds: float | None) -> None:
    assert parse_duration(text) == seconds
    assert spec(duration=text).config.duration_s == seconds


@pytest.mark.parametrize(
    "text",
    [
        "30",
        "s",
        "30x",
        "30S",
        "-5s",
        "+5s",
        "1.s",
        ".5s",
        "1e3s",
        "5 m s",
        "5ms",
        "1,5m",
        "five minutes",
        "30s30s",
        "inf s",
        "nan s",
        "30s\n5m",
        "\u0663\u0660s",
        "\uff13\uff10m",
    ],
)
def test_invalid_duration_forms(text: str) -> None:
    invalid("duration", "invalid duration", duration=text)


@pytest.mark.parametrize("text", ["0s", "0m", "0.0h", "0d", "00s"])
def test_zero_duration(text: str) -> None:
    invalid("duration", "greater than zero", duration=text)


@pytest.mark.parametrize(
    "text", ["31d", "30.001d", "721h", "43201m", "2592001s", "99999999999999999999999d"]
)
def test_duration_too_long(text: str) -> None:
    invalid("duration", "at most 30d", duration=text)


@pytest.mark.parametrize("value", [30, 30.0, ["30s"]], ids=["int", "float", "list"])
def test_duration_must_be_a_string(value: object) -> None:
    invalid("duration", "must be a string", duration=value)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("depth", [1, 3, 20])
def test_valid_book_depth(depth: int) -> None:
    assert spec(book_depth=depth).config.book_depth == depth


@pytest.mark.parametrize(
    "depth",
    [0, -1, 21, True, False, 3.0, "3", None],
    ids=["0", "neg", "21", "true", "false", "float", "str", "none"],
)
def test_invalid_book_depth(depth: object) -> None:
    invalid("book_depth", "book_depth must be an integer from 1 to 20", book_depth=depth)


@pytest.mark.parametrize("seed", [0, 1, 2**63 - 1])
def test_valid_seed(seed: int) -> None:
    assert spec(seed=seed).config.seed == seed


@pytest.mark.parametrize(
    "seed",
    [-1, 2**63, True, 1.0, "1", None],
    ids=["neg", "too-big", "bool", "float", "str", "none"],
)
def test_invalid_seed(seed: object) -> None:
    invalid("seed", "non-negative integer", seed=seed)


@pytest.mark.parametrize("rate", [0, 0.5, 20, 1_000_000, 1e6])
def test_valid_rate(rate: float) -> None:
    assert spec(rate_per_s=rate).config.rate_per_s == float(rate)


@pytest.mark.parametrize(
    "rate",
    [-0.001, 1_000_000.5, float("inf"), float("nan"), True, "5", None],
    ids=["neg", "too-big", "inf", "nan", "bool", "str", "none"],
)
def test_invalid_rate(rate: object) -> None:
    invalid("rate_per_s", r"rate_per_s must be 0 \(as fast as possible\) or from", rate_per_s=rate)


@pytest.mark.parametrize("every", [1, 1000])
def test_valid_book_every(every: int) -> None:
    assert spec(book_every=every).config.book_every == every


@pytest.mark.parametrize("every", [0, 1001, True, 5.0], ids=["0", "1001", "bool", "float"])
def test_invalid_book_every(every: object) -> None:
    invalid("book_every", "book_every must be an integer from 1 to 1000", book_every=every)


@pytest.mark.parametrize("policy", ["fail", "resume"])
def test_valid_owner_loss_policy(policy: str) -> None:
    assert spec(on_owner_loss=policy).config.on_owner_loss == OwnerLossPolicy(policy)


@pytest.mark.parametrize("policy", ["retry", "FAIL", "", None])
def test_invalid_owner_loss_policy(policy: object) -> None:
    invalid("on_owner_loss", "on_owner_loss must be 'fail' or 'resume'", on_owner_loss=policy)


# --------------------------------------------------------------------------- kind / exchange


def test_collect_kind() -> None:
    assert spec(kind="collect").kind is SessionKind.COLLECT
    assert spec(kind=SessionKind.COLLECT).kind is SessionKind.COLLECT


def test_a_backtest_is_not_made_from_collect_fields() -> None:
    with pytest.raises(UnsupportedError, match="created with 'source_session' and 'strategy'"):
        spec(kind="backtest")


@pytest.mark.parametrize("kind", ["backtest", "paper", SessionKind.PAPER])
def test_strategy_kinds_are_not_made_from_collect_fields(kind: object) -> None:
    with pytest.raises(UnsupportedError, match="session is created with") as info:
        spec(kind=kind)
    assert not isinstance(info.value, ValidationError)
    assert info.value.fields["kind"] == SessionKind(str(kind)).value


@pytest.mark.parametrize(
    "kind",
    ["live", "Collect", "", None, 1, ["collect"]],
    ids=["live", "case", "empty", "none", "int", "list"],
)
def test_unknown_kind(kind: object) -> None:
    invalid("kind", "unknown session kind", kind=kind)


@pytest.mark.parametrize("exchange", ["kraken", "SIM", "Binance", "", None, 3])
def test_unknown_exchanges_are_refused_naming_the_field(exchange: object) -> None:
    invalid("exchange", "choose from .sim.", exchange=exchange)


@pytest.mark.parametrize(
    ("exchange", "symbols"),
    [
        ("sim", ["BTC_USDT"]),
        ("mexc", ["BTC_USDT", "ETH_USDT"]),
        ("binance", ["BTCUSDT", "1000PEPEUSDT", "BTCUSDT_250627"]),
    ],
)
def test_each_exchange_takes_symbols_in_its_own_form(exchange: str, symbols: list[str]) -> None:
    made = spec(exchange=exchange, symbols=symbols)
    assert (made.exchange, made.symbols) == (exchange, tuple(symbols))


@pytest.mark.parametrize(
    ("exchange", "symbol", "mentions"),
    [
        ("binance", "BTC_USDT", "e.g. .BTCUSDT."),
        ("binance", "btcusdt", "e.g. .BTCUSDT."),
        ("binance", "BTCUSDT_PERP", "e.g. .BTCUSDT."),
        ("mexc", "BTCUSDT", "e.g. .BTC_USDT."),
        ("sim", "BTCUSDT", "e.g. .BTC_USDT."),
    ],
)
def test_a_symbol_in_another_exchanges_form_is_refused(
    exchange: str, symbol: str, mentions: str
) -> None:
    invalid("symbols", mentions, exchange=exchange, symbols=[symbol])


def test_kind_is_checked_before_the_rest() -> None:
    with pytest.raises(UnsupportedError, match="paper"):
        spec(kind="paper", exchange="binance", symbols=[])


def test_errors_share_the_root() -> None:
    assert issubclass(ValidationError, TicktapeError)
    assert issubclass(UnsupportedError, TicktapeError)
    assert issubclass(InvalidTransition, SessionConflict)


# --------------------------------------------------------------------------- state machine

#: DESIGN.md: pending → running | stopping | failed; running → stopping | completed | failed;
#: stopping → stopped | failed; nothing leaves a terminal status.
DESIGN_MOVES = {(P, R), (P, SG), (P, F), (R, SG), (R, C), (R, F), (SG, SD), (SG, F)}
ALL_PAIRS = list(itertools.product(SessionStatus, SessionStatus))


@pytest.mark.parametrize(
    ("current", "target"), ALL_PAIRS, ids=[f"{a.value}-{b.value}" for a, b in ALL_PAIRS]
)
def test_transition_table_is_exactly_the_design(
    current: SessionStatus, target: SessionStatus
) -> None:
    allowed = (current, target) in DESIGN_MOVES
    assert can_transition(current, target) is allowed
    assert (target in TRANSITIONS[current]) is allowed
    if allowed:
        check_transition("s-1", current, target)
    else:
        with pytest.raises(InvalidTransition) as info:
            check_transition("s-1", current, target)
        assert (info.value.session_id, info.value.status, info.value.target) == (
            "s-1",
            current.value,
            target.value,
        )
        assert str(info.value) == (
            f"session 's-1' cannot go from {current.value!r} to {target.value!r}"
        )


def test_table_covers_every_status() -> None:
    assert set(TRANSITIONS) == set(SessionStatus)


def test_terminal_and_active_statuses_partition_the_machine() -> None:
    assert {SD, C, F} == TERMINAL_STATUSES
    assert {P, R, SG} == ACTIVE_STATUSES
    assert all(s.is_terminal is (s in TERMINAL_STATUSES) for s in SessionStatus)
    assert all(not TRANSITIONS[s] for s in TERMINAL_STATUSES)
    assert all(TRANSITIONS[s] for s in ACTIVE_STATUSES)


@pytest.mark.parametrize(
    "history",
    [
        [P],
        [P, R],
        [P, R, SG, SD],
        [P, R, C],
        [P, R, F],
        [P, F],
        [P, SG, SD],
        [P, SG, F],
        [P, R, SG, F],
    ],
)
def test_valid_histories(history: list[SessionStatus]) -> None:
    assert is_valid_history(history)


@pytest.mark.parametrize(
    "history",
    [
        [],
        [R],
        [SD],
        [P, P],
        [P, SD],
        [P, C],
        [P, R, P],
        [P, R, R],
        [P, R, C, F],
        [P, R, SG, SD, R],
        [P, F, P],
        [P, SG, R],
    ],
)
def test_invalid_histories(history: list[SessionStatus]) -> None:
    assert not is_valid_history(history)


@st.composite
def walks(draw: st.DrawFn) -> list[SessionStatus]:
    path = [P]
    while TRANSITIONS[path[-1]]:
        if not draw(st.booleans()):
            break
        path.append(draw(st.sampled_from(sorted(TRANSITIONS[path[-1]]))))
    return path


@given(walks())
def test_every_walk_of_the_machine_is_a_valid_history(path: list[SessionStatus]) -> None:
    assert is_valid_history(path)
    assert len(path) <= 4


@given(st.lists(st.sampled_from(list(SessionStatus)), min_size=1, max_size=8))
def test_a_history_is_valid_iff_every_step_is_allowed(path: list[SessionStatus]) -> None:
    expected = path[0] is P and all((a, b) in DESIGN_MOVES for a, b in itertools.pairwise(path))
    assert is_valid_history(path) is expected


# --------------------------------------------------------------------------- stats / config


@given(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 10**6))
def test_records_collected_is_trades_plus_orderbook(trades: int, books: int, errors: int) -> None:
    stats = Stats(trades=trades, orderbook=books, errors=errors)
    assert stats.records_collected == trades + books
    assert stats.to_dict() == {
        "trades": trades,
        "orderbook": books,
        "records_collected": trades + books,
        "errors": errors,
    }


def test_stats_default_to_zero() -> None:
    assert Stats().records_collected == 0


@given(
    st.builds(
        SessionConfig,
        duration_s=st.none() | st.floats(0.001, MAX_DURATION_S),
        book_depth=st.integers(1, 20),
        seed=st.integers(0, 2**63 - 1),
        rate_per_s=st.floats(0, 1e6),
        book_every=st.integers(1, 1000),
        on_owner_loss=st.sampled_from(OwnerLossPolicy),
    )
)
def test_session_config_round_trips_through_a_dict(config: SessionConfig) -> None:
    assert SessionConfig.from_dict(config.to_dict()) == config


def test_session_config_from_an_empty_dict_is_the_default() -> None:
    assert SessionConfig.from_dict({}) == SessionConfig()


# --------------------------------------------------------------------------- _common

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
offsets = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60, 23 * 60))
# Keep clear of the ends of datetime's range, where a zone offset would overflow.
aware = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC) | offsets
)
MIN_US, MAX_US = to_us(datetime(2, 1, 1)), to_us(datetime(9998, 12, 31))


@given(aware)
def test_from_us_of_to_us_is_the_same_instant(ts: datetime) -> None:
    back = from_us(to_us(ts))
    assert back == ts
    assert back.utcoffset() == timedelta(0)


@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)))
def test_naive_datetimes_are_taken_as_utc(ts: datetime) -> None:
    assert to_us(ts) == to_us(ts.replace(tzinfo=UTC))
    assert from_us(to_us(ts)) == ts.replace(tzinfo=UTC)


@given(st.integers(MIN_US, MAX_US))
def test_to_us_of_from_us_is_the_same_number(us: int) -> None:
    assert to_us(from_us(us)) == us


def test_to_us_known_values() -> None:
    assert to_us(EPOCH) == 0
    assert to_us(datetime(2024, 3, 1, 12, tzinfo=UTC)) == 1_709_294_400_000_000
    assert to_us(EPOCH - timedelta(microseconds=1)) == -1
    assert from_us(1) == EPOCH + timedelta(microseconds=1)


def _session(created_at: datetime, sid: str) -> Session:
    return Session(
        id=sid,
        kind=SessionKind.COLLECT,
        status=P,
        symbols=("BTC_USDT",),
        exchange="sim",
        data_types=(DataType.TRADES,),
        config=SessionConfig(),
        created_at=created_at,
    )


ids = st.text(min_size=1, max_size=40)


@given(aware, ids)
def test_cursor_round_trips(created_at: datetime, sid: str) -> None:
    cursor = encode_cursor(_session(created_at, sid))
    assert cursor.isascii() and "=" not in cursor
    assert decode_cursor(cursor) == (to_us(created_at), sid)


@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from("abcde")), min_size=1, max_size=20, unique=True
    ),
    st.data(),
)
def test_after_cursor_is_strictly_after_in_newest_first_order(
    keys: list[tuple[int, str]], data: st.DataObject
) -> None:
    sessions = sorted(
        (_session(from_us(us), sid) for us, sid in keys),
        key=lambda s: (s.created_at, s.id),
        reverse=True,
    )
    k = data.draw(st.integers(0, len(sessions) - 1))
    position = decode_cursor(encode_cursor(sessions[k]))
    assert [s for s in sessions if after_cursor(s, position)] == sessions[k + 1 :]


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "YWJj", "MTIzOg", "YWJjOmRlZg", "_w"],
    ids=["empty", "junk", "no-colon", "no-id", "not-a-number", "not-utf8"],
)
def test_decode_cursor_rejects_malformed(cursor: str) -> None:
    with pytest.raises(ValidationError, match="invalid cursor") as info:
        decode_cursor(cursor)
    assert info.value.field == "cursor"


@given(st.text(max_size=30))
def test_decode_cursor_raises_only_validation_error(cursor: str) -> None:
    with contextlib.suppress(ValidationError):
        decode_cursor(cursor)


def test_apply_transition_checks_status_before_version() -> None:
    done = _session(EPOCH, "s").evolve(status=C, version=3)
    with pytest.raises(InvalidTransition):
        apply_transition(
            done,
            expected_version=1,
            to_status=F,
            reason="r",
            now=EPOCH,
            owner=UNCHANGED,
            lease_expires_at=UNCHANGED,
            stats=None,
        )
