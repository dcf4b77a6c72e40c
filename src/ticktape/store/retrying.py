"""The one retry layer: transient store errors are retried here, at the store boundary.

:func:`ticktape.store.open_store` returns every backend wrapped in a
:class:`RetryingStore`: each session and tick call that fails with a transient error
(:class:`~ticktape.errors.StoreBusy`, :class:`~ticktape.errors.StoreUnavailable`) is
tried again with bounded full-jitter backoff, as :class:`ticktape.config.RetryPolicy`
says for that operation (``RetryPolicy.attempts``). Nothing above the store retries
a transient error; callers only decide again after a lost compare-and-set.

Many sessions' tick writes in one call (``write_sessions``) are answered per session:
only the sessions answered with a transient error are tried again, as their ``write``
alone would be, and the others keep their answers.

A call that changes a session (``transition``, ``claim``, ``seal``, ``write``,
``write_results``, ``append_results``) and
needed retries is recorded in that session's history once it succeeded
(``store_retried``: which call, how many transient errors, the last one) — best
effort, one attempt, never changing the call's answer.

Tests compose fault injection under this layer with :meth:`RetryingStore.over`
(``ticktape.testing.FaultyStore`` around the same backend handle).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from ticktape.config import DEFAULT_RETRY, RetryPolicy
from ticktape.domain import Reason
from ticktape.errors import StoreError
from ticktape.retry import TRANSIENT, retry_transient
from ticktape.store.base import Store, WriteResult
from ticktape.store.intercept import InterceptedStore
from ticktape.ticks import TickBatch

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Calls whose retries are recorded in the session's history once they succeed.
NOTED_OPERATIONS = frozenset(
    {"transition", "claim", "seal", "write", "write_results", "append_results"}
)


def _session_of(operation: str, kwargs: dict[str, Any]) -> str | None:
    if operation == "write":
        batches: list[TickBatch] = kwargs["batches"]
        ids = {b.session_id for b in batches}
        return ids.pop() if len(ids) == 1 else None
    session_id = kwargs.get("session_id")
    return session_id if isinstance(session_id, str) else None


class RetryingStore(InterceptedStore):
    """``inner`` with every session and tick call retried on transient errors.

    ``on_retry`` is told of each retried error (the retry counter of
    :class:`~ticktape.metrics.Metrics`); ``actor`` signs the ``store_retried`` events.
    Opening, closing and the readiness check go straight to ``inner``: readiness is
    a quick look, not worth a retry.
    """

    def __init__(
        self,
        inner: Store,
        policy: RetryPolicy = DEFAULT_RETRY,
        *,
        on_retry: Callable[[Exception], None] | None = None,
        actor: str = "store",
    ) -> None:
        if isinstance(inner, RetryingStore):
            raise TypeError("a RetryingStore around a RetryingStore would nest the retry layer")
        super().__init__(inner)
        self.policy = policy
        self.on_retry = on_retry
        self.actor = actor

    def over(self, inner: Store) -> RetryingStore:
        """The same retry layer (policy, counter, actor) over another handle — e.g. a
        ``FaultyStore`` around this one's ``inner``. Open and close this one only."""
        return RetryingStore(inner, self.policy, on_retry=self.on_retry, actor=self.actor)

    async def intercept(self, operation: str, fn: Callable[..., Awaitable[T]], **kwargs: Any) -> T:
        if operation == "write_sessions":
            answers = await self._write_sessions(fn, kwargs["writes"], kwargs["owner"])
            return cast(T, answers)
        attempts, base_s, max_s = self.policy.attempts(operation)
        errors: list[Exception] = []
        health = self.inner.write_health
        before = after = health.mark() if health is not None else None

        def retried(exc: Exception) -> None:
            nonlocal after
            errors.append(exc)
            if health is not None:
                after = health.mark()
            if self.on_retry is not None:
                self.on_retry(exc)

        result = await retry_transient(
            lambda: fn(**kwargs),
            what=operation,
            attempts=attempts,
            base_s=base_s,
            max_s=max_s,
            on_retry=retried,
        )
        if errors and health is not None and before is not None and after is not None:
            # fixed by its retry at once (a connection the server had closed, a busy
            # table): not a failing store, so admission and /ready are not held off
            health.forgive(before, after, len(errors))
        if errors and operation in NOTED_OPERATIONS:
            session_id = _session_of(operation, kwargs)
            if session_id is not None:
                await self._note_retried(session_id, operation, errors)
        return result

    async def _write_sessions(
        self, fn: Callable[..., Awaitable[Any]], writes: Sequence[list[TickBatch]], owner: str
    ) -> list[WriteResult | Exception]:
        """Many sessions' writes (``TickStore.write_sessions``), each retried as a ``write``
        alone would be: the items answered with a transient error are tried again, the
        others keep their answers — within the same attempts and backoff."""
        attempts, base_s, max_s = self.policy.attempts("write")
        answers: list[WriteResult | Exception] = [WriteResult()] * len(writes)
        retried: dict[int, list[Exception]] = {}
        pending = list(range(len(writes)))
        for attempt in range(attempts):
            try:
                got: list[WriteResult | Exception] = await fn(
                    writes=[writes[i] for i in pending], owner=owner
                )
            except TRANSIENT as exc:  # the whole call failed: every item it carried did
                got = [exc] * len(pending)
            again = []
            for i, answer in zip(pending, got, strict=True):
                answers[i] = answer
                if isinstance(answer, TRANSIENT) and attempt < attempts - 1:
                    again.append(i)
                    retried.setdefault(i, []).append(answer)
                    if self.on_retry is not None:
                        self.on_retry(answer)
            if not again:
                break
            pending = again
            delay = random.uniform(0, min(max_s, base_s * 2**attempt))
            log.warning(
                "write ticks failed for %d session(s) (%s); retrying them in %.3fs",
                len(again),
                answers[again[0]],
                delay,
            )
            await asyncio.sleep(delay)
        for i, errors in retried.items():
            session_id = _session_of("write", {"batches": writes[i]})
            if session_id is not None and isinstance(answers[i], WriteResult):
                await self._note_retried(session_id, "write", errors)
        return answers

    async def _note_retried(self, session_id: str, operation: str, errors: list[Exception]) -> None:
        detail = (
            f"{operation}: succeeded after {len(errors)} transient error(s), last: {errors[-1]}"
        )
        try:
            await self.inner.sessions.add_event(
                session_id, actor=self.actor, reason=Reason.STORE_RETRIED, detail=detail
            )
        except StoreError as exc:
            log.warning("session %s: could not record %r: %s", session_id, detail, exc)

    async def check_ready(self) -> None:
        await self.inner.check_ready()


__all__ = ["NOTED_OPERATIONS", "RetryingStore"]
