"""Rules every backend applies the same way: page limits, cursors, timestamps, transitions."""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from ticktape.domain import (
    DataType,
    Reason,
    Session,
    SessionConfig,
    SessionStatus,
    Stats,
    check_transition,
)
from ticktape.errors import InvalidTransition, LeaseLost, TransitionRace, ValidationError, clip
from ticktape.store.base import (
    MAX_DATA_LIMIT,
    UNCHANGED,
    ResultPart,
    SessionQuery,
    TradeBucket,
    Unchanged,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z: the range datetime can hold
_MAX_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z


PARSED_TEXTS_KEPT = 1024  # distinct texts of each column whose parsed value is kept


# A session's symbols, data types and config, stored as JSON text, never change after
# its creation, and most sessions share a handful of texts: each is parsed once and its
# (immutable) value handed to every row that holds it.
@functools.lru_cache(maxsize=PARSED_TEXTS_KEPT)
def parse_symbols(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


@functools.lru_cache(maxsize=PARSED_TEXTS_KEPT)
def parse_data_types(text: str) -> tuple[DataType, ...]:
    return tuple(DataType(d) for d in json.loads(text))


@functools.lru_cache(maxsize=PARSED_TEXTS_KEPT)
def parse_config(text: str) -> SessionConfig:
    return SessionConfig.from_dict(json.loads(text))


def check_note_owner(session: Session, owner: str | None) -> None:
    """``SessionStore.add_event(owner=...)``: a note of ``owner`` goes in only while the
    session is non-terminal and still its own."""
    if owner is None:
        return
    if session.is_terminal or session.owner != owner:
        raise LeaseLost(
            session.id,
            owner,
            f"note refused (session {session.status.value}, owner {session.owner})",
        )


def check_limit(limit: int, maximum: int) -> int:
    """A page size the contract accepts: 1..maximum, else ValidationError."""
    if not 1 <= limit <= maximum:
        raise ValidationError(f"limit must be between 1 and {maximum}", field="limit")
    return limit


def to_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch; naive datetimes are taken as UTC."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def recv_time(us: int | None) -> datetime | None:
    """A row's stored receive time (µs) as a time; None for a row stored without one."""
    return None if us is None or us < 0 else _EPOCH + timedelta(microseconds=int(us))


def encode_cursor(session: Session) -> str:
    raw = f"{to_us(session.created_at)}:{session.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """→ (created_at in µs, id) of the last session of the previous page."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, _, sid = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        position = int(created)
        if not sid or not (_MIN_US <= position <= _MAX_US):
            raise ValueError("no id or time out of range")
        return position, sid
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError(f"invalid cursor {clip(cursor)!r}", field="cursor") from None


def matches(session: Session, query: SessionQuery) -> bool:
    """Whether ``session`` is one ``query`` lists (its filters; not its cursor or limit)."""
    if session.deleted and not query.include_deleted:
        return False
    if query.statuses and session.status not in query.statuses:
        return False
    if query.kind is not None and session.kind is not query.kind:
        return False
    return query.symbol is None or query.symbol in session.symbols


def after_cursor(session: Session, cursor: tuple[int, str], *, oldest_first: bool = False) -> bool:
    """True if ``session`` comes after the cursor position in the list's order
    (newest first unless ``oldest_first``)."""
    return after_position(
        (to_us(session.created_at), session.id), cursor, oldest_first=oldest_first
    )


def after_position(
    position: tuple[int, str], cursor: tuple[int, str], *, oldest_first: bool = False
) -> bool:
    """:func:`after_cursor` on a list position (created_at in µs, id) already known."""
    return position > cursor if oldest_first else position < cursor


def check_expectation(
    current: Session, expected_version: int, lease_expired_before: datetime | None
) -> None:
    """TransitionRace unless ``current`` is at ``expected_version`` and, when
    ``lease_expired_before`` is given, its lease had expired by then (a reap or claim
    must not take a session whose owner renewed meanwhile)."""
    if current.version != expected_version:
        raise TransitionRace(current.id, expected_version)
    if (
        lease_expired_before is not None
        and current.lease_expires_at is not None
        and current.lease_expires_at >= lease_expired_before
    ):
        raise TransitionRace(current.id, expected_version)


def apply_transition(
    current: Session,
    *,
    expected_version: int,
    to_status: SessionStatus,
    reason: str,
    now: datetime,
    owner: str | Unchanged | None,
    lease_expires_at: datetime | Unchanged | None,
    stats: Stats | None,
    lease_expired_before: datetime | None = None,
) -> Session:
    """The new session after a conditional transition, or the error the contract names.

    Status is checked before version: a terminal session answers InvalidTransition
    whatever version the caller holds.
    """
    check_transition(current.id, current.status, to_status)
    check_expectation(current, expected_version, lease_expired_before)
    changes: dict[str, object] = {
        "status": to_status,
        "reason": reason,
        "version": current.version + 1,
    }
    if to_status is SessionStatus.RUNNING and current.started_at is None:
        changes["started_at"] = now
    if to_status.is_terminal:
        changes["ended_at"] = now
    if not isinstance(owner, Unchanged):
        changes["owner"] = owner
    if not isinstance(lease_expires_at, Unchanged):
        changes["lease_expires_at"] = lease_expires_at
    if stats is not None:
        changes["stats"] = stats
    return current.evolve(**changes)


def apply_start(created: Session, *, lease_expires_at: datetime, now: datetime) -> Session:
    """A just-created session moved ``pending`` → ``running`` by its owner in its create
    (``SessionStore.create_session(start_lease_until=...)``): the transition the owner's
    runner would write first, applied by the same rules."""
    return apply_transition(
        created,
        expected_version=created.version,
        to_status=SessionStatus.RUNNING,
        reason=Reason.STARTED,
        now=now,
        owner=UNCHANGED,
        lease_expires_at=lease_expires_at,
        stats=None,
    )


def apply_claim(
    current: Session,
    *,
    expected_version: int,
    owner: str,
    lease_expires_at: datetime,
    lease_expired_before: datetime | None,
) -> Session:
    """The session after a claim (``SessionStore.claim``), or the error the contract names.

    Terminal is checked first, then the version, then the lease.
    """
    if current.is_terminal:
        raise InvalidTransition(current.id, current.status.value, current.status.value)
    check_expectation(current, expected_version, lease_expired_before)
    return current.evolve(
        owner=owner, lease_expires_at=lease_expires_at, version=current.version + 1
    )


def encode_tick_cursor(key: tuple[int, int, str]) -> str:
    """The ``next_cursor`` of a data page: the last row's key (ts_us, trade_id, symbol)."""
    raw = f"{key[0]}:{key[1]}:{key[2]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_tick_cursor(cursor: str) -> tuple[int, int, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        ts, tid, symbol = base64.urlsafe_b64decode(padded.encode()).decode().split(":", 2)
        key = (int(ts), int(tid), symbol)
        if not symbol or not (_MIN_US <= key[0] <= _MAX_US) or key[1] < 0:
            raise ValueError("out of range")
        return key
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError(f"invalid cursor {clip(cursor)!r}", field="cursor") from None


DAY_US: Final = 86_400_000_000


def check_bucket_query(symbol: str | None, width_us: int, limit: int) -> str:
    """The rules of :meth:`TickStore.trade_buckets` every backend checks the same way."""
    if symbol is None:
        raise ValidationError("a chart needs one symbol", field="symbol")
    if width_us <= 0 or DAY_US % width_us != 0:
        raise ValidationError(f"bucket width {width_us} us does not divide a day", field="width_us")
    check_limit(limit, MAX_DATA_LIMIT)
    return symbol


def bucket_trades(
    rows: list[tuple[int, float, float]], width_us: int, limit: int
) -> list[TradeBucket]:
    """``(ts_us, price, qty)`` rows, already in time order, summed into epoch-aligned
    buckets of ``width_us`` (at most ``limit``, oldest first)."""
    out: list[TradeBucket] = []
    current: list[float] = []  # open, high, low, close, count, volume
    start_us: int | None = None
    for ts, px, qty in rows:
        bucket = ts - ts % width_us
        if bucket != start_us:
            if start_us is not None:
                out.append(_bucket(start_us, current))
                if len(out) == limit:
                    return out
            start_us, current = bucket, [px, px, px, px, 0, 0.0]
        current[1] = max(current[1], px)
        current[2] = min(current[2], px)
        current[3] = px
        current[4] += 1
        current[5] += qty
    if start_us is not None:
        out.append(_bucket(start_us, current))
    return out


def _bucket(start_us: int, v: list[float]) -> TradeBucket:
    return TradeBucket(from_us(start_us), v[0], v[1], v[2], v[3], int(v[4]), v[5])


def effective(session: Session, instance_lease: datetime | None, progress: Stats | None) -> Session:
    """The session as the contract shows it (``SessionStore``, "Leases" and "Progress"):
    a non-terminal session with a lease of its own that its owner's last heartbeat
    listed (``progress`` not None) is covered by that owner's instance lease and
    shows the progress published for it."""
    if session.is_terminal or session.lease_expires_at is None or progress is None:
        return session
    changes: dict[str, object] = {}
    if instance_lease is not None and instance_lease > session.lease_expires_at:
        changes["lease_expires_at"] = instance_lease
    if progress != session.stats:
        changes["stats"] = progress
    return session.evolve(**changes) if changes else session


def dump_progress(progress: Mapping[str, Stats]) -> str:
    """An instance's published progress as stored: ``{"<id>": [trades, orderbook, errors]}``."""
    return json.dumps(
        {sid: [s.trades, s.orderbook, s.errors] for sid, s in progress.items()},
        separators=(",", ":"),
    )


def load_progress(stored: str | None) -> dict[str, Stats]:
    """A stored progress map (:func:`dump_progress`) read back."""
    if not stored:
        return {}
    return {
        sid: Stats(int(entry[0]), int(entry[1]), int(entry[2]))
        for sid, entry in json.loads(stored).items()
    }


def check_continues(part: ResultPart, orders: int, fills: int, equity: int) -> bool:
    """Whether ``part`` (:meth:`ResultStore.append`) is to be applied over ``orders`` /
    ``fills`` / ``equity`` rows of its run: True if it continues them, False if it is
    the last part already applied (a retry: nothing to do), else ValidationError."""
    starts = (part.orders_at, part.fills_at, part.equity_at)
    if starts == (orders, fills, equity):
        return True
    ends = (
        part.orders_at + len(part.orders),
        part.fills_at + len(part.fills),
        part.equity_at + len(part.equity),
    )
    if ends == (orders, fills, equity):
        return False
    raise ValidationError(
        f"results part of run {clip(part.run)!r} starts at rows {starts}, but "
        f"{(orders, fills, equity)} are stored",
        field="results",
    )
