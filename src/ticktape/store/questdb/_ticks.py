"""QuestDB tick store: columnar ILP/HTTP ingestion, visibility waits, SQL reads.

Ticks go in through the official ``questdb`` client's ``Sender.dataframe`` over
ILP/HTTP (errors are reported and retried by the client; a flush returns on the
server's acknowledgement). WAL tables apply commits later, so "visible" is a
separate step: :meth:`wait_visible` waits until ``wal_tables()`` shows every
acknowledged transaction applied — and reports a suspended table instead of
waiting for ever.

Fencing has two halves. A check of the session's newest log row just before
sending refuses a stale owner. ILP has no transaction to hold the log, so an
owner paused between check and send can still land a batch after it was reaped
or claimed; every row therefore carries its writer's tenure and batch number,
and reads leave out what landed past a sealed tenure's fence
(``_fence.py``). One request's tables commit on their own, so every row also says
what its send carried for its session (:class:`SendMark`), and a seal cuts every
table before a last send that landed in part (:meth:`QuestDBTickStore._cuts`). ILP cannot say which
rows DEDUP merged, so :meth:`write` reports rows *sent*; final stats always come from
:meth:`seal`.

Writes are sent in groups: writes that arrive while a send is under way wait
for it and then go together — one ownership check, one DataFrame and one WAL
transaction per table for all of them. Each WAL transaction costs QuestDB the
same whatever its size, so 40 sessions flushing 4 times a second one by one
(320 transactions/s) saturated two cores; grouped, the transaction rate follows
the sender's pace, not the number of sessions. While writers are concurrent, sends
are also spaced (``SEND_SPACING_S``): without it the first flush of an interval
went alone and the rest in one or two more requests, several transactions per
table and interval where one does.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from operator import attrgetter, itemgetter
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
from questdb import QuestDBError, Sender

from ticktape.config import VISIBILITY_TIMEOUT_S
from ticktape.domain import ACTIVE_STATUSES, DataType, utcnow
from ticktape.errors import (
    LeaseLost,
    StoreBusy,
    StoreError,
    StoreUnavailable,
    TicksNotVisible,
    WriteTimedOut,
)
from ticktape.store.base import (
    MAX_DATA_LIMIT,
    Seal,
    TickPosition,
    TickQuery,
    TickStore,
    TradeBucket,
    WriteResult,
    bounded_write,
    gather_answers,
)
from ticktape.store.questdb._db import ERRORS, Connections, in_list, insert_rows
from ticktape.store.questdb._export import ParquetExport, inline, literal
from ticktape.store.questdb._fence import (
    NO_BATCH,
    TICK_FLOOR_MARGIN_US,
    Fence,
    Tenure,
    excluded_many,
    with_late_rows,
)
from ticktape.store.questdb._grouping import Grouper, Waiting
from ticktape.store.rules import check_bucket_query, check_limit, from_us, recv_time
from ticktape.store.window import table_batches, window_batches
from ticktape.ticks import (
    BookBatch,
    BookSnapshot,
    Gap,
    GapCause,
    StreamTimes,
    TickBatch,
    TickCounts,
    Trade,
    TradeBatch,
)

log = logging.getLogger(__name__)

VISIBILITY_POLL_S = 0.005  # first poll interval of wal_tables(); doubles up to 100 ms
COMMIT_MARKS_KEPT = 256  # the tick tables' committed states kept, newest (CommitMarks)
MAX_GROUP_ROWS = 1_000_000  # ticks sent together in one grouped write, at most
# While writers are concurrent (the last group carried more than one write), a send
# starts at least this long after the previous one started: every session's flushes of
# two flush intervals (config.FLUSH_INTERVAL_S) then go in one ILP request, one WAL
# transaction per table. QuestDB's CPU follows the number of transactions far more than
# their rows: at 3 senders of 1,000 sessions each, one request per 0.25 s cost the JVM
# ~6.4 µs per tick, per 0.5 s ~4.6, per 1 s ~3.5 (docs/benchmarks.md, qcost8). A write
# waits for its group at most this long, a stop's drain so much longer; a lone writer
# is never held back.
SEND_SPACING_S = 0.5
#: Reads of the tick tables one seal makes, at most, to find them holding still
#: (``_one_state``): a lost owner's sends land one at a time and stop once it is reaped.
SEAL_READS_MAX = 5
#: Sessions counted together by one grouped count (``_count_group``), at most: the
#: parameters of its ``IN`` list and fence terms stay a few thousand.
COUNT_GROUP_MAX = 1_000
_TICK_TABLES = ("trades", "orderbook")  # the ``table`` of their symbol misses
#: The tick tables as a count reads them: an order-book snapshot is its level-0 row.
_COUNTED = (("trades", ""), ("orderbook", " AND level = 0"))
_SIDES = pd.CategoricalDtype(["sell", "buy"])
_EPOCH = datetime(1970, 1, 1)  # QuestDB timestamps come back naive, in UTC
T = TypeVar("T")


async def _all(coroutines: Sequence[Awaitable[T]]) -> list[T]:
    """The answers of ``coroutines``, run concurrently; once every one has ended, the
    first failure is raised (none is left running behind its caller's back)."""
    answers = await asyncio.gather(*coroutines, return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return cast(list[T], answers)


def _us(ts: datetime) -> int:
    """A naive UTC timestamp as exact microseconds since the epoch."""
    d = ts.replace(tzinfo=None) - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _timestamps(us: npt.NDArray[np.int64]) -> pd.DatetimeIndex:
    return pd.to_datetime(us, unit="us", utc=True)


def _factorized(values: list[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """Each value's code, and the distinct values in order of first appearance."""
    codes, uniques = pd.factorize(np.array(values, dtype=object))
    return codes.astype(np.int64, copy=False), uniques


def _category(
    factorized: tuple[npt.NDArray[np.int64], npt.NDArray[Any]],
    repeat: npt.NDArray[np.int64] | int,
) -> Any:
    """Values (as :func:`_factorized` gives them) each repeated ``repeat`` times, as a
    categorical column built from codes (``pd.Categorical`` of the repeated strings would
    hash every row's string). Categorical, not ``str`` objects: the client serialises it
    without the GIL (an object column holds the GIL, and the event loop waits on it). The
    categories are an object ``Index`` (from an array, pandas would first convert them to
    an Arrow ``str`` index) and the codes are not checked again (``factorize`` made them)."""
    codes, uniques = factorized
    dtype = pd.CategoricalDtype(pd.Index(uniques, dtype=object))
    return pd.Categorical.from_codes(np.repeat(codes, repeat), dtype=dtype, validate=False)


def _naive_us(us: npt.NDArray[np.int64]) -> npt.NDArray[np.datetime64]:
    """Microseconds since the epoch as a naive ``datetime64[us]`` column, a view of the
    same buffer: the ILP client reads naive times as UTC, which these are."""
    return us.view("datetime64[us]")


def _field(batches: Sequence[TickBatch], name: str) -> list[Any]:
    """One attribute of every batch (a C-level pass: frames read a dozen per batch)."""
    return list(map(attrgetter(name), batches))


def _lengths(arrays: list[Any]) -> npt.NDArray[np.int64]:
    return np.fromiter(map(len, arrays), np.int64, len(arrays))


@dataclass(frozen=True, slots=True)
class SendMark:
    """What one ILP send carried for one session: the send's id (on each of its rows),
    and the session's first batch ``seq`` in it and its trades and snapshots in it (on
    the session's first row in each tick table of the send: a few bytes per send, not per
    row). A seal checks a lost owner's last send against them (:meth:`QuestDBTickStore.seal`)."""

    send_id: int
    first: int
    trades: int
    books: int


def send_marks(
    send_id: int, trades: list[TradeBatch], books: list[BookBatch]
) -> dict[str, SendMark]:
    """Each session's :class:`SendMark` for one send carrying ``trades`` and ``books``."""
    first: dict[str, int] = {}
    counts: dict[str, list[int]] = {}
    for batches, column in ((trades, 0), (books, 1)):
        for b in batches:
            sid = b.session_id
            first[sid] = min(first.get(sid, b.seq), b.seq)
            counts.setdefault(sid, [0, 0])[column] += len(b)
    return {sid: SendMark(send_id, first[sid], counts[sid][0], counts[sid][1]) for sid in first}


def _fence_columns(
    batches: list[TradeBatch] | list[BookBatch],
    sessions: tuple[npt.NDArray[np.int64], npt.NDArray[Any]],
    rows: npt.NDArray[np.int64],
    tenures: dict[str, int],
    marks: dict[str, SendMark] | None,
) -> dict[str, Any]:
    """Each row's writer tenure and batch number (``_fence.py``), and its send's
    :class:`SendMark`: the id on every row, the rest on each session's first row (NULL on
    the others; no marks: the columns are left out, NULL in the table). ``sessions``:
    the batches' session ids, factorized (:func:`_factorized`); per-session values are
    looked up once per session, not per batch."""
    codes, ids = sessions
    tenure = np.fromiter((tenures[sid] for sid in ids), np.int64, len(ids))
    columns: dict[str, Any] = {
        "tenure": np.repeat(tenure[codes], rows),
        "batch_seq": np.repeat(np.fromiter(_field(batches, "seq"), np.int64, len(batches)), rows),
    }
    if marks is not None:
        total = int(rows.sum())
        send_id = next(iter(marks.values())).send_id if marks else 0
        columns["send_id"] = np.full(total, send_id, np.int64)
        starts = np.cumsum(rows) - rows  # each batch's first row
        _, first = np.unique(codes, return_index=True)  # each session's first batch
        index = starts[first]  # each session's first row in this frame, in code order
        values = np.array(
            [(m.first, m.trades, m.books) for m in map(marks.__getitem__, ids)], np.int64
        ).reshape(-1, 3)
        mask = np.ones(total, bool)  # True: NULL
        mask[index] = False
        for n, name in enumerate(("send_first", "send_trades", "send_books")):
            data = np.zeros(total, np.int64)
            data[index] = values[:, n]
            columns[name] = pd.arrays.IntegerArray(data, mask.copy())
    return columns


def _recv_column(
    batches: list[TradeBatch] | list[BookBatch], repeat: npt.NDArray[np.int64] | int
) -> Any:
    """Receive times per row (nullable: a batch without them sends nulls); ``repeat``:
    rows per batch row (an order-book snapshot is one row per level)."""
    parts = _field(batches, "recv_us")
    if all(p is not None for p in parts):
        return np.repeat(np.concatenate(parts), repeat)
    filled = [
        p.astype(np.float64) if p is not None else np.full(len(ts), np.nan, dtype=np.float64)
        for p, ts in zip(parts, _field(batches, "ts_us"), strict=True)
    ]
    return pd.array(np.repeat(np.concatenate(filled), repeat), dtype="Int64")


# The frames are built with a fixed number of numpy calls per column whatever the number
# of batches (a grouped send carries hundreds of sessions' small batches: calls per
# batch were most of an instance's CPU at a few hundred sessions).


def trades_frame(
    batches: list[TradeBatch],
    tenures: dict[str, int],
    marks: dict[str, SendMark] | None = None,
) -> pd.DataFrame:
    """One DataFrame for many trade batches, in the column layout of ``tt_trades``;
    ``tenures`` maps each session to the tenure its writer checked, ``marks`` to what
    the send carries for it (:func:`send_marks`)."""
    ts_us = _field(batches, "ts_us")
    n = _lengths(ts_us)
    sessions = _factorized(_field(batches, "session_id"))
    return pd.DataFrame(
        {
            "session_id": _category(sessions, n),
            "symbol": _category(_factorized(_field(batches, "symbol")), n),
            "trade_id": np.concatenate(_field(batches, "trade_id")),
            "price": np.concatenate(_field(batches, "price")),
            "qty": np.concatenate(_field(batches, "qty")),
            "side": pd.Categorical.from_codes(
                (np.concatenate(_field(batches, "side")) > 0).view(np.int8), dtype=_SIDES
            ),
            "ts": _naive_us(np.concatenate(ts_us)),
            **_fence_columns(batches, sessions, n, tenures, marks),
            "recv_us": _recv_column(batches, 1),
        },
        copy=False,  # every column is a new array: no copy into 2-D blocks
    )


_BOOK_SIDES = ("bid_price", "bid_qty", "ask_price", "ask_qty")


def book_frame(
    batches: list[BookBatch],
    tenures: dict[str, int],
    marks: dict[str, SendMark] | None = None,
) -> pd.DataFrame:
    """Snapshots exploded to one row per level, the layout of ``tt_orderbook``
    (``tenures`` and ``marks`` as for :func:`trades_frame`)."""
    ts_parts = _field(batches, "ts_us")
    lens = _lengths(ts_parts)
    ts_us = np.concatenate(ts_parts)
    per_snapshot: npt.NDArray[np.int64] | int
    try:  # the usual case: one depth, every side's (n, depth) arrays stack
        sides = [np.concatenate(_field(batches, side)) for side in _BOOK_SIDES]
        uniform = all(a.ndim == 2 for a in sides)
    except ValueError:  # depths differ
        uniform = False
    if uniform:
        depth = int(sides[0].shape[1])
        per_snapshot = depth
        rows = lens * depth
        level = np.tile(np.arange(depth, dtype=np.int32), len(ts_us))
        sides = [a.ravel() for a in sides]
    else:
        depths = np.fromiter((b.depth for b in batches), np.int64, len(batches))
        rows = lens * depths
        per_snapshot = np.repeat(depths, lens)
        first = np.repeat(np.cumsum(per_snapshot) - per_snapshot, per_snapshot)
        level = (np.arange(int(rows.sum()), dtype=np.int64) - first).astype(np.int32)
        sides = [
            np.concatenate([getattr(b, side).ravel() for b in batches]) for side in _BOOK_SIDES
        ]
    sessions = _factorized(_field(batches, "session_id"))
    return pd.DataFrame(
        {
            "session_id": _category(sessions, rows),
            "symbol": _category(_factorized(_field(batches, "symbol")), rows),
            "level": level,
            "bid_price": sides[0],
            "bid_qty": sides[1],
            "ask_price": sides[2],
            "ask_qty": sides[3],
            "ts": _naive_us(np.repeat(ts_us, per_snapshot)),
            **_fence_columns(batches, sessions, rows, tenures, marks),
            "recv_us": _recv_column(batches, per_snapshot),
        },
        copy=False,  # every column is a new array: no copy into 2-D blocks
    )


def serialise_frame(target: Any, table: str, frame: pd.DataFrame) -> None:
    """Add ``frame`` (from :func:`trades_frame` or :func:`book_frame`) to ``target``'s ILP
    buffer as rows of ``table``: a ``Sender``, or a client ``Buffer`` (``bench/ticksend.py``
    measures the serialisation without a server)."""
    target.dataframe(
        frame,
        table_name=table,
        symbols=["session_id", "symbol", *(["side"] if "side" in frame.columns else [])],
        at="ts",
    )


@dataclass
class _WalRead(Waiting[dict[str, tuple[int, int, bool]]]):
    """One caller's wait for the tick tables' WAL state (``_wal_state``)."""


class CommitMarks:
    """What the tick tables had committed — each table's ``sequencerTxn`` — by known
    times: each read of their WAL state, marked with the time (this process's wall
    clock) just before it was sent, so it covers every commit acknowledged by then. The
    newest ``kept`` of them, in order of that time.

    A wait for what was committed by a past time (``wait_visible(committed_by=...)``)
    takes the earliest mark at or after it: a later one would add other writers' newer
    commits, a target that keeps moving under load (docs/resilience.md, "Sealing")."""

    def __init__(self, kept: int = COMMIT_MARKS_KEPT) -> None:
        if kept < 1:
            raise ValueError(f"CommitMarks keeps at least one mark, not {kept}")
        self._kept = kept
        self._marks: list[tuple[datetime, dict[str, int]]] = []

    def __len__(self) -> int:
        return len(self._marks)

    def add(self, began: datetime, committed: dict[str, int]) -> None:
        """Note ``committed`` (table -> sequencerTxn), read by a query sent after ``began``."""
        bisect.insort(self._marks, (began, dict(committed)), key=itemgetter(0))
        del self._marks[: -self._kept]

    def as_of(self, committed_by: datetime) -> dict[str, int] | None:
        """The earliest mark read at or after ``committed_by`` (None: no such mark)."""
        at = bisect.bisect_left(self._marks, committed_by, key=itemgetter(0))
        return dict(self._marks[at][1]) if at < len(self._marks) else None


@dataclass(frozen=True, slots=True)
class _Counted:
    """One session's stored ticks as a seal or count reads them: its tenure, per tick
    table the rows counted and the current tenure's last batch, and the current
    tenure's last gap ``write_seq``."""

    tenure: Tenure
    tables: dict[str, tuple[int, int]]
    last_gap: int
    # left out: a lost owner's last send, landed in part
    cut: TickCounts = field(default_factory=TickCounts)

    def counts(self) -> TickCounts:
        return TickCounts(self.tables["trades"][0], self.tables["orderbook"][0])


@dataclass
class _Count(Waiting[_Counted]):
    """One caller's count of one session's ticks, waiting for the next grouped count;
    ``sealing``: for a seal, which also checks the current tenure's last send unless
    ``acknowledged`` (its owner saw every send of the tenure acknowledged, then visible:
    :meth:`QuestDBTickStore.seal`)."""

    session_id: str
    sealing: bool = False
    acknowledged: bool = False
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class _LastSend:
    """Per tick table, the current tenure's rows as a seal reads them: rows, last batch,
    and the newest ``send_id`` and ``send_first`` (None: rows of a build without them)."""

    rows: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    send_id: int | None = None
    first: int | None = None
    newest: dict[str, int] = field(default_factory=dict)  # per table, its newest send_id

    def saw(self, table: str, rows: int, last: int, send_id: Any, first: Any) -> None:
        self.rows[table] = rows
        self.last[table] = last
        if send_id is not None:
            self.newest[table] = int(send_id)
        if send_id is not None and (self.send_id is None or int(send_id) > self.send_id):
            self.send_id = int(send_id)
        if first is not None and (self.first is None or int(first) > self.first):
            self.first = int(first)


def _complete(last: _LastSend, sends: dict[str, list[tuple[Any, ...]]]) -> bool:
    """Whether the current tenure's newest send (``last.send_id``) is in every tick table.

    ``sends``: per tick table, rows ``(send_id, rows, send_trades, send_books)`` of the
    session's rows of that send. Sends of one session are acknowledged one after another
    and a failed one is sent again from its first batch, so only the newest send can have
    landed in some tables and not in others: it is complete when every table holds as
    many of its rows as it declared.
    """
    seen = {"trades": 0, "orderbook": 0}
    declared = {"trades": 0, "orderbook": 0}
    for table, rows in sends.items():
        for send_id, count, trades, books in rows:
            if send_id is None or int(send_id) != last.send_id:
                continue
            seen[table] += int(count)
            declared["trades"] = max(declared["trades"], int(trades or 0))
            declared["orderbook"] = max(declared["orderbook"], int(books or 0))
    return seen == declared


@dataclass
class _Reading:
    """One read of both tick tables for a grouped count (:meth:`QuestDBTickStore._read_counts`).

    ``tables``: per table, each session's rows kept and current tenure's last batch;
    ``lasts``: each session's current tenure as a seal reads it; ``seen``: what each
    session's rows looked like (compared between two reads); ``sends``: per checked
    session and table, rows ``(send_id, rows, send_trades, send_books)`` of the send
    checked (:func:`_complete`)."""

    tables: dict[str, dict[str, tuple[int, int]]]
    lasts: dict[str, _LastSend]
    seen: dict[str, list[tuple[Any, ...]]]
    sends: dict[str, dict[str, list[tuple[Any, ...]]]] = field(default_factory=dict)


@dataclass
class _Locate(Waiting[TickPosition]):
    """One caller's ``position`` of one session, waiting for the next grouped read."""

    session_id: str


@dataclass
class _Write(Waiting[list[WriteResult | Exception]]):
    """One caller's writes, waiting in the queue for the next grouped send: one
    :meth:`QuestDBTickStore.write`, or a :meth:`QuestDBTickStore.write_sessions` call's
    sessions (one item, one future for all of them: a future per session per flush was
    most of the grouping's cost at a thousand sessions). Answered with one answer per
    write, in order."""

    writes: list[list[TickBatch]]
    owner: str
    rows: int  # counted once: the queue's grouping reads it per item


_ACTIVE = frozenset(s.value for s in ACTIVE_STATUSES)


#: A tick writer's view of a session from its newest log row: status, owner, tenure
#: number and tick floor (``_fence.py``; None: none kept).
_Writer = tuple[str, str, int, int | None]
#: ``QuestDBSessionStore.lower_tick_floors``: (owner, {session: (tenure, floor)}) →
#: per session None (lowered) or the error refusing its write.
LowerFloors = Callable[[str, dict[str, tuple[int, int]]], Awaitable[dict[str, Exception | None]]]


def _since(tenures: dict[str, Tenure], ids: Collection[str]) -> tuple[str, list[object]]:
    """`` AND ts >= %s`` at the smallest tick floor of ``ids`` (every row of theirs is at
    or after it, ``_fence.py``), with its parameter; nothing if one has no floor."""
    floors = [tenures[sid].floor for sid in ids]
    if not floors or any(f is None for f in floors):
        return "", []
    return " AND ts >= %s", [from_us(min(cast(list[int], floors)))]


def _floors_needed(
    group: list[_Write], writers: dict[str, _Writer]
) -> dict[str, dict[str, tuple[int, int]]]:
    """Per owner, the sessions whose rows in ``group`` go below their tick floor: the
    floor each needs (its oldest row less :data:`TICK_FLOOR_MARGIN_US`) and the tenure
    that lowers it. Rare: a feed whose clock trails the session's creation by more than
    the margin, a simulated feed started in the past, trades fetched from history."""
    kept: list[tuple[TickBatch, str, _Writer]] = []
    stamps: list[npt.NDArray[np.int64]] = []
    floors: list[int] = []
    for request in group:
        for batches in request.writes:
            for b in batches:
                row = writers.get(b.session_id)
                if row is not None and row[3] is not None:
                    kept.append((b, request.owner, row))
                    stamps.append(b.ts_us)
                    floors.append(row[3])
    needed: dict[str, dict[str, tuple[int, int]]] = {}
    # every batch's oldest row at once: a min() per batch cost ~1.2 µs, this ~0.4 (a few
    # batches per tick at the simulated feed's block sizes)
    lengths = np.fromiter(map(len, stamps), np.int64, len(stamps))
    nonempty = np.flatnonzero(lengths)
    if not len(nonempty):
        return needed
    starts = np.zeros(len(stamps), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    oldest = np.minimum.reduceat(np.concatenate(stamps), starts[nonempty])
    below = nonempty[oldest < np.asarray(floors, np.int64)[nonempty]]
    for i in below.tolist():
        b, owner, row = kept[i]
        if row[0] not in _ACTIVE or row[1] != owner:
            continue  # refused anyway (``_refusal``)
        mine = needed.setdefault(owner, {})
        floor = int(b.ts_us.min()) - TICK_FLOOR_MARGIN_US
        known = mine.get(b.session_id)
        if known is None or floor < known[1]:
            mine[b.session_id] = (row[2], floor)
    return needed


def _refusal(batches: list[TickBatch], owner: str, writers: dict[str, _Writer]) -> LeaseLost | None:
    """Why ``owner`` may not write ``batches`` (a stale owner), or None; ``writers`` as
    from :meth:`QuestDBTickStore._writers`."""
    checked = None
    for b in batches:
        session_id = b.session_id
        if session_id == checked:
            continue
        row = writers.get(session_id)
        if row is None or row[0] not in _ACTIVE or row[1] != owner:
            detail = "unknown session" if row is None else f"status {row[0]}, owner {row[1]}"
            return LeaseLost(session_id, owner, f"tick write rejected ({detail})")
        checked = session_id
    return None


_NOTHING = WriteResult()  # the answer to a write with no rows


def _group_size(queue: list[_Write]) -> int:
    """Items from the front of the queue that fit in one send (at least one)."""
    rows = 0
    for n, request in enumerate(queue):
        rows += request.rows
        if n and rows > MAX_GROUP_ROWS:
            return n
    return len(queue)


def _chunks(writes: list[list[TickBatch]], rows: list[int]) -> list[tuple[int, int, int]]:
    """``writes`` cut into runs of at most ``MAX_GROUP_ROWS`` rows (at least one write
    each), as ``(start, stop, rows)``: one send never carries more (a backlog of every
    session's ``flush_rows`` would otherwise go in one request)."""
    chunks: list[tuple[int, int, int]] = []
    start = total = 0
    for i, n in enumerate(rows):
        if i > start and total + n > MAX_GROUP_ROWS:
            chunks.append((start, i, total))
            start, total = i, 0
        total += n
    chunks.append((start, len(rows), total))
    return chunks


def _stride(width_us: int) -> str:
    """A SAMPLE BY stride in its coarsest whole unit (a count must fit a 32-bit int)."""
    for unit, us in (
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("T", 1_000),
    ):
        if width_us % us == 0:
            return f"{width_us // us}{unit}"
    return f"{int(width_us)}U"


class QuestDBTickStore(TickStore):
    """Ticks in QuestDB's WAL tables, sent over ILP/HTTP after an ownership check.

    Testing hook: :attr:`before_send`, if set, is called in the sender thread after a
    group's ownership check passed and before its rows go out — a test blocks in it
    to reproduce an owner stalled between the two (tests/integration/test_questdb_fencing.py).
    :attr:`before_gap_write`, if set, is awaited likewise between a gap write's ownership
    check and its insert. :attr:`on_count_group`, if set, is called with the session ids
    of each grouped count (``seal`` and ``count`` of sessions queued together): a test
    counts the queries a shutdown's seals cost (tests/integration/test_shutdown_scale.py);
    :attr:`seal_checks` counts the seals that checked the last send.
    :attr:`split_send`, if set, sends each tick table's rows of a group in an ILP request of
    its own and is called in the sender thread with the table's name before each: a test
    blocks in it to land one table's rows of a send before a seal and the other's after,
    as a multi-table request whose tables commit on their own can
    (tests/integration/test_questdb_split_send.py).
    :attr:`after_read`, if set, is awaited after each tick read with the read's label
    (``"count ticks"`` once per tick table of each read of a grouped count, ``"seal cut"``,
    …): a test lands a lost owner's send between two reads of one seal
    (tests/integration/test_questdb_seal_reads.py).
    :attr:`on_count_rows`, if set, is called with a tick table's name and the rows of each
    read of a grouped count by the ``session_id`` symbol, and returns the rows to use: a
    test drops a session's rows to play QuestDB's missed symbol lookup
    (tests/integration/test_questdb_seal_reads.py); :attr:`count_rechecked` and
    :attr:`count_confirmed` count the seal's reads again by string (:meth:`_found_again`).
    The product sets none of them.
    """

    before_send: Callable[[], None] | None = None
    split_send: Callable[[str], None] | None = None
    before_gap_write: Callable[[], Awaitable[None]] | None = None
    on_count_group: Callable[[list[str]], None] | None = None
    after_read: Callable[[str], Awaitable[None]] | None = None
    on_count_rows: Callable[[str, list[tuple[Any, ...]]], list[tuple[Any, ...]]] | None = None
    #: Sessions whose seal checked the tenure's last send, ever (a test tells a skipped
    #: check from a made one).
    seal_checks: int = 0
    #: Reads of both tick tables by grouped counts and seals, ever (:meth:`_read_counts`).
    count_reads: int = 0

    def __init__(self, connections: Connections, lower_floors: LowerFloors) -> None:
        """``lower_floors``: the session store's ``lower_tick_floors`` (``_fence.py``)."""
        self._db = connections
        self._lower_floors = lower_floors
        self._gap_seq = 0  # the last gap write_seq this process wrote (``_fence.py``)
        self._send_id = 0  # the last send_id this process wrote (``SendMark``)
        self._sender: Sender | None = None
        self._sender_lock = threading.Lock()
        # one thread sends: the Sender is not thread-safe, and dataframe() releases the GIL
        self._pool: ThreadPoolExecutor | None = None
        self._sends: Grouper[_Write] = Grouper(
            self._send_group, _group_size, "write ticks", pause=self._space_sends
        )
        self.send_spacing_s = SEND_SPACING_S
        self._last_send = 0.0  # time.monotonic() when the last group was taken
        self._last_writes = 0  # writes in that group: more than one, writers are concurrent
        self._wal_reads: Grouper[_WalRead] = Grouper(self._read_wal_group, len, "read WAL state")
        #: What the tick tables had committed as of each WAL state read (public: tests
        #: look at the marks a wait may use).
        self.commit_marks = CommitMarks()
        # Counts of sessions that end together (a shutdown, a reaper's sweep, a claim
        # of many) go in one query per table: with no index on session_id, each count
        # scans the day's partition, and 1,000 such scans took minutes (docs/benchmarks.md).
        self._counts: Grouper[_Count] = Grouper(
            self._count_group,
            lambda q: min(len(q), COUNT_GROUP_MAX),
            "count ticks",
            pause=self._gather_seals,
        )
        # Seals announced by expect_seals and not taken in a group yet; until when to wait.
        self._seals_expected = 0
        self._seals_until = 0.0
        self._count_queued = asyncio.Event()
        # Likewise the positions of sessions resumed together (the claims of a hand-over).
        self._positions: Grouper[_Locate] = Grouper(
            self._position_group, lambda q: min(len(q), COUNT_GROUP_MAX), "tick position"
        )
        address = connections.address
        self._export = ParquetExport(
            address.ilp_url,
            address.user,
            address.password,
            lambda: connections.timeout_s,
            on_unavailable=connections.health.failed,  # as a failed PG-wire read does
        )

    async def open(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ticktape-ilp")

    async def close(self) -> None:
        await self._sends.close()
        await self._wal_reads.close()
        await self._counts.close()
        await self._positions.close()
        await self._export.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._sender_lock:
            if self._sender is not None:
                with contextlib.suppress(QuestDBError):
                    self._sender.close()
                self._sender = None

    def _send(self, frames: list[tuple[str, Callable[[], pd.DataFrame]]]) -> None:
        built = [(table, build()) for table, build in frames]
        if self.before_send is not None:
            self.before_send()
        with self._sender_lock:
            if self._sender is None:
                sender = Sender.from_conf(self._db.address.ilp_conf)
                # kept only once established: a sender whose establish() failed answers
                # every later call with "Sender is closed", one more failed try each time
                sender.establish()  # type: ignore[no-untyped-call]
                self._sender = sender
            try:
                for table, frame in built:
                    if self.split_send is not None:  # testing: each table a request of its own
                        self._sender.flush()
                        self.split_send(table)
                    serialise_frame(self._sender, table, frame)
                self._sender.flush()
            except QuestDBError:
                # the buffer may hold half a batch: drop the sender, the caller retries all
                with contextlib.suppress(QuestDBError):
                    self._sender.close(flush=False)
                self._sender = None
                raise

    async def _writers(self, session_ids: list[str]) -> dict[str, _Writer]:
        """Status, owner, tenure number and tick floor of each session, from its newest
        log row."""
        what = "check tick writer"
        async with self._db.reader(what) as conn:
            rows = await self._db.log_lookups.read(
                self._db, conn, "id, status, owner, tenure, tick_floor", session_ids, what
            )
        return {
            str(r[0]): (
                str(r[1]),
                str(r[2]),
                0 if r[3] is None else int(r[3]),
                None if r[4] is None else int(r[4]),
            )
            for r in rows
        }

    async def _lowered(
        self, group: list[_Write], writers: dict[str, _Writer]
    ) -> dict[str, Exception]:
        """Lower the tick floors ``group``'s rows need before they are sent; the sessions
        whose floor could not be lowered, with why (their writes are refused)."""
        failed: dict[str, Exception] = {}
        for owner, floors in _floors_needed(group, writers).items():
            answers = await self._lower_floors(owner, floors)
            failed.update({sid: exc for sid, exc in answers.items() if exc is not None})
        return failed

    async def write(self, batches: list[TickBatch], *, owner: str) -> WriteResult:
        batches = [b for b in batches if len(b)]
        if not batches:
            return WriteResult()
        if self._pool is None:
            raise StoreUnavailable("write ticks: the QuestDB store is not open")
        request = _Write([batches], owner, sum(len(b) for b in batches))
        self._sends.submit(request)
        try:
            [answer] = await bounded_write(request.future, self._db.timeout_s, "write ticks")
        except WriteTimedOut as exc:
            self._db.health.failed(exc)  # a hung send (a frozen server) is a failure too
            raise
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def write_sessions(
        self, writes: Sequence[list[TickBatch]], *, owner: str
    ) -> list[WriteResult | Exception]:
        """Every item queued at once, as one item of the send queue (a few where they
        hold more than ``MAX_GROUP_ROWS``): they go out in the same grouped send."""
        if self._pool is None:
            raise StoreUnavailable("write ticks: the QuestDB store is not open")
        answers: list[WriteResult | Exception] = [_NOTHING] * len(writes)
        kept: list[list[TickBatch]] = []  # the writes with rows
        at: list[int] = []  # each one's place in ``writes``
        rows: list[int] = []
        for i, batches in enumerate(writes):
            lens = [len(b) for b in batches]
            n = sum(lens)
            if not n:
                continue
            kept.append(batches if 0 not in lens else [b for b in batches if len(b)])
            at.append(i)
            rows.append(n)
        if not kept:
            return answers
        chunks = _chunks(kept, rows)
        requests = [_Write(kept[start:stop], owner, n) for start, stop, n in chunks]
        for request in requests:
            self._sends.submit(request)
        got = await gather_answers([r.future for r in requests], self._db.timeout_s, "write ticks")
        for (start, stop, _), answer in zip(chunks, got, strict=True):
            if isinstance(answer, WriteTimedOut):
                self._db.health.failed(answer)  # a hung send (a frozen server) is a failure
            places = at[start:stop]
            if isinstance(answer, Exception):  # the whole item failed: each of its writes
                for i in places:
                    answers[i] = answer
            else:
                for i, one in zip(places, answer, strict=True):
                    answers[i] = one
        return answers

    async def _space_sends(self) -> None:
        """Before a group is taken: while writers are concurrent, wait out the spacing
        since the last send, so that the writes of one flush interval go together."""
        if self._last_writes > 1:
            wait = self._last_send + self.send_spacing_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)

    async def _send_group(self, group: list[_Write]) -> None:
        """Check every write's owner in one query, send the admitted ones together.

        One pass over the group's batches refuses stale writers, splits the admitted
        batches by table and gathers each session's tenure and :class:`SendMark` and
        each write's answer."""
        self._last_send = time.monotonic()
        self._last_writes = sum(len(request.writes) for request in group)
        writers = await self._writers(
            sorted({b.session_id for request in group for w in request.writes for b in w})
        )
        unfloored = await self._lowered(group, writers)
        replies: list[list[WriteResult | Exception]] = []
        trades: list[TradeBatch] = []
        books: list[BookBatch] = []
        tenures: dict[str, int] = {}
        counts: dict[str, list[int]] = {}  # per session: first seq, trades, snapshots
        admitted = 0
        for request in group:
            reply: list[WriteResult | Exception] = []
            for batches in request.writes:
                refusal: Exception | None = _refusal(batches, request.owner, writers)
                if refusal is None and unfloored:
                    refusal = next(
                        (unfloored[b.session_id] for b in batches if b.session_id in unfloored),
                        None,
                    )
                if refusal is not None:  # this writer is stale; the others are not
                    reply.append(refusal)
                    continue
                admitted += 1
                t = k = 0
                for b in batches:
                    sid, n, seq = b.session_id, len(b), b.seq
                    c = counts.get(sid)
                    if c is None:
                        c = counts[sid] = [seq, 0, 0]
                        tenures[sid] = writers[sid][2]
                    elif seq < c[0]:
                        c[0] = seq
                    if isinstance(b, TradeBatch):
                        trades.append(b)
                        c[1] += n
                        t += n
                    else:
                        books.append(b)
                        c[2] += n
                        k += n
                reply.append(WriteResult(TickCounts(t, k)))
            replies.append(reply)
        if not admitted:
            for request, reply in zip(group, replies, strict=True):
                request.answer(reply)
            return
        # unique per process and increasing, like the gap rows' write_seq
        self._send_id = send_id = max(self._send_id + 1, time.time_ns())
        marks = {sid: SendMark(send_id, c[0], c[1], c[2]) for sid, c in counts.items()}
        # built on the sender's thread with the rows' serialising: tens of milliseconds
        # for a few thousand sessions' batches, which would hold the event loop
        frames: list[tuple[str, Callable[[], pd.DataFrame]]] = []
        if trades:
            frames.append(
                (self._db.prefixed("tt_trades"), partial(trades_frame, trades, tenures, marks))
            )
        if books:
            frames.append(
                (self._db.prefixed("tt_orderbook"), partial(book_frame, books, tenures, marks))
            )
        assert self._pool is not None  # close() cancels this task before the pool goes
        try:
            with ERRORS.wrap("write ticks"):
                await asyncio.get_running_loop().run_in_executor(self._pool, self._send, frames)
        except Exception as exc:
            if isinstance(exc, StoreUnavailable):
                self._db.health.failed(exc)
            for request, reply in zip(group, replies, strict=True):  # the refused keep theirs
                request.answer([a if isinstance(a, LeaseLost) else exc for a in reply])
            raise
        self._db.health.succeeded()
        for request, reply in zip(group, replies, strict=True):
            request.answer(reply)

    async def _wal_state(self) -> dict[str, tuple[int, int, bool]]:
        """The tick tables' WAL state, read by a query that starts after this call (so
        its ``sequencerTxn`` covers every commit acknowledged before it): concurrent
        callers (every finishing session waits for visibility, twice) share one."""
        read = _WalRead()
        self._wal_reads.submit(read)
        return await read.future

    async def _read_wal_group(self, group: list[_WalRead]) -> None:
        state = await self._read_wal_state()
        for read in group:
            read.answer(state)

    async def _read_wal_state(self) -> dict[str, tuple[int, int, bool]]:
        began = utcnow()  # before the query is sent: its state covers what was committed by then

        async def query() -> dict[str, tuple[int, int, bool]]:
            async with self._db.reader("read WAL state") as conn:
                cur = await conn.execute(
                    "SELECT name, writerTxn, sequencerTxn, suspended FROM wal_tables() "
                    f"WHERE name IN ({', '.join('%s' for _ in self._db.tick_tables)})",
                    list(self._db.tick_tables),
                )
                rows = await cur.fetchall()
                return {str(n): (int(w), int(s), bool(sus)) for n, w, s, sus in rows}

        state = await self._db.bounded(query(), "read WAL state")
        self.commit_marks.add(began, {name: seq for name, (_, seq, _) in state.items()})
        return state

    async def note_committed(self) -> None:
        """Read the tick tables' WAL state now, as a mark for later waits (CommitMarks)."""
        await self._wal_state()

    async def wait_visible(self, timeout_s: float, *, committed_by: datetime | None = None) -> None:
        """Wait until the tick tables have applied every transaction committed so far —
        or, given ``committed_by``, by then: as of the earliest mark read at or after it,
        or as of a read now if there is none (:class:`CommitMarks`)."""
        targets = self.commit_marks.as_of(committed_by) if committed_by is not None else None
        if targets is None:
            targets = {name: seq for name, (_, seq, _) in (await self._wal_state()).items()}
        deadline = time.monotonic() + timeout_s
        delay = VISIBILITY_POLL_S
        while True:
            state = await self._wal_state()
            pending = []
            for name, target in targets.items():
                writer, _, suspended = state.get(name, (target, target, False))
                if suspended:
                    raise StoreError(
                        f"QuestDB table {name} is suspended: its WAL is not being "
                        f"applied (ALTER TABLE {name} RESUME WAL after fixing the "
                        "cause); recorded ticks are not visible"
                    )
                if writer < target:
                    pending.append(f"{name} at txn {writer} < {target}")
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise TicksNotVisible(
                    f"ticks not visible after {timeout_s:g}s: {', '.join(pending)}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _scalar_rows(
        self, sql: str, params: list[object], what: str
    ) -> list[tuple[Any, ...]]:
        """Every tick read: answered within the store timeout (``TICKTAPE_STORE_TIMEOUT_S``)
        or :class:`~ticktape.errors.WriteTimedOut` (503 ``store_unavailable``), like writes."""

        async def query() -> list[tuple[Any, ...]]:
            async with self._db.reader(what) as conn:
                cur = await conn.execute(self._db.prefixed(sql), params)
                return await cur.fetchall()

        rows = await self._db.bounded(query(), what)
        if self.after_read is not None:
            await self.after_read(what)
        return rows

    async def _kept_rows(
        self,
        select: str,
        table: str,
        ids: list[str],
        tail: str,
        tenures: dict[str, Tenure],
        last_at: int,
        what: str,
        select_params: list[object] | None = None,
        *,
        column: str = "session_id",
    ) -> list[tuple[Any, ...]]:
        """``SELECT {select} FROM tt_{table} WHERE session_id IN (ids){tail}``, each
        session's rows kept by its own fences; a tick table's from the smallest tick
        floor of ``ids`` on (:func:`_since`). ``select`` starts with ``session_id,
        tenure`` and has the largest ``batch_seq`` (``write_seq`` for gaps) at ``last_at``;
        ``select_params``: the values of its placeholders; ``column``: what ``IN (ids)``
        compares (``cast(session_id AS string)``: every row's string, no symbol lookup).

        First without the fences — set lookups only; an OR term per fenced session cost
        80 times the query (16.5 s against 0.21 s over 2 M rows with 300 fenced sessions,
        docs/benchmarks.md) — then, only for the sessions found with rows past a fence
        (:func:`with_late_rows`: a stale owner's late writes, rare), again with theirs."""

        def query(sessions: list[str]) -> tuple[str, list[object]]:
            marks, padded = in_list(sessions)
            # the floor bounds tick rows; a gap row's ts is where the gap began (a few
            # rows a session, read in full)
            since, bound = ("", []) if table == "gaps" else _since(tenures, sessions)
            sql = f"SELECT {select} FROM tt_{table} WHERE {column} IN ({marks}){since}{tail}"
            return sql, [*(select_params or []), *padded, *bound]

        rows = await self._scalar_rows(*query(ids), what)
        late = with_late_rows(rows, tenures, table, last_at)
        if not late:
            return rows
        fenced, params = excluded_many({sid: tenures[sid] for sid in late}, table)
        sql, head = query(late)
        again = await self._scalar_rows(sql + fenced, [*head, *params], what)
        skip = set(late)
        return [row for row in rows if str(row[0]) not in skip] + again

    async def _tenure(self, session_id: str) -> Tenure:
        """The session's current tenure and sealed fences (none for an unknown session)."""
        return (await self._tenures([session_id]))[session_id]

    async def _tenures(self, session_ids: list[str]) -> dict[str, Tenure]:
        """Each session's current tenure and sealed fences (none for an unknown one)."""
        what = "read tick fences"

        async def query() -> list[tuple[Any, ...]]:
            async with self._db.reader(what) as conn:
                return await self._db.log_lookups.read(
                    self._db, conn, "id, tenure, fences, tick_floor", session_ids, what
                )

        rows = await self._db.bounded(query(), what)
        if self.after_read is not None:
            await self.after_read(what)
        found = {str(r[0]): Tenure.parse(r[1], r[2], r[3]) for r in rows}
        return {sid: found.get(sid, Tenure()) for sid in session_ids}

    async def _counted(
        self, session_id: str, *, sealing: bool = False, acknowledged: bool = False
    ) -> _Counted:
        """The session's stored ticks, counted with every other session's count queued
        meanwhile (one query per table for all of them)."""
        request = _Count(session_id, sealing, acknowledged)
        self._counts.submit(request)
        self._count_queued.set()
        return await request.future

    @property
    def count_rechecked(self) -> int:
        """Sealed sessions a count read found no row of in a table, read again by string
        (:meth:`_found_again`; the store's ``symbol_misses``, tick tables)."""
        return self._db.symbol_misses.of(_TICK_TABLES, "rechecked")

    @property
    def count_confirmed(self) -> int:
        """Those of them found with rows after all (QuestDB's missed lookup)."""
        return self._db.symbol_misses.of(_TICK_TABLES, "confirmed")

    def expect_seals(self, sessions: int, within_s: float) -> None:
        """See :meth:`TickStore.expect_seals`. Each count group formed while seals are
        expected first waits until every expected seal is queued — a run that ends
        without one is taken off (:meth:`seal_not_coming`) — or until ``within_s`` from
        now: a shutdown's 1,000 seals arrive over seconds, in waves as the stop requests
        commit, and taken as they came they formed several groups, each reading both
        tick tables' whole partition again while the server's network workers had
        nothing else to give (docs/questdb.md). The bound alone ends the wait for a
        runner that stalls; :meth:`seals_due_within` moves it."""
        self._seals_expected = sessions
        self._seals_until = time.monotonic() + within_s
        self._db.stop_trace.begin()

    def seals_due_within(self, within_s: float) -> None:
        """See :meth:`TickStore.seals_due_within`: the gathering's bound moves."""
        if self._seals_expected > 0:
            self._seals_until = time.monotonic() + within_s
            self._count_queued.set()  # the gathering measures what is left again

    def seal_not_coming(self) -> None:
        """See :meth:`TickStore.seal_not_coming`."""
        if self._seals_expected > 0:
            self._seals_expected -= 1
            self._count_queued.set()  # the gathering may have all it waits for now

    def seals_done(self) -> None:
        """See :meth:`TickStore.seals_done`: the stop's session-log line (its group
        commits and "table busy" retries since :meth:`expect_seals`)."""
        self._seals_expected = 0
        self._count_queued.set()
        self._db.stop_trace.end()

    async def _gather_seals(self) -> None:
        """Before a count group is taken: while seals are expected, wait for them."""
        began = time.monotonic()
        why = ""
        expected = self._seals_expected
        while self._seals_expected > 0:
            expected = self._seals_expected
            queued = sum(1 for c in self._counts.queued if c.sealing and not c.future.done())
            left = self._seals_until - time.monotonic()
            if queued >= self._seals_expected or left <= 0:
                why = "all" if queued >= self._seals_expected else "bound"
                break
            self._count_queued.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._count_queued.wait()
        if why:
            queued = sum(1 for c in self._counts.queued if c.sealing and not c.future.done())
            self._db.stop_trace.phase(
                "seal gather",
                queued=queued,
                expected=expected,
                waited_s=time.monotonic() - began,
                why=why,
            )

    async def _count_group(self, group: list[_Count]) -> None:
        """Count every session of ``group``: its tenure first, then per tick table the
        rows kept by its fences (snapshots for the order book) and its current tenure's
        last batch — each table read at one instant for all of them — then its current
        tenure's last gap. The queries start after every item of the group was queued.
        For the sessions being sealed, the current tenure's last send is checked too
        (:meth:`_cuts`) — except a seal whose sends were all acknowledged (a session
        sealed by several callers at once is checked if any of them asks) — by a second
        read of both tables that also returns the rows of the send the first found newest.

        A seal decides from one state of both tables (:meth:`_one_state`): a lost owner's
        send can land between two of its reads (each table is read by a query of its
        own), and counts, checks and cuts made from different states disagree — a
        table counted before the send and cut after it, or cut in one table where the
        other's count has it."""
        ids = sorted({c.session_id for c in group})
        taken = sum(1 for c in group if c.sealing)
        self._seals_expected = max(0, self._seals_expected - taken)
        if self.on_count_group is not None:
            self.on_count_group(ids)
        began = time.monotonic()
        reads = self.count_reads
        split: dict[str, float] = {}
        try:
            await self._count_group_read(group, ids, split)
        finally:
            took = time.monotonic() - began
            self._db.stop_trace.phase("count group", sessions=len(ids), sealing=taken, query_s=took)
            if taken:  # a seal's time, split (a reap's bound rests on it)
                log.info(
                    "seal group: %d sessions, %d sealing (%d checked); queued %.4f s; "
                    "tenures %.4f s, %d reads of the tick tables %.4f s, gaps %.4f s; "
                    "total %.4f s",
                    len(ids),
                    taken,
                    split.get("checked", 0),
                    began - min(c.queued_at for c in group),
                    split.get("tenures", float("nan")),
                    self.count_reads - reads,
                    split.get("ticks", float("nan")),
                    split.get("gaps", float("nan")),
                    took,
                )

    async def _count_group_read(
        self, group: list[_Count], ids: list[str], split: dict[str, float]
    ) -> None:
        """:meth:`_count_group`'s reads; ``split``: seconds per part, filled as they end."""
        began = time.monotonic()
        tenures = await self._tenures(ids)
        split["tenures"] = time.monotonic() - began
        sealing = sorted({c.session_id for c in group if c.sealing and not c.acknowledged})
        sealed = {c.session_id for c in group if c.sealing}
        self.seal_checks += len(sealing)
        split["checked"] = len(sealing)

        async def read_ticks() -> tuple[_Reading, dict[str, tuple[int, dict[str, int]]]]:
            start = time.monotonic()
            try:
                if sealing:
                    return await self._one_state(ids, tenures, sealing, sealed)
                return await self._read_counts(ids, tenures, marked=False, recheck=sealed), {}
            finally:
                split["ticks"] = time.monotonic() - start

        async def read_gaps() -> list[tuple[Any, ...]]:
            start = time.monotonic()
            try:
                return await self._kept_rows(
                    "session_id, tenure, max(write_seq)", "gaps", ids, "", tenures, 2, "seal gaps"
                )
            finally:
                split["gaps"] = time.monotonic() - start

        # the gaps table apart from the tick tables' reads: its rows commit on their own
        # (not WAL), and its last write_seq needs no common state with the tick tables
        done: list[Any] = await _all([read_ticks(), read_gaps()])
        reading, cuts = cast(tuple[_Reading, dict[str, tuple[int, dict[str, int]]]], done[0])
        rows = cast(list[tuple[Any, ...]], done[1])
        tables = reading.tables
        gaps = {
            str(sid): int(last)
            for sid, number, last in rows
            if last is not None and number == tenures[str(sid)].number
        }
        for request in group:
            sid = request.session_id
            found = {table: tables[table][sid] for table in tables}
            cut = TickCounts()
            if request.sealing and sid in cuts:
                batch, left_out = cuts[sid]
                # every table ends at the cut (one whose rows all come before keeps its own
                # last batch); the rows from the cut on are not counted
                found = {
                    table: (total - left_out.get(table, 0), min(batch, last))
                    for table, (total, last) in found.items()
                }
                cut = TickCounts(left_out.get("trades", 0), left_out.get("orderbook", 0))
            request.answer(_Counted(tenures[sid], found, gaps.get(sid, NO_BATCH), cut))

    async def _read_counts(
        self,
        ids: list[str],
        tenures: dict[str, Tenure],
        *,
        marked: bool,
        sends: dict[str, int] | None = None,
        recheck: Collection[str] = (),
    ) -> _Reading:
        """Per tick table, each session's rows kept by its fences and its current
        tenure's last batch (one query per table for all of ``ids``); the current
        tenure's newest send too if ``marked`` (for a check: two more columns of the
        day's partition read). With ``sends`` (per session, the send to check), the
        same query also reads each of those sends' rows and marks (:func:`_complete`),
        grouped apart by a key that is NULL for every other row: the totals and the
        send's rows then come from one state of the table. The sessions of ``recheck``
        (those being sealed) that a table's read found no row of are read again by
        string (:meth:`_found_again`)."""
        select = "session_id, tenure, count(), max(batch_seq)"
        params: list[object] = []
        if marked:
            select += ", max(send_id), max(send_first)"
        newest = sends or {}
        checked = sorted(set(newest.values()))
        if checked:
            marks, padded = in_list(checked)
            select += (
                f", CASE WHEN send_id IN ({marks}) THEN send_id "
                "END checked, max(send_trades), max(send_books)"
            )
            params = list(padded)
        reading = _Reading({}, {sid: _LastSend() for sid in ids}, {sid: [] for sid in ids})
        reading.sends = {sid: {"trades": [], "orderbook": []} for sid in newest}

        async def fetch(table: str, extra: str) -> list[tuple[Any, ...]]:
            rows = await self._kept_rows(
                select, table, ids, extra, tenures, 3, "count ticks", params
            )
            if self.on_count_rows is not None:
                rows = self.on_count_rows(table, rows)
            return rows + await self._found_again(
                select, table, extra, recheck, rows, tenures, params
            )

        self.count_reads += 1
        # both tables at once: a read's queries have no order among them, only the reads
        # do — each starts after the one before has answered (:meth:`_one_state`)
        fetched = await _all([fetch(table, extra) for table, extra in _COUNTED])
        for (table, _), rows in zip(_COUNTED, fetched, strict=True):
            # one row per session and tenure, or with ``sends`` per session, tenure and
            # checked send (NULL for the rest): merged per session and tenure here
            merged: dict[tuple[str, Any], list[Any]] = {}
            for sid, number, count, last, *rest in rows:
                send = rest[:2] if marked else [None, None]
                if checked and rest[2] is not None and int(rest[2]) == newest.get(str(sid)):
                    reading.sends[str(sid)][table].append((rest[2], count, rest[3], rest[4]))
                key = (str(sid), number)
                if key not in merged:
                    merged[key] = [int(count), last, *send]
                    continue
                into = merged[key]
                into[0] += int(count)
                for n, value in enumerate([last, *send], 1):
                    if value is not None and (into[n] is None or value > into[n]):
                        into[n] = value
            counted = {sid: (0, NO_BATCH) for sid in ids}
            for (sid, number), (count, last, send_id, first) in merged.items():
                if marked:
                    reading.seen[sid].append((table, number, count, last, send_id, first))
                else:
                    reading.seen[sid].append((table, number, count, last))
                total, mine = counted[sid]
                if number == tenures[sid].number and last is not None:
                    mine = int(last)
                    reading.lasts[sid].saw(table, count, mine, send_id, first)
                counted[sid] = (total + count, mine)
            reading.tables[table] = counted
        for seen in reading.seen.values():
            seen.sort(key=repr)
        return reading

    async def _found_again(
        self,
        select: str,
        table: str,
        tail: str,
        recheck: Collection[str],
        rows: list[tuple[Any, ...]],
        tenures: dict[str, Tenure],
        params: list[object],
    ) -> list[tuple[Any, ...]]:
        """The rows, read again by ``cast(session_id AS string)``, of the sessions of
        ``recheck`` that ``rows`` (a count read of ``table`` by the ``session_id`` symbol)
        holds none of.

        QuestDB 9.3.4's lookup of a symbol's key misses for a moment while new values are
        added to the same table (docs/questdb.md, "The symbol lookup that misses"): the
        read then finds none of that session's rows, never some, and a seal would record
        0 (invariant 7). The string comparison does not look the key up. It compares every
        row, as the read by symbol already does (no index on ``session_id``), so it costs
        about one more read of the table — only when a sealed session has no row there."""
        found = {str(r[0]) for r in rows}
        missed = sorted(sid for sid in recheck if sid not in found)
        if not missed:
            return []
        again = await self._kept_rows(
            select,
            table,
            missed,
            tail,
            tenures,
            3,
            "count ticks again",
            params,
            column="cast(session_id AS string)",
        )
        confirmed = sorted({str(r[0]) for r in again})
        self._db.symbol_misses.add(table, len(missed), len(confirmed))
        if confirmed:
            log.warning(
                "seal: QuestDB's lookup of tt_%s's session_id symbol missed the rows of %d "
                "session(s) (first %s); found by their string value (docs/questdb.md)",
                table,
                len(confirmed),
                confirmed[0],
            )
        return again

    async def _one_state(
        self,
        ids: list[str],
        tenures: dict[str, Tenure],
        sealing: list[str],
        recheck: Collection[str] = (),
    ) -> tuple[_Reading, dict[str, tuple[int, dict[str, int]]]]:
        """The counts of ``ids`` and the cuts of ``sealing`` (:meth:`_cuts`), all taken
        from one state of both tick tables, in at most :data:`SEAL_READS_MAX` reads of
        them.

        A read (:meth:`_read_counts`) is a query per table, both at once, each returning
        per session its count, last batch and newest send. Each read after the first
        also returns, in that same query, the rows of the send the read before found
        newest: the last-send check. Two reads in a row that see the same of every
        sealed session decide: rows are never removed, and a row landing, or replaced
        by a later send of its owner, raises its session's count or newest
        ``send_id``. So each table held still between its two queries; as every query
        of the second read starts after both of the first have answered, both tables
        held still together in between, and the second read's check and totals (each
        table's from one query: one state of it) describe that one state of both.
        A cut (rare: a lost owner's last send, landed in part) reads more after the
        check; it counts only once one more read finds the tables still as they were,
        which puts those reads inside the window too. Tables that never hold still
        give up as :class:`~ticktape.errors.StoreBusy` (retried by the store handle).
        ``recheck``: as for :meth:`_read_counts`."""
        reading = await self._read_counts(ids, tenures, marked=True, recheck=recheck)
        cuts: dict[str, tuple[int, dict[str, int]]] | None = None
        for _ in range(SEAL_READS_MAX - 1):
            newest = {s: n for s in sealing if (n := reading.lasts[s].send_id) is not None}
            again = await self._read_counts(
                ids, tenures, marked=True, sends=newest, recheck=recheck
            )
            if not all(again.seen[sid] == reading.seen[sid] for sid in sealing):
                reading, cuts = again, None
                continue
            if cuts is not None:  # the cut's reads are inside the window: it holds
                return again, cuts
            cuts, more = await self._cuts(sealing, tenures, again)
            if not more:
                return again, cuts
            reading = again
        raise StoreBusy(
            f"seal: ticks of {len(sealing)} session(s) (first {sealing[0]}) still "
            f"landing after {SEAL_READS_MAX} reads of the tick tables"
        )

    async def _cuts(
        self, ids: list[str], tenures: dict[str, Tenure], reading: _Reading
    ) -> tuple[dict[str, tuple[int, dict[str, int]]], bool]:
        """Where the seal cuts each session of ``ids`` whose current tenure's newest send
        is not in every tick table (:func:`_complete`, from the rows of that send the
        ``reading`` found): everything from that send's first batch on, in every table
        (also the first part of a feed block a flush split across two sends) — the last
        batch kept, and per table the rows left out; and whether it read the tick tables
        for that (only for a session found incomplete or behind: a lost owner's last
        sends, rare: one more query per table counts what the cut leaves out)."""
        lasts = reading.lasts
        checked = [sid for sid in ids if lasts[sid].send_id is not None]
        if not checked:
            return {}, False
        found = reading.sends
        starts = {
            sid: int(lasts[sid].first or 0)
            for sid in checked
            if not _complete(lasts[sid], found[sid])
        }
        more = await self._behind(checked, tenures, lasts, starts)
        cut = sorted(starts)
        if not cut:
            return {}, more
        # Per session, tenure and batch from the smallest cut on (the cut sessions are few:
        # a lost owner's last send); each session's own cut, its current tenure and a
        # fence of that tenure (a second seal of it) are applied here.
        left_out: dict[str, dict[str, int]] = {sid: {} for sid in cut}
        since, bound = _since(tenures, cut)
        marks, padded = in_list(cut)
        for table, extra in (("trades", ""), ("orderbook", " AND level = 0")):
            rows = await self._scalar_rows(
                f"SELECT session_id, tenure, batch_seq, count() FROM tt_{table} "
                f"WHERE session_id IN ({marks}){since} "
                f"AND batch_seq >= %s{extra}",
                [*padded, *bound, min(starts.values())],
                "seal cut",
            )
            for sid, number, batch, count in rows:
                sid, tenure = str(sid), tenures[str(sid)]
                if number != tenure.number or batch < starts[sid]:
                    continue
                if any(f.tenure == number and batch > f.last(table) for f in tenure.fences):
                    continue
                left_out[sid][table] = left_out[sid].get(table, 0) + int(count)
        return {sid: (starts[sid] - 1, left_out[sid]) for sid in cut}, True

    async def _behind(
        self,
        ids: list[str],
        tenures: dict[str, Tenure],
        lasts: dict[str, _LastSend],
        starts: dict[str, int],
    ) -> bool:
        """Whether any session of ``ids`` is behind, with what follows. Sends older than
        the newest that a table still lacks (its WAL applied fewer of
        them than another table's, past the reconciler's patience): each one's first batch
        lowers the session's cut in ``starts``. Only sessions where some table's newest
        send is older than the session's newest are read, from the marks (one row per
        session, table and send) of the sends after that table's newest that declared rows
        for it.

        One query per tick table for all of them, with ``session_id IN (…)`` and, per
        lacking table, one lower bound on ``send_id`` (the smallest of their newest sends
        there; a session with no row there: every send that declared rows for it) — set
        lookups and a few comparisons per row, not a term per session (which cost 4 times the
        seal's count query at 43 M rows, docs/benchmarks.md). Each session's own bound and
        tenure are applied here."""
        tables = ("trades", "orderbook")
        newest = {sid: lasts[sid].newest for sid in ids}
        behind = sorted(
            sid
            for sid in ids
            if min(newest[sid].get(t, -1) for t in tables) < (lasts[sid].send_id or 0)
        )
        if not behind:
            return False
        terms: list[str] = []
        bounds: list[object] = []
        for lacking, declared in (("trades", "send_trades"), ("orderbook", "send_books")):
            since = {
                sid: newest[sid].get(lacking, -1)
                for sid in behind
                if newest[sid].get(lacking, -1) < (lasts[sid].send_id or 0)
            }
            if not since:
                continue
            window: list[str] = []
            bounded = [bound for bound in since.values() if bound >= 0]
            if bounded:
                window.append("send_id > %s")
                bounds.append(min(bounded))
            never = sorted(sid for sid, bound in since.items() if bound < 0)
            if never:
                listed, padded = in_list(never)
                window.append(f"session_id IN ({listed})")
                bounds.extend(padded)
            terms.append(f"({declared} > 0 AND ({' OR '.join(window)}))")
        marks: dict[str, dict[int, tuple[int, int, int]]] = {sid: {} for sid in behind}
        after, floor = _since(tenures, behind)
        listed, padded = in_list(behind)
        for table in tables:
            rows = await self._scalar_rows(
                "SELECT session_id, tenure, send_id, min(send_first), max(send_trades), "
                f"max(send_books) FROM tt_{table} WHERE session_id IN "
                f"({listed}){after} AND send_first != NULL "
                f"AND ({' OR '.join(terms)})",
                [*padded, *floor, *bounds],
                "seal sends behind",
            )
            for sid, number, send_id, first, trades, books in rows:
                if number != tenures[str(sid)].number:
                    continue
                old = marks[str(sid)].get(int(send_id), (int(first), 0, 0))
                marks[str(sid)][int(send_id)] = (
                    min(old[0], int(first)),
                    max(old[1], int(trades or 0)),
                    max(old[2], int(books or 0)),
                )
        for sid, sends in marks.items():
            for send_id, (first, trades, books) in sends.items():
                missing = (trades and send_id > newest[sid].get("trades", -1)) or (
                    books and send_id > newest[sid].get("orderbook", -1)
                )
                if missing:
                    starts[sid] = min(starts.get(sid, first), first)
        return True

    async def count(self, session_id: str) -> TickCounts:
        return (await self._counted(session_id)).counts()

    async def fenced(self, session_id: str) -> TickCounts:
        """Rows stored past a sealed fence: a stale owner's late writes, kept out of every
        count and read (not part of the store contract; for diagnostics and the chaos run)."""
        tenure = await self._tenure(session_id)
        await self.wait_visible(VISIBILITY_TIMEOUT_S)
        raw = await self._counted_alone(session_id, Tenure(tenure.number))
        kept = await self._counted_alone(session_id, tenure)
        return TickCounts(raw[0] - kept[0], raw[1] - kept[1])

    async def _counted_alone(self, session_id: str, tenure: Tenure) -> tuple[int, int]:
        """Trades and snapshots of one session kept by ``tenure``'s fences."""
        out = []
        for table, extra in (("trades", ""), ("orderbook", " AND level = 0")):
            fenced, params = tenure.excluded(table)
            rows = await self._scalar_rows(
                f"SELECT count() FROM tt_{table} WHERE session_id = %s{extra}{fenced}",
                [session_id, *params],
                "count fenced ticks",
            )
            out.append(int(rows[0][0]) if rows and rows[0][0] is not None else 0)
        return out[0], out[1]

    async def seal(self, session_id: str, *, acknowledged: bool = False) -> Seal:
        """See :meth:`TickStore.seal`. The check of the tenure's last send (:meth:`_cuts`)
        finds a send that landed in some tick tables and not all. With ``acknowledged``
        none can have: every send of the tenure was acknowledged — each table's rows of
        it committed — and applied before the seal, so the check is left out (at a
        shutdown it scanned today's partition once or twice more per table)."""
        counted = await self._counted(session_id, sealing=True, acknowledged=acknowledged)
        fence = Fence(
            counted.tenure.number,
            counted.tables["trades"][1],
            counted.tables["orderbook"][1],
            counted.last_gap,
            counted.tenure.floor,
        )
        if counted.cut != TickCounts():
            log.warning(
                "session %s: the last send of tenure %d landed in part; sealed at batches "
                "%d (trades) and %d (order book), %d trades and %d snapshots left out",
                session_id,
                fence.tenure,
                fence.trades,
                fence.orderbook,
                counted.cut.trades,
                counted.cut.orderbook,
            )
        return Seal(counted.counts(), fence.dump(), counted.cut)

    async def position(self, session_id: str) -> TickPosition:
        # A resumed feed continues after what this returns: rows a dead owner had
        # acknowledged but QuestDB had not applied yet must be counted, or their trade
        # ids would be reused and DEDUP would overwrite them. So wait for the WAL first.
        await self.wait_visible(VISIBILITY_TIMEOUT_S)
        request = _Locate(session_id)
        self._positions.submit(request)  # read with the others queued meanwhile
        return await request.future

    async def _position_group(self, group: list[_Locate]) -> None:
        """Where each session's stored ticks end, for every session of ``group`` in one
        query per tick table (each session's fences applied to its own rows)."""
        ids = sorted({p.session_id for p in group})
        tenures = await self._tenures(ids)
        trades = await self._kept_rows(
            "session_id, tenure, symbol, max(trade_id), max(ts), max(batch_seq)",
            "trades",
            ids,
            "",
            tenures,
            5,
            "tick position",
        )
        books = await self._kept_rows(
            "session_id, tenure, max(ts), max(batch_seq)",
            "orderbook",
            ids,
            "",
            tenures,
            3,
            "tick position",
        )
        stamps: dict[str, list[datetime]] = {sid: [] for sid in ids}
        last_ids: dict[str, dict[str, int]] = {sid: {} for sid in ids}
        for sid, _tenure, symbol, trade_id, ts, _last in trades:  # a row per tenure
            if ts is not None:
                stamps[str(sid)].append(ts)
            if trade_id is not None:
                mine = last_ids[str(sid)]
                mine[str(symbol)] = max(mine.get(str(symbol), int(trade_id)), int(trade_id))
        for sid, _tenure, ts, _last in books:
            if ts is not None:
                stamps[str(sid)].append(ts)
        for request in group:
            sid = request.session_id
            last = max(stamps[sid]) if stamps[sid] else None
            request.answer(
                TickPosition(
                    last_ts=None if last is None else last.replace(tzinfo=UTC),
                    last_trade_ids=dict(last_ids[sid]),
                )
            )

    async def _range(self, query: TickQuery, table: str) -> tuple[str, list[object]]:
        fenced, fence_params = (await self._tenure(query.session_id)).excluded(table)
        clauses: list[str] = ["session_id = %s"]
        params: list[object] = [query.session_id]
        if query.symbol is not None:
            clauses.append("symbol = %s")
            params.append(query.symbol)
        if query.start is not None:
            clauses.append("ts >= %s")
            params.append(query.start)
        if query.end is not None:
            clauses.append("ts < %s")
            params.append(query.end)
        if query.after is not None:
            ts_us, tid, sym = query.after
            at = _timestamps(np.array([ts_us], np.int64))[0].to_pydatetime()
            clauses.append("ts >= %s")
            params.append(at)
            if table == "trades":
                clauses.append(
                    "(ts > %s OR (ts = %s AND (trade_id > %s OR "
                    "(trade_id = %s AND symbol::varchar > %s))))"
                )
                params += [at, at, tid, tid, sym]
            else:
                clauses.append("(ts > %s OR (ts = %s AND symbol::varchar > %s))")
                params += [at, at, sym]
        return " AND ".join(clauses) + fenced, params + fence_params

    async def read_trades(self, query: TickQuery) -> list[Trade]:
        check_limit(query.limit, MAX_DATA_LIMIT)
        where, params = await self._range(query, "trades")
        rows = await self._scalar_rows(
            f"SELECT symbol, ts, trade_id, price, qty, side, recv_us FROM tt_trades WHERE {where} "
            "ORDER BY ts, trade_id, symbol LIMIT %s",
            [*params, query.limit],
            "read trades",
        )
        return [
            Trade(
                str(sym),
                ts.replace(tzinfo=UTC),
                int(tid),
                float(px),
                float(qty),
                str(side),
                recv_time(rcv),
            )
            for sym, ts, tid, px, qty, side, rcv in rows
        ]

    async def trade_span(self, session_id: str, symbol: str) -> tuple[datetime, datetime] | None:
        where, params = await self._range(TickQuery(session_id, symbol), "trades")
        rows = await self._scalar_rows(
            f"SELECT min(ts), max(ts) FROM tt_trades WHERE {where}", params, "read trade span"
        )
        if not rows or rows[0][0] is None:
            return None
        return rows[0][0].replace(tzinfo=UTC), rows[0][1].replace(tzinfo=UTC)

    async def trade_buckets(self, query: TickQuery, width_us: int) -> list[TradeBucket]:
        check_bucket_query(query.symbol, width_us, query.limit)
        where, params = await self._range(query, "trades")
        # Calendar alignment starts buckets at midnight UTC; a width that divides a
        # day makes those the epoch-aligned edges the contract names.
        rows = await self._scalar_rows(
            "SELECT ts, first(price), max(price), min(price), last(price), count(), sum(qty) "
            f"FROM tt_trades WHERE {where} SAMPLE BY {_stride(width_us)} ALIGN TO CALENDAR "
            "ORDER BY ts LIMIT %s",
            [*params, query.limit],
            "read trade buckets",
        )
        return [
            TradeBucket(
                ts.replace(tzinfo=UTC),
                float(op),
                float(hi),
                float(lo),
                float(cl),
                int(n),
                float(vol),
            )
            for ts, op, hi, lo, cl, n, vol in rows
        ]

    async def read_orderbook(self, query: TickQuery) -> list[BookSnapshot]:
        check_limit(query.limit, MAX_DATA_LIMIT)
        where, params = await self._range(query, "orderbook")
        heads = await self._scalar_rows(
            f"SELECT ts, symbol, recv_us FROM tt_orderbook WHERE {where} AND level = 0 "
            "ORDER BY ts, symbol LIMIT %s",
            [*params, query.limit],
            "read order books",
        )
        if not heads:
            return []
        rows = await self._scalar_rows(
            f"SELECT ts, symbol, level, bid_price, bid_qty, ask_price, ask_qty FROM tt_orderbook "
            f"WHERE {where} AND ts >= %s AND ts <= %s ORDER BY ts, symbol, level",
            [*params, heads[0][0], heads[-1][0]],
            "read order books",
        )
        levels: dict[tuple[object, str], list[tuple[float, float, float, float]]] = {}
        for ts, sym, _level, bp, bq, ap, aq in rows:
            levels.setdefault((ts, str(sym)), []).append((bp, bq, ap, aq))
        out = []
        for ts, sym, rcv in heads:
            lv = levels.get((ts, str(sym)), [])
            out.append(
                BookSnapshot(
                    str(sym),
                    ts.replace(tzinfo=UTC),
                    tuple((b[0], b[1]) for b in lv),
                    tuple((b[2], b[3]) for b in lv),
                    recv_time(rcv),
                )
            )
        return out

    async def write_gaps(self, session_id: str, gaps: list[Gap], *, owner: str) -> None:
        if not gaps:
            return
        row = (await self._writers([session_id])).get(session_id)
        active = {s.value for s in ACTIVE_STATUSES}
        if row is None or row[0] not in active or row[1] != owner:
            detail = "unknown session" if row is None else f"status {row[0]}, owner {row[1]}"
            raise LeaseLost(session_id, owner, f"gap write rejected ({detail})")
        # An owner paused after this check can land its rows after a reap: they carry the
        # tenure checked and a write sequence past the seal's, so reads leave them out.
        tenure = row[2]
        self._gap_seq = max(self._gap_seq + 1, time.time_ns())
        write_seq = self._gap_seq
        if self.before_gap_write is not None:
            await self.before_gap_write()
        rows = [
            (
                session_id,
                *g.values(),
                _timestamps(np.array([g.start_us], np.int64))[0].to_pydatetime(),
                tenure,
                write_seq,
            )
            for g in gaps
        ]
        async with self._db.writer("write gaps") as conn:
            with ERRORS.wrap("write gaps"):
                await insert_rows(
                    conn,
                    self._db.prefixed(
                        "INSERT INTO tt_gaps (session_id, symbol, data_type, start_us, "
                        "end_us, cause, lost, detail, ts, tenure, write_seq)"
                    ),
                    rows,
                )

    async def read_times(self, session_id: str, symbol: str, data_type: DataType) -> StreamTimes:
        table = "trades" if data_type is DataType.TRADES else "orderbook"
        where, params = await self._range(TickQuery(session_id, symbol=symbol), table)
        extra, order = ("", "trade_id") if table == "trades" else (" AND level = 0", "ts")
        rows = await self._scalar_rows(
            f"SELECT ts, recv_us FROM tt_{table} WHERE {where}{extra} ORDER BY {order}",
            params,
            "read stream times",
        )
        ts = np.array([_us(r[0]) for r in rows], dtype=np.int64)
        recv = np.array([-1 if r[1] is None else int(r[1]) for r in rows], dtype=np.int64)
        return StreamTimes(ts, recv)

    async def read_gaps(self, session_id: str) -> list[Gap]:
        fenced, params = (await self._tenure(session_id)).excluded("gaps")
        rows = await self._scalar_rows(
            "SELECT symbol, data_type, start_us, end_us, cause, lost, detail FROM tt_gaps "
            f"WHERE session_id = %s{fenced} ORDER BY start_us, symbol, data_type, cause",
            [session_id, *params],
            "read gaps",
        )
        out: dict[tuple[str, str, int, str], Gap] = {}
        for sym, dt, start, end, cause, lost, detail in rows:
            key = (str(sym), str(dt), int(start), str(cause))
            if key not in out:
                out[key] = Gap(
                    str(sym),
                    DataType(str(dt)),
                    int(start),
                    int(end),
                    GapCause(str(cause)),
                    None if lost is None else int(lost),
                    "" if detail is None else str(detail),
                )
        return list(out.values())

    async def count_window(
        self,
        session_id: str,
        start_us: int,
        end_us: int,
        symbols: tuple[str, ...] | None = None,
    ) -> TickCounts:
        if symbols is not None and not symbols:
            return TickCounts()
        tenure = await self._tenure(session_id)
        where = "session_id = %s AND ts >= %s AND ts < %s"
        base: list[object] = [session_id, from_us(start_us), from_us(end_us)]
        if symbols is not None:
            where += f" AND symbol IN ({', '.join('%s' for _ in symbols)})"
            base.extend(symbols)
        counts = []
        for table, extra in (("trades", ""), ("orderbook", " AND level = 0")):
            fenced, params = tenure.excluded(table)
            rows = await self._scalar_rows(
                f"SELECT count() FROM tt_{table} WHERE {where}{extra}{fenced}",
                [*base, *params],
                "count tick window",
            )
            counts.append(int(rows[0][0]) if rows else 0)
        return TickCounts(counts[0], counts[1])

    async def read_window(
        self,
        session_id: str,
        start_us: int,
        end_us: int,
        symbols: tuple[str, ...] | None = None,
    ) -> list[TickBatch]:
        # Columnar: the window's rows come back as Parquet over HTTP /exp and are regrouped
        # in numpy (``_export.py``). :meth:`read_window_rows` is the same read over the
        # PostgreSQL wire, one Python tuple per row; a test holds the two equal.
        tenure = await self._tenure(session_id)
        # Values are written into the SQL (``/exp`` binds nothing): the table names are
        # prefixed first, so a literal is never touched by the prefix replacement, and the
        # fences (integers) are inlined on their own.
        where = (
            f" WHERE session_id = {literal(session_id)} "
            f"AND ts >= CAST({int(start_us)} AS TIMESTAMP) "
            f"AND ts < CAST({int(end_us)} AS TIMESTAMP)"
        )
        if symbols is not None:
            if not symbols:
                return []
            where += f" AND symbol IN ({', '.join(literal(s) for s in symbols)})"
        trades_sql = (
            self._db.prefixed(
                "SELECT symbol, CAST(ts AS LONG) ts, trade_id, price, qty, "
                "CASE WHEN side = 'buy' THEN 1 ELSE -1 END side FROM tt_trades"
            )
            + where
            + inline(*tenure.excluded("trades"))
        )
        levels_sql = (
            self._db.prefixed(
                "SELECT symbol, CAST(ts AS LONG) ts, level, bid_price, bid_qty, ask_price, "
                "ask_qty FROM tt_orderbook"
            )
            + where
            + inline(*tenure.excluded("orderbook"))
        )
        # both tables at once: QuestDB runs the two exports on two of its workers
        trades, levels = await asyncio.gather(
            self._export.table(trades_sql, "read tick window"),
            self._export.table(levels_sql, "read tick window"),
        )
        return table_batches(session_id, trades, levels, symbols)

    async def read_window_rows(
        self,
        session_id: str,
        start_us: int,
        end_us: int,
        symbols: tuple[str, ...] | None = None,
    ) -> list[TickBatch]:
        """:meth:`read_window` over the PostgreSQL wire, row by row: the reference the
        columnar read is tested against, and the "before" of ``bench/backtest.py``."""
        tenure = await self._tenure(session_id)
        window = [session_id, from_us(start_us), from_us(end_us)]
        fenced, params = tenure.excluded("trades")
        trades = await self._scalar_rows(
            "SELECT symbol, cast(ts AS LONG), trade_id, price, qty, "
            "CASE WHEN side = 'buy' THEN 1 ELSE -1 END "
            f"FROM tt_trades WHERE session_id = %s AND ts >= %s AND ts < %s{fenced}",
            [*window, *params],
            "read tick window",
        )
        fenced, params = tenure.excluded("orderbook")
        levels = await self._scalar_rows(
            "SELECT symbol, cast(ts AS LONG), level, bid_price, bid_qty, ask_price, ask_qty "
            f"FROM tt_orderbook WHERE session_id = %s AND ts >= %s AND ts < %s{fenced}",
            [*window, *params],
            "read tick window",
        )
        return window_batches(session_id, trades, _snapshots(levels), symbols)


def _snapshots(
    levels: list[tuple[Any, ...]],
) -> list[tuple[str, int, int, bytes, bytes, bytes, bytes]]:
    """Level rows (one per book level) regrouped into one row per snapshot, in the blob
    layout of ``window_batches`` (float64 little-endian levels, best first)."""
    grouped: dict[tuple[str, int], list[tuple[int, float, float, float, float]]] = {}
    for sym, ts, level, bp, bq, ap, aq in levels:
        grouped.setdefault((str(sym), int(ts)), []).append((int(level), bp, bq, ap, aq))
    out = []
    for (sym, ts), rows in grouped.items():
        rows.sort()
        cols = np.array([r[1:] for r in rows], dtype="<f8").T
        out.append(
            (
                sym,
                ts,
                len(rows),
                cols[0].tobytes(),
                cols[1].tobytes(),
                cols[2].tobytes(),
                cols[3].tobytes(),
            )
        )
    return out
