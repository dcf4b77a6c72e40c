"""SessionService: the only door to sessions (DESIGN.md, invariant 1).

Every API route, the CLI (through the API) and internal code read and change
sessions here, and this class reads the store every time: it keeps no copy of
any session. State changes are written to the store first, conditionally on
the version they were read at, and only then acted on in memory (invariant 3).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Protocol

from ticktape.config import STOP_WAIT_TIMEOUT_S, Settings
from ticktape.domain import (
    Reason,
    Session,
    SessionEvent,
    SessionSpec,
    SessionStatus,
    new_session_id,
    utcnow,
)
from ticktape.errors import SessionConflict, StopTimeout
from ticktape.metrics import Metrics
from ticktape.retry import retry_transient
from ticktape.runtime.transitions import request_stop
from ticktape.store.base import ChangePage, SessionPage, SessionQuery, Store, TickQuery
from ticktape.ticks import BookSnapshot, Trade

log = logging.getLogger(__name__)

STOP_POLL_INTERVAL_S = 0.05  # how often a waiting stop re-reads the store


class Runtime(Protocol):
    """What the service needs from the supervisor of this instance."""

    @property
    def owner(self) -> str:
        """The owner token this instance writes into the sessions it runs."""

    def launch(self, session: Session) -> None:
        """Start running a ``pending`` session this instance owns; a no-op if it runs here."""

    def request_stop(self, session_id: str) -> None:
        """Wake the local runner of this session, if any, to act on a stop now."""


class SessionService:
    def __init__(
        self, store: Store, runtime: Runtime, settings: Settings, metrics: Metrics
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._settings = settings
        self._metrics = metrics

    @property
    def owner(self) -> str:
        """The owner token of this instance: a session it runs carries it."""
        return self._runtime.owner

    async def create(self, spec: SessionSpec, *, idempotency_key: str | None = None) -> Session:
        """Write the ``pending`` session durably and visibly, hand it to the runtime, return it.

        With an ``idempotency_key`` already used, returns that earlier session unchanged
        (and, if it is still ``pending`` under this instance, launches it: the attempt that
        wrote it may have failed before it could).
        """
        started = time.perf_counter()
        now = utcnow()
        draft = Session(
            id=new_session_id(),
            kind=spec.kind,
            status=SessionStatus.PENDING,
            symbols=spec.symbols,
            exchange=spec.exchange,
            data_types=spec.data_types,
            config=spec.config,
            created_at=now,
            reason=Reason.CREATED,
            owner=self._runtime.owner,
            lease_expires_at=now + timedelta(seconds=self._settings.lease_s),
            idempotency_key=idempotency_key,
        )
        retry = self._settings.retry
        stored = await retry_transient(
            lambda: self._create_once(draft),
            what="create session",
            attempts=retry.store_attempts,
            base_s=retry.store_base_s,
            max_s=retry.store_max_s,
            on_retry=self._metrics.store_retry,
        )
        if stored.id == draft.id:
            self._runtime.launch(stored)
            self._metrics.session_created(time.perf_counter() - started)
        elif stored.status is SessionStatus.PENDING and stored.owner == self._runtime.owner:
            # A client retrying with its key after an earlier attempt was written but
            # answered with an error: that attempt launched nothing, so launch it now
            # (a no-op if it is running here; the pending → running CAS decides the rest).
            self._runtime.launch(stored)
        return stored

    async def _create_once(self, draft: Session) -> Session:
        try:
            return await self._store.sessions.create_session(draft, actor=self._runtime.owner)
        except SessionConflict:
            # A retry after an attempt that was written but whose answer was lost:
            # the session found is this very draft, not a conflict.
            found = await self._store.sessions.get_session(draft.id)
            if (found.owner, found.created_at) == (draft.owner, draft.created_at):
                return found
            raise

    async def get(self, session_id: str) -> Session:
        try:
            session = await self._store.sessions.get_session(session_id)
        except Exception:
            self._metrics.lookup(found=False)
            raise
        self._metrics.lookup(found=True)
        return session

    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        return await self._store.sessions.list_sessions(query)

    async def count(self, query: SessionQuery) -> int:
        return await self._store.sessions.count_sessions(query)

    async def changes(self, since: str | None) -> ChangePage:
        """Sessions changed since a change-feed position (see ``SessionStore.list_changed``)."""
        return await self._store.sessions.list_changed(since)

    async def events(self, session_id: str) -> list[SessionEvent]:
        return await self._store.sessions.list_events(session_id)

    async def stop(
        self,
        session_id: str,
        *,
        wait: bool = False,
        timeout_s: float = STOP_WAIT_TIMEOUT_S,
        reason: str = Reason.USER_STOP,
    ) -> Session:
        """Ask a session to stop; idempotent. A terminal session is returned unchanged.

        The request is recorded in the store (``pending``/``running`` → ``stopping``)
        before anything in memory moves; the owner — on this instance or another —
        finishes the stop (flush, then ``stopped``). With ``wait``, returns once the
        session is terminal, or raises :class:`StopTimeout` after ``timeout_s``.
        """
        session = await request_stop(
            self._store,
            session_id,
            actor=self._runtime.owner,
            reason=reason,
            policy=self._settings.retry,
            on_retry=self._metrics.store_retry,
        )
        if session.status is SessionStatus.STOPPING:
            self._runtime.request_stop(session_id)
        if not wait or session.is_terminal:
            return session
        return await self.wait_terminal(session_id, timeout_s)

    async def wait_terminal(self, session_id: str, timeout_s: float) -> Session:
        deadline = time.monotonic() + timeout_s
        while True:
            session = await self.get(session_id)
            if session.is_terminal:
                return session
            if time.monotonic() >= deadline:
                raise StopTimeout(session_id, session.status.value, timeout_s)
            await asyncio.sleep(STOP_POLL_INTERVAL_S)

    async def delete(self, session_id: str) -> Session:
        """Soft delete: only terminal sessions (409 otherwise); idempotent."""
        return await self._store.sessions.mark_deleted(session_id)

    async def trades(self, query: TickQuery) -> list[Trade]:
        await self.get(query.session_id)  # unknown id → 404, never an empty answer
        return await self._store.ticks.read_trades(query)

    async def orderbook(self, query: TickQuery) -> list[BookSnapshot]:
        await self.get(query.session_id)
        return await self._store.ticks.read_orderbook(query)
