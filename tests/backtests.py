"""Helpers for backtest tests: record a finished collect session straight into a store.

The recording is the simulated exchange's blocks for a seed and start time, written
with the store's fenced tick writes by an owner that then ends the session with
stats sealed from the store, as a collect runner would — so a backtest sees a
source exactly like a real recording, and the same blocks can go into any backend.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

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

START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
RECORDER = "recorder/0"


def sim_blocks(
    ticks: int,
    symbols: tuple[str, ...] = ("BTC_USDT", "ETH_USDT"),
    *,
    seed: int = 7,
    rate_per_s: float = 1000.0,
    book_every: int = 5,
) -> list[list[TickBatch]]:
    """At least ``ticks`` ticks of the simulated exchange (deterministic: no wall clock)."""
    feed = SimExchange(
        "source",
        symbols,
        seed=seed,
        rate_per_s=rate_per_s,
        book_every=book_every,
        start_us=START_US,
    )
    blocks: list[list[TickBatch]] = []
    n = 0
    while n < ticks:
        block = feed.next_block()
        blocks.append(block)
        n += sum(len(b) for b in block)
    return blocks


async def record_source(
    store: Store,
    blocks: list[list[TickBatch]],
    symbols: tuple[str, ...] = ("BTC_USDT", "ETH_USDT"),
) -> Session:
    """A ``stopped`` collect session holding ``blocks``, its stats sealed from the store."""
    now = utcnow()
    draft = Session(
        id=new_session_id(),
        kind=SessionKind.COLLECT,
        status=SessionStatus.PENDING,
        symbols=symbols,
        exchange="sim",
        data_types=(DataType.TRADES, DataType.ORDERBOOK),
        config=SessionConfig(),
        created_at=now,
        reason=Reason.CREATED,
        owner=RECORDER,
        lease_expires_at=now + timedelta(minutes=10),
    )
    created = await store.sessions.create_session(draft, actor=RECORDER)
    running = await store.sessions.transition(
        created.id,
        expected_version=created.version,
        to_status=SessionStatus.RUNNING,
        actor=RECORDER,
        reason=Reason.STARTED,
        lease_expires_at=datetime.now(UTC) + timedelta(minutes=10),
    )
    for block in blocks:
        batches = [dataclasses.replace(b, session_id=created.id) for b in block]
        await store.ticks.write(batches, owner=RECORDER)
    await store.ticks.wait_visible(30.0)
    stopping = await store.sessions.transition(
        created.id,
        expected_version=running.version,
        to_status=SessionStatus.STOPPING,
        actor=RECORDER,
        reason=Reason.USER_STOP,
    )
    seal = await store.ticks.seal(created.id)
    return await store.sessions.transition(
        created.id,
        expected_version=stopping.version,
        to_status=SessionStatus.STOPPED,
        actor=RECORDER,
        reason=Reason.USER_STOP,
        stats=seal.counts.as_stats(0),
        lease_expires_at=None,
        seal=seal,
    )
