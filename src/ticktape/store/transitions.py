"""Store-first state changes shared by the service and the runtime.

A state change reads the session, decides, and writes conditionally on the version it
read; a lost race means "read again and decide again", ``RetryPolicy.cas_rounds`` times
at most. Transient store errors are not retried here: the store handle does that
(:mod:`ticktape.store.retrying`, the one retry layer).
"""

from __future__ import annotations

import logging

from ticktape.config import DEFAULT_RETRY, RetryPolicy
from ticktape.domain import Session, SessionStatus
from ticktape.errors import (
    InvalidTransition,
    LeaseLost,
    SessionConflict,
    StoreError,
    TransitionRace,
)
from ticktape.store.base import Store

log = logging.getLogger(__name__)


async def note(
    store: Store,
    session_id: str,
    *,
    actor: str,
    reason: str,
    detail: str | None = None,
    owner: str | None = None,
) -> bool:
    """Record an event in the session's history, best effort: False (logged) if the store
    failed, or refused it (with ``owner``: the session is terminal or another's by now,
    ``SessionStore.add_event``).

    For facts worth keeping (a lost lease, a retried write) whose recording must
    never change what the caller does next.
    """
    try:
        await store.sessions.add_event(
            session_id, actor=actor, reason=reason, detail=detail, owner=owner
        )
    except (StoreError, LeaseLost) as exc:
        log.warning("session %s: could not record %r (%s): %s", session_id, reason, detail, exc)
        return False
    return True


async def request_stop(
    store: Store,
    session_id: str,
    *,
    actor: str,
    reason: str,
    policy: RetryPolicy = DEFAULT_RETRY,
    read: Session | None = None,
) -> Session:
    """Record a stop request: ``pending``/``running`` → ``stopping``. Idempotent.

    A session already ``stopping`` or terminal is returned as it is. A lost
    compare-and-set is decided again, ``policy.cas_rounds`` times at most. Transient
    store errors are the store boundary's to retry; if the write still fails, nothing
    changed and the error propagates: the session is still running and still stoppable.
    ``read``: the session as the caller just read it from the store; the first round
    decides on it instead of reading again (its compare-and-set on the version fails
    if anything changed since, and the next round reads). Each round's read is its
    transition's ``read`` too (``SessionStore.transition``): a backend that must read
    before it writes starts from it when it carries the backend's record (QuestDB's
    ``find_owned``).
    """
    for _ in range(policy.cas_rounds):
        session = read or await store.sessions.get_session(session_id)
        read = None
        if session.is_terminal or session.status is SessionStatus.STOPPING:
            return session
        try:
            return await store.sessions.transition(
                session.id,
                expected_version=session.version,
                to_status=SessionStatus.STOPPING,
                actor=actor,
                reason=reason,
                read=session,
            )
        except (TransitionRace, InvalidTransition):
            continue  # it moved meanwhile (started, completed, ...): read it again
    raise SessionConflict(
        f"session {session_id!r} kept changing; stop not recorded, try again",
        session_id=session_id,
        status="unknown",
    )


__all__ = ["note", "request_stop"]
