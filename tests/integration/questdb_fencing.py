"""Set-up shared by the QuestDB fencing tests (test_questdb_fencing, test_questdb_split_send,
test_questdb_seal_reads): a session started by an owner, what a claimer and the
reconciler do to it, and an owner's send held in its sender thread at one of the
backend's testing hooks while the test seals, claims or reaps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ticktape.domain import SessionStatus, utcnow
from ticktape.store import RetryingStore
from ticktape.store.base import Seal
from ticktape.store.questdb import QuestDBTickStore
from ticktape.ticks import BookBatch, TickBatch, TickCounts, TradeBatch

LEASE = timedelta(seconds=10)


class HeldSend:
    """Holds the next ILP send of one store in its sender thread, at the testing hook
    ``hook`` of :class:`QuestDBTickStore`, called with the hook's arguments, where
    ``at(*args)`` says so: ``held`` is set once it waits there, ``gate`` lets it go."""

    def __init__(
        self, store: RetryingStore, hook: str, at: Callable[..., bool] = lambda *_: True
    ) -> None:
        ticks = store.inner.ticks
        assert isinstance(ticks, QuestDBTickStore)
        self.ticks, self.hook = ticks, hook
        self.held = asyncio.Event()
        self.gate = threading.Event()
        loop = asyncio.get_running_loop()

        def hold(*args: Any) -> None:  # in the sender thread
            if at(*args):
                loop.call_soon_threadsafe(self.held.set)
                assert self.gate.wait(30), "the test never opened the gate"

        setattr(ticks, hook, hold)

    def __enter__(self) -> HeldSend:
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(self.ticks, self.hook, None)
        self.gate.set()  # whatever happened, never leave the sender thread waiting


def paused_send(store: RetryingStore) -> HeldSend:
    """The next send of ``store`` held after its ownership check has passed."""
    return HeldSend(store, "before_send")


def half_sent(store: RetryingStore) -> HeldSend:
    """The next send of ``store`` goes table by table and waits before the order books:
    its trades are in (acknowledged by QuestDB) while its books are held."""
    return HeldSend(store, "split_send", lambda table: table.endswith("orderbook"))


async def start(store: RetryingStore, make_session: Callable[..., Any], owner: str) -> Any:
    """A session created and started by ``owner``, its lease 10 s ahead."""
    session = await store.sessions.create_session(make_session(owner=owner), actor="test")
    return await store.sessions.transition(
        session.id,
        expected_version=session.version,
        to_status=SessionStatus.RUNNING,
        actor=owner,
        reason="started",
        lease_expires_at=utcnow() + LEASE,
    )


async def claim(store: RetryingStore, session: Any, owner: str, seal: Seal | None = None) -> Any:
    """``session`` (as read before) claimed by ``owner`` for 10 s on ``seal``, or on a
    seal ``store`` takes now."""
    if seal is None:
        seal = await store.ticks.seal(session.id)
    return await store.sessions.claim(
        session.id,
        expected_version=session.version,
        owner=owner,
        lease_expires_at=utcnow() + LEASE,
        actor=owner,
        reason="owner_changed",
        seal=seal,
    )


async def reap(store: RetryingStore, session: Any) -> tuple[Seal, Any]:
    """What the reconciler does to an orphan (``session`` as read before): wait for
    visibility, seal, fail it; the seal and the session failed."""
    await store.ticks.wait_visible(30)
    seal = await store.ticks.seal(session.id)
    reaped = await store.sessions.transition(
        session.id,
        expected_version=session.version,
        to_status=SessionStatus.FAILED,
        actor="reaper",
        reason="owner_lost",
        detail=seal.note() or None,
        stats=seal.counts.as_stats(0),
        lease_expires_at=None,
        seal=seal,
    )
    return seal, reaped


def counts(batches: list[TickBatch]) -> TickCounts:
    """The trades and book snapshots in ``batches``."""
    return TickCounts(
        sum(len(b) for b in batches if isinstance(b, TradeBatch)),
        sum(len(b) for b in batches if isinstance(b, BookBatch)),
    )
