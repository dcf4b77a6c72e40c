"""Store-first state changes shared by the service and the supervisor.

Each reads the session, decides, and writes conditionally on the version it
read; a lost race means "read again and decide again", a bounded number of times.
"""

from __future__ import annotations

from collections.abc import Callable

from ticktape.domain import Session, SessionStatus
from ticktape.errors import InvalidTransition, SessionConflict, TransitionRace
from ticktape.retry import retry_transient
from ticktape.store.base import Store

MAX_CAS_ROUNDS = 20  # re-read/retry rounds when a conditional write loses a race


async def request_stop(
    store: Store,
    session_id: str,
    *,
    actor: str,
    reason: str,
    on_retry: Callable[[Exception], None] | None = None,
) -> Session:
    """Record a stop request: ``pending``/``running`` → ``stopping``. Idempotent.

    A session already ``stopping`` or terminal is returned as it is. If the write
    fails, nothing changed and the error propagates: the session is still
    running and still stoppable.
    """
    for _ in range(MAX_CAS_ROUNDS):
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
                on_retry=on_retry,
            )
        except (TransitionRace, InvalidTransition):
            continue  # it moved meanwhile (started, completed, ...): read it again
    raise SessionConflict(
        f"session {session_id!r} kept changing; stop not recorded, try again",
        session_id=session_id,
        status="unknown",
    )
