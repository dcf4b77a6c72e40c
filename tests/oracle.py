"""An oracle for recorded sessions that does not trust the stats: the simulated feed's own truth.

A session's stats are counted from the store, so "stats equal stored rows" holds by
construction and cannot catch a lost or double-counted tick. What can is what the
deterministic simulated exchange (:mod:`ticktape.feeds.sim`) promises:

- per symbol, trade ids are consecutive from 1, and a resumed recording continues
  after the last stored id — so a session's stored trade ids per symbol are exactly
  ``1..n``, each once: a lost batch is a hole, a replayed one a duplicate;
- a book snapshot follows every ``book_every``-th trade at that trade's exchange
  time — so the stored snapshots are exactly those of the stored trades;
- a run writes whole feed blocks (every symbol's trades of a block, with their
  snapshots), so every symbol has as many trades as the others;
- for a recording that was never resumed, the ticks themselves are the feed's
  output for the session's seed and configuration, trade for trade.

Rows are missing from this only where a recorded gap accounts for them, exactly:
a run whose drain budget ran out (``TICKTAPE_STOP_DRAIN_S``) sheds the tail of
each stream and records a ``stop_drain`` gap with the number of rows shed. Then
the stored trade ids of a symbol are still ``1..n`` (a shed tail is not a hole),
its stored snapshots are a prefix of those of its stored trades, and stored plus
shed is what the feed produced: whole blocks, the same for every symbol, with a
snapshot for every ``book_every``-th of those trades. Any other missing row fails.

And the runner keeps its own tally (the ``runner_tally`` event, counted as the store
acknowledged its writes): the stats must equal it, and a terminal session must have
no ``count_mismatch`` event (the runner's tally differing from the stored rows). A
runner that stopped itself on a lost lease counts its write in flight only if the
answer comes before the lease expires: a write that landed but was answered later is
in the stats (counted from the store, before anyone claimed or reaped the session)
and not in that tally, so there the stats may exceed it, never fall short of it, and
by at most that write's rows (the tally's ``unanswered_*``).

The checks read through the public store API (:func:`check_stored`) or the REST data
routes (:func:`check_served`); both end in :func:`check_recording`, which raises
``AssertionError`` saying what is wrong and returns the ticks the oracle accounts for.
Used by tests and by ``bench/chaos.py``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from ticktape.domain import DataType, Reason, Session, SessionEvent
from ticktape.feeds.sim import SimExchange
from ticktape.store.base import MAX_DATA_LIMIT, Store, TickQuery
from ticktape.ticks import Gap, GapCause, TickCounts, TradeBatch

R = TypeVar("R")
PRICE_TOLERANCE = 1e-9
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class Recording:
    """What a session asked the simulated exchange for (from its stored config)."""

    session_id: str
    symbols: tuple[str, ...]
    data_types: tuple[DataType, ...]
    seed: int
    rate_per_s: float
    book_every: int
    depth: int

    @classmethod
    def of(cls, session: Session) -> Recording:
        c = session.config
        return cls(
            session.id,
            tuple(session.symbols),
            tuple(session.data_types),
            c.seed,
            c.rate_per_s,
            c.book_every,
            c.book_depth,
        )

    @classmethod
    def from_json(cls, session: Mapping[str, Any]) -> Recording:
        c = session["config"]
        return cls(
            str(session["id"]),
            tuple(session["symbols"]),
            tuple(DataType(d) for d in session["data_types"]),
            int(c["seed"]),
            float(c["rate_per_s"]),
            int(c["book_every"]),
            int(c["book_depth"]),
        )


@dataclass
class StoredTicks:
    """A session's stored ticks, reduced to what the oracle checks."""

    # symbol -> [(trade_id, ts_us, price, qty, side)] in the order read
    trades: dict[str, list[tuple[int, int, float, float, str]]] = field(default_factory=dict)
    # symbol -> [ts_us] in the order read
    books: dict[str, list[int]] = field(default_factory=dict)

    def add_trade(
        self, symbol: str, trade_id: int, ts: datetime, p: float, q: float, s: str
    ) -> None:
        self.trades.setdefault(symbol, []).append((trade_id, _us(ts), p, q, s))

    def add_book(self, symbol: str, ts: datetime) -> None:
        self.books.setdefault(symbol, []).append(_us(ts))


def check_recording(
    rec: Recording,
    stored: StoredTicks,
    *,
    resumed: bool = False,
    tail_lost: bool = False,
    shed: Mapping[tuple[str, DataType], int] | None = None,
) -> TickCounts:
    """Assert the stored ticks are exactly what the feed produced; return their counts.

    ``resumed``: another instance continued the recording (trades after the resume
    are not a replay of the seed's first run, so only ids and snapshots are checked).
    ``tail_lost``: the owner died without flushing (a crash, a reap), so symbols may
    end one block apart and the last block's snapshots may be missing — never a hole
    or a duplicate before that.
    ``shed``: rows per (symbol, data type) that recorded gaps say were given up at the
    end of the run (:func:`shed_by_stream`); only that many, only at the tail.
    """
    shed = dict(shed or {})
    problems: list[str] = []
    strange = {symbol for symbol, _ in shed} - set(rec.symbols)
    if strange:
        problems.append(f"shed rows recorded for symbols the session did not record: {strange}")
    unknown = (set(stored.trades) | set(stored.books)) - set(rec.symbols)
    if unknown:
        problems.append(f"ticks for symbols the session did not record: {sorted(unknown)}")
    with_trades = DataType.TRADES in rec.data_types
    with_books = DataType.ORDERBOOK in rec.data_types
    if not with_trades and stored.trades:
        problems.append("trades stored for a session that does not record trades")
    if not with_books and stored.books:
        problems.append("book snapshots stored for a session that does not record the book")
    per_symbol: dict[str, int] = {}
    produced: dict[str, int] = {}  # trades the feed produced: stored + recorded as shed
    total_books = 0
    for symbol in rec.symbols:
        trades = stored.trades.get(symbol, [])
        ids = [t[0] for t in trades]
        n = len(ids)
        per_symbol[symbol] = n
        shed_trades = shed.get((symbol, DataType.TRADES), 0)
        shed_books = shed.get((symbol, DataType.ORDERBOOK), 0)
        produced[symbol] = n + shed_trades
        distinct = set(ids)
        if len(distinct) != n:
            dups = sorted({i for i in ids if ids.count(i) > 1})[:10]
            problems.append(f"{symbol}: {n - len(distinct)} duplicated trade ids, e.g. {dups}")
        expected = set(range(1, len(distinct) + 1))
        if distinct != expected:
            missing = sorted(set(range(1, max(distinct, default=0) + 1)) - distinct)
            problems.append(
                f"{symbol}: trade ids are not one range from 1: {len(missing)} missing "
                f"(e.g. {missing[:10]}), highest {max(distinct, default=0)}"
            )
        by_id = sorted(trades)
        ts_in_id_order = [t[1] for t in by_id]
        if any(b <= a for a, b in itertools.pairwise(ts_in_id_order)):
            problems.append(f"{symbol}: exchange times do not increase with trade ids")
        books = stored.books.get(symbol, [])
        total_books += len(books)
        if len(set(books)) != len(books):
            problems.append(f"{symbol}: {len(books) - len(set(books))} duplicated snapshots")
        if with_trades and with_books:
            want = sorted(t[1] for t in by_id if t[0] % rec.book_every == 0)
            have = sorted(set(books))
            if tail_lost:
                # snapshots of the newest stored block may be what a crash lost
                ok = have == want[: len(have)] and len(want) - len(have) <= _block_events(rec)
            elif shed_trades or shed_books:
                # the shed tail: a prefix is stored, and the gaps count exactly the rest
                ok = (
                    have == want[: len(have)]
                    and len(have) + shed_books == produced[symbol] // rec.book_every
                )
            else:
                ok = have == want
            if not ok:
                extra = sorted(set(have) - set(want))[:5]
                absent = sorted(set(want) - set(have))[:5]
                problems.append(
                    f"{symbol}: {len(have)} snapshots stored, {len(want)} expected for the "
                    f"stored trades (extra at {extra}, missing at {absent})"
                )
        if not resumed and with_trades and n and distinct == expected:
            problems.extend(_values_differ(rec, symbol, by_id))
    if with_trades and produced:
        counts = sorted(set(produced.values()))
        spread = counts[-1] - counts[0]
        if spread and not (tail_lost and spread <= _block_events(rec)):
            problems.append(
                "symbols hold different numbers of trades (whole blocks; stored "
                f"{per_symbol}, shed {dict(shed)})"
            )
    if problems:
        raise AssertionError(f"session {rec.session_id}: " + "; ".join(problems))
    return TickCounts(sum(per_symbol.values()), total_books)


def shed_by_stream(gaps: Iterable[Gap]) -> dict[tuple[str, DataType], int]:
    """Rows the session's ``stop_drain`` gaps record as shed, per (symbol, data type)."""
    out: dict[tuple[str, DataType], int] = {}
    for g in gaps:
        if g.cause is GapCause.STOP_DRAIN:
            assert g.lost is not None and g.lost > 0, f"a stop_drain gap without a count: {g}"
            out[(g.symbol, g.data_type)] = out.get((g.symbol, g.data_type), 0) + g.lost
    return out


def _block_events(rec: Recording) -> int:
    return SimExchange("x", rec.symbols[:1], rate_per_s=rec.rate_per_s).block_events


def _values_differ(
    rec: Recording, symbol: str, by_id: Sequence[tuple[int, int, float, float, str]]
) -> list[str]:
    """The trades are the feed's own output for this seed, trade for trade."""
    feed = SimExchange(
        rec.session_id,
        rec.symbols,
        data_types=rec.data_types,
        depth=rec.depth,
        seed=rec.seed,
        rate_per_s=rec.rate_per_s,
        book_every=rec.book_every,
        start_us=by_id[0][1],
    )
    prices: list[float] = []
    qty: list[float] = []
    side: list[int] = []
    ts: list[int] = []
    while len(prices) < len(by_id):
        for batch in feed.next_block():
            if isinstance(batch, TradeBatch) and batch.symbol == symbol:
                prices.extend(batch.price.tolist())
                qty.extend(batch.qty.tolist())
                side.extend(batch.side.tolist())
                ts.extend(batch.ts_us.tolist())
    n = len(by_id)
    got = np.array([t[2] for t in by_id]), np.array([t[3] for t in by_id])
    if not (
        np.allclose(got[0], prices[:n], rtol=0, atol=PRICE_TOLERANCE)
        and np.allclose(got[1], qty[:n], rtol=0, atol=PRICE_TOLERANCE)
    ):
        return [f"{symbol}: stored prices/quantities are not the feed's for seed {rec.seed}"]
    if [1 if t[4] == "buy" else -1 for t in by_id] != side[:n]:
        return [f"{symbol}: stored sides are not the feed's for seed {rec.seed}"]
    if [t[1] for t in by_id] != ts[:n]:
        return [f"{symbol}: stored exchange times are not the feed's spacing"]
    return []


# --------------------------------------------------------------------------- events


def runner_tallies(events: Iterable[SessionEvent | Mapping[str, Any]]) -> list[dict[str, int]]:
    """Every ``runner_tally`` the session's runners recorded, oldest first."""
    out = []
    for e in events:
        reason, detail = _reason_detail(e)
        if reason == Reason.RUNNER_TALLY:
            out.append({k: int(v) for k, v in json.loads(detail or "{}").items()})
    return out


def assert_no_count_mismatch(events: Iterable[SessionEvent | Mapping[str, Any]]) -> None:
    """No runner of the session saw a tally that differs from what the store holds."""
    mismatches = [
        detail for reason, detail in map(_reason_detail, events) if reason == Reason.COUNT_MISMATCH
    ]
    assert not mismatches, f"count_mismatch recorded: {mismatches}"


def assert_stats_match_tally(
    stats: Mapping[str, int], events: Iterable[SessionEvent | Mapping[str, Any]]
) -> None:
    """The stats (counted from the store) equal the last runner's own tally — or, if
    that runner stopped itself on a lost lease, lie between its tally and its tally plus
    the rows of the write it gave up on unanswered (``unanswered_trades``,
    ``unanswered_orderbook``; 0 in notes that have none): that write may have landed with
    the answer coming after the lease expired (module docstring). Either way the feed's
    truth (:func:`check_recording`) is what catches a lost or doubled tick.

    A session that never started running had no runner: it must have stored nothing.
    """
    events = list(events)
    assert_no_count_mismatch(events)
    if not any(_reason_detail(e)[0] == Reason.STARTED for e in events):
        assert (stats["trades"], stats["orderbook"]) == (0, 0), f"no runner, yet stats {stats}"
        return
    tallies = runner_tallies(events)
    assert tallies, "no runner_tally event: the runner's count is unknown"
    last = tallies[-1]
    counted = (stats["trades"], stats["orderbook"])
    tallied = (last["trades"], last["orderbook"])
    if _last_runner_stopped_itself(events):
        assert all(c >= t for c, t in zip(counted, tallied, strict=True)), (
            f"stats {dict(stats)} below the self-stopped runner's tally {last}"
        )
        unanswered = (last.get("unanswered_trades", 0), last.get("unanswered_orderbook", 0))
        assert all(c <= t + u for c, t, u in zip(counted, tallied, unanswered, strict=True)), (
            f"stats {dict(stats)} above the self-stopped runner's tally and unanswered {last}"
        )
        return
    assert counted == tallied, f"stats {dict(stats)} differ from the runner's tally {last}"


def _last_runner_stopped_itself(events: Sequence[SessionEvent | Mapping[str, Any]]) -> bool:
    """The last ``runner_tally`` is a self-stopped runner's: the supervisor notes
    ``lease_lost``, the tally and ``zombie_stopped`` in that order (each best effort,
    left out once the session was claimed or reaped, so either neighbour tells)."""
    reasons = [_reason_detail(e)[0] for e in events]
    at = max(i for i, reason in enumerate(reasons) if reason == Reason.RUNNER_TALLY)
    before = reasons[at - 1] if at > 0 else None
    after = reasons[at + 1] if at + 1 < len(reasons) else None
    return before == Reason.LEASE_LOST or after == Reason.ZOMBIE_STOPPED


def was_resumed(events: Iterable[SessionEvent | Mapping[str, Any]]) -> bool:
    """Another runner continued the recording: a claim (a transition, always recorded) or
    a ``resumed`` note (best effort: a failing store may have kept it out)."""
    resumed = (Reason.OWNER_CHANGED, Reason.RESUMED)
    return any(_reason_detail(e)[0] in resumed for e in events)


def _reason_detail(e: SessionEvent | Mapping[str, Any]) -> tuple[str, str | None]:
    if isinstance(e, SessionEvent):
        return e.reason, e.detail
    return str(e["reason"]), e.get("detail")


# --------------------------------------------------------------------------- readers


async def read_stored(store: Store, session_id: str) -> StoredTicks:
    """Every stored tick of the session, through the public tick store API (paged)."""
    out = StoredTicks()
    for t in await _read_all(store.ticks.read_trades, session_id):
        out.add_trade(t.symbol, t.trade_id, t.ts, t.price, t.qty, t.side)
    for b in await _read_all(store.ticks.read_orderbook, session_id):
        out.add_book(b.symbol, b.ts)
    return out


async def _read_all(
    read: Callable[[TickQuery], Awaitable[Sequence[R]]], session_id: str
) -> list[R]:
    """Every row, in pages of ``MAX_DATA_LIMIT`` that continue from the last timestamp.

    A page starts with the rows at the previous page's last timestamp (``start <= ts``):
    exactly as many as the previous page ended with are skipped — in the store's stable
    order they are the same rows — so a row stored twice is still read twice.
    """
    rows: list[R] = []
    start: datetime | None = None
    skip = 0
    while True:
        page = await read(TickQuery(session_id, start=start, limit=MAX_DATA_LIMIT))
        rows.extend(page[skip:])
        if len(page) < MAX_DATA_LIMIT:
            return rows
        last = page[-1].ts  # type: ignore[attr-defined]
        assert last != start, f"more than {MAX_DATA_LIMIT} rows at {last}: cannot page"
        start, skip = last, sum(1 for r in page if r.ts == last)  # type: ignore[attr-defined]


async def check_stored(
    store: Store, session_id: str, *, tail_lost: bool = False, tally: bool = True
) -> Session:
    """The whole oracle for a terminal session, through the store API; returns the session.

    Stored ticks are the feed's (:func:`check_recording`), the stats equal them, no
    ``count_mismatch`` was recorded, and — with ``tally`` — the stats equal the
    runner's own tally (a session its runner never finished, e.g. reaped after a
    crash, has none: pass ``tally=False``).
    """
    session = await store.sessions.get_session(session_id)
    events = await store.sessions.list_events(session_id)
    resumed = was_resumed(events)
    counts = check_recording(
        Recording.of(session),
        await read_stored(store, session_id),
        resumed=resumed,
        tail_lost=tail_lost,
        shed=shed_by_stream(await store.ticks.read_gaps(session_id)),
    )
    stats = session.stats.to_dict()
    assert (stats["trades"], stats["orderbook"]) == (counts.trades, counts.orderbook), (
        f"stats {stats} differ from the ticks the feed produced and the store holds {counts}"
    )
    assert_no_count_mismatch(events)
    if tally:
        assert_stats_match_tally(stats, events)
    return session


async def check_stored_counts(store: Store, session_id: str) -> Session:
    """The oracle's counting half, for recordings too large to read back row by row
    (millions of rows), from the store's own aggregates.

    Trade ids are unique per (session, symbol) (the stores' key) and start at 1, so
    stored trades == the sum of each symbol's highest id means every symbol holds
    exactly ``1..max``. Stored plus shed (``stop_drain`` gaps) is whole blocks — the
    same for every symbol — and the snapshots stored plus shed are one per
    ``book_every`` of those trades. Stats equal the stored rows and the runner's
    tally. Not checked here: the values and each snapshot's time (:func:`check_stored`).
    """
    session = await store.sessions.get_session(session_id)
    events = await store.sessions.list_events(session_id)
    rec = Recording.of(session)
    counts = await store.ticks.count(session_id)
    position = await store.ticks.position(session_id)
    shed = shed_by_stream(await store.ticks.read_gaps(session_id))
    last = {s: position.last_trade_ids.get(s, 0) for s in rec.symbols}
    assert set(position.last_trade_ids) <= set(rec.symbols), position.last_trade_ids
    assert counts.trades == sum(last.values()), (
        f"{counts.trades} trades stored, but the highest ids add up to {sum(last.values())}: "
        "a hole in some symbol's ids"
    )
    produced = {s: last[s] + shed.get((s, DataType.TRADES), 0) for s in rec.symbols}
    assert len(set(produced.values())) == 1, f"not whole blocks: stored {last}, shed {shed}"
    if DataType.ORDERBOOK in rec.data_types and DataType.TRADES in rec.data_types:
        shed_books = sum(n for (_, dt), n in shed.items() if dt is DataType.ORDERBOOK)
        want = sum(p // rec.book_every for p in produced.values())
        assert counts.orderbook + shed_books == want, (
            f"{counts.orderbook} snapshots stored + {shed_books} shed != {want} produced"
        )
    stats = session.stats.to_dict()
    assert (stats["trades"], stats["orderbook"]) == (counts.trades, counts.orderbook), stats
    assert_stats_match_tally(stats, events)
    return session


def check_served(
    client: Any, session_id: str, *, tail_lost: bool = False, tally: bool = True
) -> dict[str, Any]:
    """:func:`check_stored` over the REST API (``client``: an ``httpx.Client``)."""
    session: dict[str, Any] = client.get(f"/api/sessions/{session_id}").json()
    events = client.get(f"/api/sessions/{session_id}/events").json()["events"]
    stored = StoredTicks()
    for row in _all_rows(client, session_id, "trades"):
        stored.add_trade(
            row["symbol"],
            int(row["trade_id"]),
            datetime.fromisoformat(row["ts"]),
            float(row["price"]),
            float(row["qty"]),
            str(row["side"]),
        )
    for row in _all_rows(client, session_id, "orderbook"):
        stored.add_book(row["symbol"], datetime.fromisoformat(row["ts"]))
    resumed = was_resumed(events)
    counts = check_recording(
        Recording.from_json(session),
        stored,
        resumed=resumed,
        tail_lost=tail_lost,
        shed=_served_shed(client, session_id, events),
    )
    stats = session["stats"]
    assert (stats["trades"], stats["orderbook"]) == (counts.trades, counts.orderbook), (
        f"stats {stats} differ from the ticks the feed produced and the store holds {counts}"
    )
    assert_no_count_mismatch(events)
    if tally:
        assert_stats_match_tally(stats, events)
    return session


def _served_shed(
    client: Any, session_id: str, events: Iterable[Mapping[str, Any]]
) -> dict[tuple[str, DataType], int]:
    """Shed rows per stream as the REST API shows them: the quality report's known-lost
    count per stream, once the history has a ``stop_drain`` note (the simulated feed's
    other gaps never count lost rows: a restart loses none)."""
    if not any(e["reason"] == Reason.STOP_DRAIN for e in events):
        return {}
    response = client.get(f"/api/sessions/{session_id}/quality")
    assert response.status_code == 200, response.text
    return {
        (s["symbol"], DataType(s["data_type"])): int(s["lost"])
        for s in response.json()["streams"]
        if s["lost"]
    }


def _all_rows(client: Any, session_id: str, kind: str) -> list[dict[str, Any]]:
    """Every row a data route serves, paged as :func:`_read_all` pages the store."""
    rows: list[dict[str, Any]] = []
    start: str | None = None
    skip = 0
    while True:
        params: dict[str, Any] = {"limit": MAX_DATA_LIMIT}
        if start is not None:
            params["start"] = start
        response = client.get(f"/api/sessions/{session_id}/{kind}", params=params)
        assert response.status_code == 200, response.text
        page = response.json()[kind]
        rows.extend(page[skip:])
        if len(page) < MAX_DATA_LIMIT:
            return rows
        last = page[-1]["ts"]
        assert last != start, f"more than {MAX_DATA_LIMIT} rows at {last}: cannot page"
        start, skip = last, sum(1 for r in page if r["ts"] == last)
