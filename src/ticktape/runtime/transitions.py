"""Store-first state changes and the retry of transient errors, shared by the service,
the supervisor, the reconciler and the runners.

A state change reads the session, decides, and writes conditionally on the version it
read; a lost race means "read again and decide again", ``RetryPolicy.cas_rounds`` times
at most. A transient store error is retried around the one store call that failed
(:func:`retry_noted`), ``RetryPolicy.store_attempts`` times in all — never around a
whole round, so the bounds multiply only where docs/design.md says they do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ticktape.config import DEFAULT_RETRY, RetryPolicy
from ticktape.domain import Reason, Session, SessionStatus
from ticktape.errors import InvalidTransition, SessionConflict, StoreError, TransitionRace
from ticktape.retry import retry_transient
from ticktape.store.base import Store

T = TypeVar("T")
log = logging.getLogger(__name__)


async def note(
    store: Store, session_id: str, *, actor: str, reason: str, detail: str | None = None
) -> bool:
    """Record an event in the session's history, best effort: False (logged) if the store failed.

    For facts worth keeping (a lost lease, a retried write) whose recording must
    never change what the caller does next.
    """
    try:
        await store.sessions.add_event(session_id, actor=actor, reason=reason, detail=detail)
    except StoreError as exc:
        log.warning("session %s: could not record %r (%s): %s", session_id, reason, detail, exc)
        return False
    return True


async def retry_noted(
    store: Store,
    session_id: str | None,
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    actor: str,
    policy: RetryPolicy = DEFAULT_RETRY,
    on_retry: Callable[[Exception], None] | None = None,
) -> T:
    """:func:`retry_transient` with ``policy``'s store bounds; for one session's operation
    (``session_id`` given), if it needed retries, say so in the session's history
    (``store_retried``) once it succeeded."""
    errors: list[Exception] = []

    def retried(exc: Exception) -> None:
        errors.append(exc)
        if on_retry is not None:
            on_retry(exc)

    result = await retry_transient(
        operation,
        what=what,
        attempts=policy.store_attempts,
        base_s=policy.store_base_s,
        max_s=policy.store_max_s,
        on_retry=retried,
    )
    if errors and session_id is not None:
        await note(
            store,
            session_id,
            actor=actor,
            reason=Reason.STORE_RETRIED,
            detail=f"{what}: succeeded after {len(errors)} transient error(s), last: {errors[-1]}",
        )
    return result


@dataclass(frozen=True, slots=True)
class Retrier:
    """:func:`retry_noted` bound to one store, actor, policy and retry counter — the
    one retry wrapper the supervisor and the reconciler share."""

    store: Store
    actor: str
    policy: RetryPolicy
    on_retry: Callable[[Exception], None] | None = None

    async def __call__(
        self, operation: Callable[[], Awaitable[T]], what: str, session_id: str | None = None
    ) -> T:
        """Retry transient errors (bounded); for a session's write, note retries in its
        history."""
        return await retry_noted(
            self.store,
            session_id,
            operation,
            what=what,
            actor=self.actor,
            policy=self.policy,
            on_retry=self.on_retry,
        )


async def request_stop(
    store: Store,
    session_id: str,
    *,
    actor: str,
    reason: str,
    policy: RetryPolicy = DEFAULT_RETRY,
    on_retry: Callable[[Exception], None] | None = None,
) -> Session:
    """Record a stop request: ``pending``/``running`` → ``stopping``. Idempotent.

    A session already ``stopping`` or terminal is returned as it is. A transient
    store error is retried as ``policy`` (the configured one) says; if the write
    still fails, nothing changed and the error propagates: the session is still
    running and still stoppable.
    """
    for _ in range(policy.cas_rounds):
        session = await store.sessions.get_session(session_id)
        if session.is_terminal or session.status is SessionStatus.STOPPING:
            return session
        try:
            return await retry_transient(
                lambda s=session: store.sessions.transition(  # type: ignore[misc]
                    s.id,
                    expected_version=s.version,
                    to_status=SessionStatus.STOPPING,
                    actor=actor,
                    reason=reason,
                ),
                what="record stop request",
                attempts=policy.store_attempts,
                base_s=policy.store_base_s,
                max_s=policy.store_max_s,
                on_retry=on_retry,
            )
        except (TransitionRace, InvalidTransition):
            continue  # it moved meanwhile (started, completed, ...): read it again
    raise SessionConflict(
        f"session {session_id!r} kept changing; stop not recorded, try again",
        session_id=session_id,
        status="unknown",
    )
