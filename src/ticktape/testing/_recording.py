"""Simulated recordings: the simulated exchange's ticks, and a finished collect session
holding them, written straight into a store (for backtest tests and ``bench/backtest.py``).

The recording is written with the store's fenced tick writes by an owner that then
ends the session with stats sealed from the store, as a collect runner would — so a
backtest sees a source exactly like a real recording, and the same blocks can go into
any backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from ticktape.domain import (
    DataType,
    Reason,
    Session,
    SessionConfig,
    SessionKind,
    SessionStatus,
    new_session_id,
    utcnow,
)
from ticktape.feeds.sim import SimExchange
from ticktape.store.base import Store
from ticktape.ticks import TickBatch

SIM_SYMBOLS = ("BTC_USDT", "ETH_USDT")
SIM_START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
RECORDER = "recorder/0"


def iter_sim_blocks(
    ticks: int,
    symbols: tuple[str, ...] = SIM_SYMBOLS,
    *,
    session_id: str = "source",
    seed: int = 7,
    rate_per_s: float = 1000.0,
    book_every: int = 5,
    start_us: int = SIM_START_US,
) -> Iterator[list[TickBatch]]:
    """The simulated exchange's blocks, generated as they are taken, until at least
    ``ticks`` ticks (deterministic: no wall clock)."""
    feed = SimExchange(
        session_id,
        symbols,
        seed=seed,
        rate_per_s=rate_per_s,
        book_every=book_every,
        start_us=start_us,
    )
    n = 0
    while n < ticks:
        block = feed.next_block()
        n += sum(len(b) for b in block)
        yield block


def sim_blocks(
    ticks: int, symbols: tuple[str, ...] = SIM_SYMBOLS, **options: Any
) -> list[list[TickBatch]]:
    """:func:`iter_sim_blocks` (same ``options``), all in a list."""
    return list(iter_sim_blocks(ticks, symbols, **options))


def draft_session(**overrides: Any) -> Session:
    """A pending collect session, built and not stored (``create_session`` stores it):
    one BTC_USDT on the simulated exchange, trades and order book, created now, with a
    new id; keyword arguments override any :class:`Session` field."""
    fields: dict[str, Any] = {
        "id": new_session_id(),
        "kind": SessionKind.COLLECT,
        "status": SessionStatus.PENDING,
        "symbols": ("BTC_USDT",),
        "exchange": "sim",
        "data_types": (DataType.TRADES, DataType.ORDERBOOK),
        "config": SessionConfig(),
        "created_at": utcnow(),
        **overrides,
    }
    return Session(**fields)


async def store_finished(
    store: Store,
    sessions: Iterable[Session],
    *,
    concurrency: int = 1,
    actor: str = "test",
    reason: str = Reason.START_FAILED,
) -> None:
    """Store each of ``sessions`` (pending, e.g. :func:`draft_session`) and end it
    ``failed`` the way the contract does it — ``create_session``, then one conditional
    transition — ``concurrency`` at a time: a store's history of finished sessions.

    ``sessions`` is taken lazily, one at a time, so a generator of a hundred thousand
    drafts never sits in memory whole.
    """
    pending = iter(sessions)

    async def worker() -> None:
        for session in pending:  # shared by the workers: each session is taken once
            created = await store.sessions.create_session(session, actor=actor)
            await store.sessions.transition(
                created.id,
                expected_version=created.version,
                to_status=SessionStatus.FAILED,
                actor=actor,
                reason=reason,
                lease_expires_at=None,
            )

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


async def record_source(
    store: Store,
    blocks: Iterable[list[TickBatch]],
    symbols: tuple[str, ...] = SIM_SYMBOLS,
    *,
    owner: str = RECORDER,
    lease: timedelta = timedelta(minutes=10),
    write_ticks: int = 0,
    visible_within_s: float = 30.0,
) -> Session:
    """A ``stopped`` collect session holding ``blocks`` (any session id: each batch is
    written under the new session's), its stats sealed from the store.

    ``blocks`` may be a generator: they are written as they come, in writes of at least
    ``write_ticks`` ticks (0: one write per block). ``lease`` must outlast the writing.
    """
    now = utcnow()
    draft = draft_session(
        symbols=symbols,
        created_at=now,
        reason=Reason.CREATED,
        owner=owner,
        lease_expires_at=now + lease,
    )
    created = await store.sessions.create_session(draft, actor=owner)
    running = await store.sessions.transition(
        created.id,
        expected_version=created.version,
        to_status=SessionStatus.RUNNING,
        actor=owner,
        reason=Reason.STARTED,
        lease_expires_at=utcnow() + lease,
    )
    pending: list[TickBatch] = []
    pending_ticks = 0
    for block in blocks:
        pending.extend(dataclasses.replace(b, session_id=created.id) for b in block)
        pending_ticks += sum(len(b) for b in block)
        if pending_ticks >= write_ticks:
            await store.ticks.write(pending, owner=owner)
            pending, pending_ticks = [], 0
    if pending:
        await store.ticks.write(pending, owner=owner)
    await store.ticks.wait_visible(visible_within_s)
    stopping = await store.sessions.transition(
        created.id,
        expected_version=running.version,
        to_status=SessionStatus.STOPPING,
        actor=owner,
        reason=Reason.USER_STOP,
    )
    seal = await store.ticks.seal(created.id)
    return await store.sessions.transition(
        created.id,
        expected_version=stopping.version,
        to_status=SessionStatus.STOPPED,
        actor=owner,
        reason=Reason.USER_STOP,
        stats=seal.counts.as_stats(0),
        lease_expires_at=None,
        seal=seal,
    )
