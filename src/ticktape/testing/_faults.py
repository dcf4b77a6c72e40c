"""Fault injection at the store boundary: a store that fails the calls you choose.

:class:`FaultyStore` wraps any :class:`~ticktape.store.base.Store` and keeps both
contracts by handing every call to it, except the calls a rule picks::

    store = FaultyStore(inner)
    store.fail("transition", when=lambda **kw: kw["to_status"] is SessionStatus.STOPPED)
    store.fail("write", times=None, error=StoreBusy("injected"))  # until cleared
    store.fail("renew_lease", after=True)  # it happens, but the caller sees an error
    store.delay("write", 3.0)  # a slow store: the call waits, then goes through
    store.clear()

Operations are named by their method: ``create_session``, ``get_session``,
``list_sessions``, ``count_sessions``, ``transition``, ``claim``, ``renew_lease``,
``renew_instance`` (the heartbeat),
``add_event``, ``list_events``, ``mark_deleted``, ``find_expired``, ``scan_leases``, ``find_owned``
(sessions) and ``write``, ``wait_visible``, ``note_committed``, ``count``, ``position``,
``read_trades``, ``read_orderbook`` (ticks). A ``write_sessions`` call (many sessions'
tick writes at once) is also subject to the ``write`` rules, item by item: a rule on
``write`` bites each session's writes whichever way they are made. ``when`` receives the call's
arguments by name (``session_id``, ``to_status``, ``batches``, ``owner``, ...).

Tests use it directly; ``bench/chaos.py`` starts its servers through
:mod:`ticktape.testing.faulty_server`, which wraps the runtime's store handle in
:meth:`FaultyStore.from_spec`.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from ticktape.errors import StoreUnavailable, ValidationError
from ticktape.store.base import Store
from ticktape.store.intercept import OPERATIONS, InterceptedStore
from ticktape.ticks import TickBatch

T = TypeVar("T")


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
        if operation == "write_sessions":
            return cast(T, await self._write_sessions(fn, kwargs["writes"], kwargs["owner"]))
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

    async def _write_sessions(
        self, fn: Callable[..., Awaitable[Any]], writes: Sequence[list[TickBatch]], owner: str
    ) -> list[Any]:
        """Many sessions' writes: the ``write_sessions`` rules act on the whole call, the
        ``write`` rules on each session's item as on a ``write`` of it alone (its error is
        that item's answer; the items are stored together, so the longest delay holds all)."""
        whole = self._matching("write_sessions", {"writes": writes, "owner": owner})
        per_item = [self._matching("write", {"batches": b, "owner": owner}) for b in writes]
        delay = sum(r.delay_s for r in whole) + max(
            (sum(r.delay_s for r in rules) for rules in per_item), default=0.0
        )
        if delay > 0:
            await asyncio.sleep(delay)
        failing_call = next((r for r in whole if r.error is not None), None)
        if failing_call is not None and not failing_call.after:
            assert failing_call.error is not None
            raise copy.copy(failing_call.error)
        failing = [next((r for r in rules if r.error is not None), None) for rules in per_item]
        sent = [i for i, rule in enumerate(failing) if rule is None or rule.after]
        got = await fn(writes=[writes[i] for i in sent], owner=owner) if sent else []
        answers: list[Any] = [None] * len(writes)
        for i, answer in zip(sent, got, strict=True):
            answers[i] = answer
        for i, rule in enumerate(failing):
            if rule is not None:
                assert rule.error is not None
                answers[i] = copy.copy(rule.error)
        if failing_call is not None:
            assert failing_call.error is not None
            raise copy.copy(failing_call.error)
        return answers


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


class FaultyStore(InterceptedStore):
    """``inner`` with injected faults. Opening and closing go straight to ``inner``."""

    def __init__(self, inner: Store, *, seed: int | None = None) -> None:
        self._faults = _Faults(random.Random(seed))
        super().__init__(inner)

    async def intercept(self, operation: str, fn: Callable[..., Awaitable[T]], **kwargs: Any) -> T:
        return await self._faults.call(operation, fn, **kwargs)

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


__all__ = ["OPERATIONS", "FaultRule", "FaultyStore", "parse_fault_spec"]
