"""Fault injection at the store boundary: a store that fails the calls you choose.

:class:`FaultyStore` wraps any :class:`~ticktape.store.base.Store` and keeps both
contracts by handing every call to it, except the calls a rule picks::

    store = FaultyStore(inner)
    store.fail("transition", when=lambda **kw: kw["to_status"] is SessionStatus.STOPPED)
    store.fail("write", times=None, error=StoreBusy("injected"))  # until cleared
    store.fail("renew_instance", after=True)  # it happens, but the caller sees an error
    store.delay("write", 3.0)  # a slow store: the call waits, then goes through
    store.clear()

Operations are named by their method: ``create_session``, ``get_session``,
``list_sessions``, ``count_sessions``, ``transition``, ``claim``, ``renew_lease``,
``renew_instance`` (the heartbeat),
``add_event``, ``list_events``, ``mark_deleted``, ``find_expired``, ``find_owned``
(sessions) and ``write``, ``wait_visible``, ``count``, ``position``,
``read_trades``, ``read_orderbook`` (ticks). ``when`` receives the call's
arguments by name (``session_id``, ``to_status``, ``batches``, ``owner``, ...).

Tests use it directly; ``bench/chaos.py`` starts its servers through
:mod:`ticktape.testing.faulty_server`, which wraps the runtime's store handle in
:meth:`FaultyStore.from_spec`.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from ticktape.domain import Session, SessionEvent, SessionStatus, Stats
from ticktape.errors import StoreUnavailable, ValidationError
from ticktape.store.base import (
    MAX_CHANGES,
    UNCHANGED,
    ChangePage,
    Seal,
    SessionPage,
    SessionQuery,
    SessionStore,
    Store,
    TickPosition,
    TickQuery,
    TickStore,
    Unchanged,
    WriteResult,
)
from ticktape.ticks import BookSnapshot, TickBatch, TickCounts, Trade

T = TypeVar("T")

SESSION_OPERATIONS = frozenset(
    {
        "create_session",
        "get_session",
        "list_sessions",
        "count_sessions",
        "transition",
        "claim",
        "renew_lease",
        "renew_instance",
        "add_event",
        "list_events",
        "mark_deleted",
        "find_expired",
        "find_owned",
        "list_changed",
    }
)
TICK_OPERATIONS = frozenset(
    {"write", "wait_visible", "count", "seal", "position", "read_trades", "read_orderbook"}
)
OPERATIONS = SESSION_OPERATIONS | TICK_OPERATIONS


@dataclass
class FaultRule:
    """One way chosen calls misbehave. ``times`` None = every matching call until removed."""

    operation: str
    error: BaseException | None
    times: int | None = 1
    when: Callable[..., bool] | None = None
    after: bool = False  # run the real call first, then fail: an ambiguous outcome
    delay_s: float = 0.0
    probability: float = 1.0
    hits: int = 0  # calls this rule acted on
    calls: list[dict[str, Any]] = field(default_factory=list)  # their arguments
    removed: bool = False

    def remove(self) -> None:
        self.removed = True


class _Faults:
    def __init__(self, rng: random.Random) -> None:
        self.rules: list[FaultRule] = []
        self.rng = rng

    def add(self, rule: FaultRule) -> FaultRule:
        if rule.operation not in OPERATIONS:
            raise ValueError(f"unknown store operation {rule.operation!r}")
        self.rules.append(rule)
        return rule

    def _matching(self, operation: str, kwargs: dict[str, Any]) -> list[FaultRule]:
        chosen = []
        for rule in self.rules:
            if rule.removed or rule.operation != operation:
                continue
            if rule.times is not None and rule.hits >= rule.times:
                continue
            if rule.when is not None and not rule.when(**kwargs):
                continue
            if rule.probability < 1.0 and self.rng.random() >= rule.probability:
                continue
            rule.hits += 1
            rule.calls.append(kwargs)
            chosen.append(rule)
        return chosen

    async def call(self, operation: str, fn: Callable[..., Awaitable[T]], **kwargs: Any) -> T:
        rules = self._matching(operation, kwargs)
        delay = sum(r.delay_s for r in rules)
        if delay > 0:
            await asyncio.sleep(delay)
        failing = next((r for r in rules if r.error is not None), None)
        if failing is None:
            return await fn(**kwargs)
        assert failing.error is not None
        if failing.after:
            await fn(**kwargs)
        raise copy.copy(failing.error)


def parse_fault_spec(spec: str) -> list[tuple[str, bool, float]]:
    """``"write=0.02,transition@after=0.01"`` → ``[(operation, after, probability), ...]``.

    ``operation=p`` fails that operation with probability ``p``; ``operation@after=p``
    fails it after the real call went through (an acknowledgement lost on the way
    back). Raises :class:`~ticktape.errors.ValidationError` on anything else.
    """
    faults = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, rate = part.partition("=")
        operation, _, mode = name.strip().partition("@")
        try:
            probability = float(rate)
        except ValueError:
            probability = -1.0
        if not sep or operation not in OPERATIONS or mode not in ("", "after"):
            raise ValidationError(
                f"invalid fault {part!r}: use operation=probability or "
                f"operation@after=probability, operations: {', '.join(sorted(OPERATIONS))}",
                field="faults",
            )
        if not 0.0 <= probability <= 1.0:
            raise ValidationError(
                f"invalid fault {part!r}: probability must be 0..1", field="faults"
            )
        faults.append((operation, mode == "after", probability))
    return faults


class FaultySessionStore(SessionStore):
    def __init__(self, inner: SessionStore, faults: _Faults) -> None:
        self._inner = inner
        self._f = faults

    async def create_session(self, session: Session, *, actor: str) -> Session:
        i = self._inner
        return await self._f.call("create_session", i.create_session, session=session, actor=actor)

    async def get_session(self, session_id: str) -> Session:
        i = self._inner
        return await self._f.call("get_session", i.get_session, session_id=session_id)

    async def list_sessions(self, query: SessionQuery) -> SessionPage:
        return await self._f.call("list_sessions", self._inner.list_sessions, query=query)

    async def count_sessions(self, query: SessionQuery) -> int:
        return await self._f.call("count_sessions", self._inner.count_sessions, query=query)

    async def transition(
        self,
        session_id: str,
        *,
        expected_version: int,
        to_status: SessionStatus,
        actor: str,
        reason: str,
        detail: str | None = None,
        owner: str | Unchanged | None = UNCHANGED,
        lease_expires_at: datetime | Unchanged | None = UNCHANGED,
        stats: Stats | None = None,
        lease_expired_before: datetime | None = None,
        seal: Seal | None = None,
    ) -> Session:
        return await self._f.call(
            "transition",
            self._inner.transition,
            session_id=session_id,
            expected_version=expected_version,
            to_status=to_status,
            actor=actor,
            reason=reason,
            detail=detail,
            owner=owner,
            lease_expires_at=lease_expires_at,
            stats=stats,
            lease_expired_before=lease_expired_before,
            seal=seal,
        )

    async def renew_lease(
        self,
        session_id: str,
        *,
        owner: str,
        lease_expires_at: datetime | None,
        stats: Stats | None = None,
    ) -> Session:
        return await self._f.call(
            "renew_lease",
            self._inner.renew_lease,
            session_id=session_id,
            owner=owner,
            lease_expires_at=lease_expires_at,
            stats=stats,
        )

    async def renew_instance(
        self, owner: str, *, lease_expires_at: datetime, progress: Mapping[str, Stats]
    ) -> list[Session]:
        return await self._f.call(
            "renew_instance",
            self._inner.renew_instance,
            owner=owner,
            lease_expires_at=lease_expires_at,
            progress=progress,
        )

    async def claim(
        self,
        session_id: str,
        *,
        expected_version: int,
        owner: str,
        lease_expires_at: datetime,
        actor: str,
        reason: str,
        detail: str | None = None,
        lease_expired_before: datetime | None = None,
        seal: Seal | None = None,
    ) -> Session:
        return await self._f.call(
            "claim",
            self._inner.claim,
            session_id=session_id,
            expected_version=expected_version,
            owner=owner,
            lease_expires_at=lease_expires_at,
            actor=actor,
            reason=reason,
            detail=detail,
            lease_expired_before=lease_expired_before,
            seal=seal,
        )

    async def add_event(
        self, session_id: str, *, actor: str, reason: str, detail: str | None = None
    ) -> SessionEvent:
        return await self._f.call(
            "add_event",
            self._inner.add_event,
            session_id=session_id,
            actor=actor,
            reason=reason,
            detail=detail,
        )

    async def list_events(self, session_id: str) -> list[SessionEvent]:
        i = self._inner
        return await self._f.call("list_events", i.list_events, session_id=session_id)

    async def mark_deleted(self, session_id: str) -> Session:
        i = self._inner
        return await self._f.call("mark_deleted", i.mark_deleted, session_id=session_id)

    async def find_expired(self, now: datetime) -> list[Session]:
        return await self._f.call("find_expired", self._inner.find_expired, now=now)

    async def find_owned(self, owner_prefix: str) -> list[Session]:
        i = self._inner
        return await self._f.call("find_owned", i.find_owned, owner_prefix=owner_prefix)

    async def list_changed(self, since: str | None, *, limit: int = MAX_CHANGES) -> ChangePage:
        i = self._inner
        return await self._f.call("list_changed", i.list_changed, since=since, limit=limit)


class FaultyTickStore(TickStore):
    def __init__(self, inner: TickStore, faults: _Faults) -> None:
        self._inner = inner
        self._f = faults

    async def write(self, batches: list[TickBatch], *, owner: str) -> WriteResult:
        return await self._f.call("write", self._inner.write, batches=batches, owner=owner)

    async def wait_visible(self, timeout_s: float) -> None:
        i = self._inner
        return await self._f.call("wait_visible", i.wait_visible, timeout_s=timeout_s)

    async def count(self, session_id: str) -> TickCounts:
        return await self._f.call("count", self._inner.count, session_id=session_id)

    async def seal(self, session_id: str) -> Seal:
        return await self._f.call("seal", self._inner.seal, session_id=session_id)

    async def position(self, session_id: str) -> TickPosition:
        return await self._f.call("position", self._inner.position, session_id=session_id)

    async def read_trades(self, query: TickQuery) -> list[Trade]:
        return await self._f.call("read_trades", self._inner.read_trades, query=query)

    async def read_orderbook(self, query: TickQuery) -> list[BookSnapshot]:
        return await self._f.call("read_orderbook", self._inner.read_orderbook, query=query)


class FaultyStore(Store):
    """``inner`` with injected faults. Opening and closing go straight to ``inner``."""

    def __init__(self, inner: Store, *, seed: int | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self._faults = _Faults(random.Random(seed))
        self.sessions = FaultySessionStore(inner.sessions, self._faults)
        self.ticks = FaultyTickStore(inner.ticks, self._faults)

    def fail(
        self,
        operation: str,
        *,
        times: int | None = 1,
        when: Callable[..., bool] | None = None,
        error: BaseException | None = None,
        after: bool = False,
        probability: float = 1.0,
    ) -> FaultRule:
        """Make matching calls of ``operation`` raise ``error`` (default: StoreUnavailable).

        ``times`` calls at most (None: until removed); only calls for which
        ``when(**arguments)`` is true; each with ``probability``. With ``after``,
        the real call runs first (its effect stays) and then the error is raised.
        """
        return self._faults.add(
            FaultRule(
                operation,
                error or StoreUnavailable(f"injected fault: {operation} failed"),
                times=times,
                when=when,
                after=after,
                probability=probability,
            )
        )

    def delay(
        self,
        operation: str,
        seconds: float,
        *,
        times: int | None = 1,
        when: Callable[..., bool] | None = None,
    ) -> FaultRule:
        """Make matching calls wait ``seconds`` before they go through (a slow or paused store)."""
        return self._faults.add(FaultRule(operation, None, times=times, when=when, delay_s=seconds))

    def clear(self) -> None:
        """Remove every rule: from now on every call goes straight through."""
        for rule in self._faults.rules:
            rule.remove()
        self._faults.rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        return list(self._faults.rules)

    @classmethod
    def from_spec(cls, inner: Store, spec: str, *, seed: int | None = None) -> FaultyStore:
        """Random transient faults from a spec such as ``"write=0.02,renew_lease=0.05"``.

        See :func:`parse_fault_spec`. Each fault raises
        :class:`~ticktape.errors.StoreUnavailable`, for ever, at its rate.
        """
        store = cls(inner, seed=seed)
        for operation, after, probability in parse_fault_spec(spec):
            store.fail(
                operation,
                times=None,
                after=after,
                probability=probability,
                error=StoreUnavailable(f"injected fault ({spec!r}): {operation} failed"),
            )
        return store

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    @property
    def write_failure(self) -> str | None:
        return self.inner.write_failure

    @property
    def write_failures(self) -> int:
        return self.inner.write_failures

    def disk_usage_bytes(self) -> int | None:
        return self.inner.disk_usage_bytes()


__all__ = ["OPERATIONS", "FaultRule", "FaultyStore", "parse_fault_spec"]
