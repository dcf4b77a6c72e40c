"""Market data as it moves through ticktape: columnar batches in, plain rows out.

Batches are columnar (numpy arrays, one batch per session and symbol) because
the hot path — feed → buffer → store — must move hundreds of thousands of ticks
per second; per-tick Python objects would cap it far lower.

A batch's ``seq`` is the number of the feed block it came in: a feed numbers its
blocks 0, 1, 2, ... and the buffer and flusher keep that order (a batch that
failed to store goes back ahead of newer ones), so within one owner's tenure a
batch is stored only after every batch with a lower number. A store whose tick
writes cannot share a transaction with the session's state (QuestDB) records the
number with each row and fences a tenure at a number: rows beyond it are a
stale owner's late writes (``TickStore.seal``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from ticktape.domain import DataType, Stats

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
Int8Array = npt.NDArray[np.int8]

SIDE_BUY = 1  # a trade's side: +1 buy, anything else (-1) sell


@dataclass(frozen=True, slots=True)
class TradeBatch:
    """Trades of one symbol in one session, in exchange-time order.

    ``ts_us`` is the exchange timestamp in microseconds since the Unix epoch;
    ``trade_id`` increases strictly within a symbol; ``side`` is +1 (buy) / -1 (sell).
    ``seq`` numbers the feed block the batch came in (module docstring).
    ``recv_us`` is each row's local receive time (µs), when the feed knows it.
    """

    session_id: str
    symbol: str
    ts_us: Int64Array
    trade_id: Int64Array
    price: Float64Array
    qty: Float64Array
    side: Int8Array
    seq: int = 0
    recv_us: Int64Array | None = None

    def __len__(self) -> int:
        return len(self.ts_us)  # 1-D: its rows (len is C; int(shape[0]) cost 6x as much)


@dataclass(frozen=True, slots=True)
class BookBatch:
    """Order-book snapshots of one symbol: ``n`` snapshots of ``depth`` levels.

    Price/quantity arrays have shape ``(n, depth)``; level 0 is the best bid/ask.
    A snapshot is identified by (session, symbol, ts_us): ``ts_us`` increases strictly.
    ``seq`` numbers the feed block the batch came in (module docstring).
    ``recv_us`` is each snapshot's local receive time (µs), when the feed knows it.
    """

    session_id: str
    symbol: str
    ts_us: Int64Array
    bid_price: Float64Array
    bid_qty: Float64Array
    ask_price: Float64Array
    ask_qty: Float64Array
    seq: int = 0
    recv_us: Int64Array | None = None

    def __len__(self) -> int:
        return len(self.ts_us)  # 1-D: its rows (len is C; int(shape[0]) cost 6x as much)

    @property
    def depth(self) -> int:
        return int(self.bid_price.shape[1]) if self.bid_price.ndim == 2 else 0


TickBatch = TradeBatch | BookBatch

# The batches' constructors for the hot path (a feed hands out thousands a second): the
# frozen dataclass's __init__ sets each field through object.__setattr__ by name, ~2.7 us
# a batch; these set the same slots through their descriptors, ~1.6 us. Same type, same
# fields, still frozen (the descriptors bypass only the frozen __setattr__, as __init__ does).
_new = object.__new__


def _setters(cls: type) -> tuple[Callable[[Any, Any], None], ...]:
    """Each field's slot setter, in the order of the dataclass's fields (and so of its
    ``__init__``'s arguments, which the constructors below follow)."""
    return tuple(getattr(cls, f.name).__set__ for f in fields(cls))


_set_t = _setters(TradeBatch)
_set_b = _setters(BookBatch)


def trade_batch(
    session_id: str,
    symbol: str,
    ts_us: Int64Array,
    trade_id: Int64Array,
    price: Float64Array,
    qty: Float64Array,
    side: Int8Array,
    seq: int = 0,
    recv_us: Int64Array | None = None,
) -> TradeBatch:
    """``TradeBatch(...)``, the same batch, made faster (see above)."""
    b: TradeBatch = _new(TradeBatch)
    s0, s1, s2, s3, s4, s5, s6, s7, s8 = _set_t
    s0(b, session_id)
    s1(b, symbol)
    s2(b, ts_us)
    s3(b, trade_id)
    s4(b, price)
    s5(b, qty)
    s6(b, side)
    s7(b, seq)
    s8(b, recv_us)
    return b


def book_batch(
    session_id: str,
    symbol: str,
    ts_us: Int64Array,
    bid_price: Float64Array,
    bid_qty: Float64Array,
    ask_price: Float64Array,
    ask_qty: Float64Array,
    seq: int = 0,
    recv_us: Int64Array | None = None,
) -> BookBatch:
    """``BookBatch(...)``, the same batch, made faster (see above)."""
    b: BookBatch = _new(BookBatch)
    s0, s1, s2, s3, s4, s5, s6, s7, s8 = _set_b
    s0(b, session_id)
    s1(b, symbol)
    s2(b, ts_us)
    s3(b, bid_price)
    s4(b, bid_qty)
    s5(b, ask_price)
    s6(b, ask_qty)
    s7(b, seq)
    s8(b, recv_us)
    return b


@dataclass(frozen=True, slots=True)
class Trade:
    symbol: str
    ts: datetime
    trade_id: int
    price: float
    qty: float
    side: str  # "buy" | "sell"
    recv: datetime | None = None  # local receive time; None where the feed gave none

    def to_dict(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "ts": self.ts.isoformat(),
            "trade_id": self.trade_id,
            "price": self.price,
            "qty": self.qty,
            "side": self.side,
            "recv": None if self.recv is None else self.recv.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    symbol: str
    ts: datetime
    bids: tuple[tuple[float, float], ...]  # (price, qty), best first
    asks: tuple[tuple[float, float], ...]
    recv: datetime | None = None  # local receive time; None where the feed gave none

    def to_dict(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "ts": self.ts.isoformat(),
            "bids": [list(level) for level in self.bids],
            "asks": [list(level) for level in self.asks],
            "recv": None if self.recv is None else self.recv.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class StreamTimes:
    """One stream's (symbol and data type) stored times, in arrival order: exchange time
    and local receive time (µs; -1 where a row has none), for the quality report."""

    ts_us: Int64Array
    recv_us: Int64Array


@dataclass(frozen=True, slots=True)
class TickCounts:
    """Rows stored for a session: trades, and order-book *snapshots* (not levels)."""

    trades: int = 0
    orderbook: int = 0

    def __add__(self, other: TickCounts) -> TickCounts:
        return TickCounts(self.trades + other.trades, self.orderbook + other.orderbook)

    def as_stats(self, errors: int) -> Stats:
        """A session's stats as stored: these counts, plus the errors it counted."""
        return Stats(self.trades, self.orderbook, errors)


def tick_counts(batches: Iterable[TickBatch]) -> TickCounts:
    """The trades and order-book snapshots in ``batches``."""
    trades = orderbook = 0
    for b in batches:
        if isinstance(b, TradeBatch):
            trades += len(b)
        else:
            orderbook += len(b)
    return TickCounts(trades, orderbook)


def side_name(side: int) -> str:
    return "buy" if side == SIDE_BUY else "sell"


class GapCause(StrEnum):
    DISCONNECT = "disconnect"  # the connection closed or failed
    STALE = "stale"  # no message for ``stale_after_s``; the feed reconnected
    SEQUENCE_BREAK = "sequence_break"  # an exchange sequence number skipped
    RESYNC = "resync"  # the book was rebuilt from a snapshot (a stale or missing one)
    OVERFLOW = "overflow"  # the consumer fell behind past the queue bound
    REFUSED = "refused"  # the exchange refused the subscription
    RESTART = "restart"  # the recording's instance was lost; another one resumed it
    STOP_DRAIN = "stop_drain"  # buffered at the end of the run, shed when the drain budget ran out


@dataclass(frozen=True, slots=True)
class Gap:
    """Data of one symbol and data type the feed did not deliver.

    ``start_us`` is the exchange time of the last row delivered before the gap
    (or the local time the gap began when nothing was delivered yet); ``end_us``
    the exchange time of the first row delivered after it. ``lost`` counts the
    exchange messages known to be missing (from its sequence numbers), ``None``
    when the exchange does not number them.
    """

    symbol: str
    data_type: DataType
    start_us: int
    end_us: int
    cause: GapCause
    lost: int | None = None
    detail: str = ""

    @property
    def duration_s(self) -> float:
        return max(0, self.end_us - self.start_us) / 1e6

    def values(self) -> tuple[str, str, int, int, str, int | None, str]:
        """Its fields as a store row holds them, in order (enums by value): ``symbol,
        data_type, start_us, end_us, cause, lost, detail``."""
        return (
            self.symbol,
            self.data_type.value,
            self.start_us,
            self.end_us,
            self.cause.value,
            self.lost,
            self.detail,
        )


@dataclass(frozen=True)
class FeedCounts:
    """What one run of a feed dropped or could not read, stored with the session.

    The collect runner writes these as ``feed_counts`` notes in the session's history
    (cumulative for its ``run``: a later note of the same run replaces an earlier one);
    the quality report sums the newest note of every run, so the numbers survive a
    restart and read the same on every instance.
    """

    run: str  # one run of a collect runner (a resumed session has several)
    duplicates: dict[str, int] = field(default_factory=dict)  # per symbol: trades dropped
    malformed: dict[str, int] = field(default_factory=dict)  # per kind: messages not read

    def dump(self) -> str:
        return json.dumps(
            {"run": self.run, "duplicates": self.duplicates, "malformed": self.malformed},
            sort_keys=True,
        )

    @classmethod
    def load(cls, text: str | None) -> FeedCounts | None:
        """The counts of a note's detail; None if it is not a readable one."""
        try:
            raw = json.loads(text or "")
            return cls(
                str(raw["run"]),
                {str(k): int(v) for k, v in raw.get("duplicates", {}).items()},
                {str(k): int(v) for k, v in raw.get("malformed", {}).items()},
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
