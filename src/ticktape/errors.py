"""Every error ticktape raises on purpose.

One root, so callers can catch everything the project means with one clause.
Each error carries structured fields (``session_id``, ``status``, ...) so the API
and the CLI render them without parsing messages. Nothing from a database
driver escapes the store: backends wrap driver errors with ``raise ... from``.

::

    TicktapeError
    ├── ValidationError            bad input: a rule of the domain is broken (422)
    ├── UnsupportedError           a known capability that is not built yet (422)
    ├── SessionNotFound            no session has this id (404)
    ├── SessionConflict            the request does not fit the session's state (409)
    │   └── InvalidTransition      the state machine forbids this move
    ├── TransitionRace             a conditional write lost: the session changed meanwhile
    ├── LeaseLost                  the caller no longer owns the session (fencing)
    ├── StoreError                 the store failed (503)
    │   ├── StoreUnavailable       cannot reach / open the store; retrying may help
    │   │   └── WriteTimedOut      a write did not finish within TICKTAPE_STORE_TIMEOUT_S
    │   └── StoreBusy              transient contention (locked / table busy); retry
    ├── StopTimeout                a stop was accepted but did not finish in time (504)
    ├── Unauthorized               missing or wrong bearer token (401)
    ├── IdempotencyKeyReused       an Idempotency-Key sent again with a different request (409)
    └── LimitExceeded              a configured limit refuses the request (429)
"""

from __future__ import annotations


class TicktapeError(Exception):
    """Root of every error ticktape raises on purpose."""

    code = "error"

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __str__(self) -> str:
        return self.message


class ValidationError(TicktapeError):
    """Input breaks a domain rule; ``field`` names where, when known."""

    code = "validation_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.field = field


class UnsupportedError(TicktapeError):
    """A capability the product names but has not built yet (e.g. backtest sessions)."""

    code = "unsupported"


class SessionNotFound(TicktapeError):
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} not found", session_id=session_id)
        self.session_id = session_id


class ResultsNotFound(TicktapeError):
    """The session exists but has no stored results (not a backtest, or not written yet)."""

    code = "results_not_found"

    def __init__(self, session_id: str, why: str) -> None:
        super().__init__(f"session {session_id!r} has no results: {why}", session_id=session_id)


class SessionConflict(TicktapeError):
    """The request is well-formed but does not fit the session's current state."""

    code = "session_conflict"

    def __init__(self, message: str, *, session_id: str, status: str) -> None:
        super().__init__(message, session_id=session_id, status=status)
        self.session_id = session_id
        self.status = status


class InvalidTransition(SessionConflict):
    code = "invalid_transition"

    def __init__(self, session_id: str, current: str, target: str) -> None:
        super().__init__(
            f"session {session_id!r} cannot go from {current!r} to {target!r}",
            session_id=session_id,
            status=current,
        )
        self.target = target


class TransitionRace(TicktapeError):
    """A conditional write found the session changed since it was read.

    The caller re-reads and decides again; it never means the write half-happened.
    """

    code = "transition_race"

    def __init__(self, session_id: str, expected_version: int) -> None:
        super().__init__(
            f"session {session_id!r} changed concurrently (expected version {expected_version})",
            session_id=session_id,
            expected_version=expected_version,
        )
        self.session_id = session_id
        self.expected_version = expected_version


class LeaseLost(TicktapeError):
    """The caller is not (or no longer) the owner of a running session."""

    code = "lease_lost"

    def __init__(self, session_id: str, owner: str, detail: str = "") -> None:
        msg = f"instance {owner!r} does not own session {session_id!r}"
        super().__init__(f"{msg}: {detail}" if detail else msg, session_id=session_id, owner=owner)
        self.session_id = session_id
        self.owner = owner


class StoreError(TicktapeError):
    """The store failed. The message says which operation; ``__cause__`` holds the driver error."""

    code = "store_error"


class StoreUnavailable(StoreError):
    code = "store_unavailable"


class WriteTimedOut(StoreUnavailable):
    """A store write hung (a stalled disk, a frozen server); answered as unavailable."""


class TicksNotVisible(StoreError):
    """Acknowledged ticks did not become visible within the wait (QuestDB applies its
    WAL later): a reader now would see some tables further on than others."""


class StoreBusy(StoreError):
    """Transient contention (SQLite 'database is locked', QuestDB 'table busy'): retry."""

    code = "store_busy"


class StopTimeout(TicktapeError):
    code = "stop_timeout"

    def __init__(self, session_id: str, status: str, timeout_s: float) -> None:
        super().__init__(
            f"session {session_id!r} is still {status!r} after {timeout_s:g}s; the stop goes on",
            session_id=session_id,
            status=status,
        )
        self.session_id = session_id
        self.status = status


class Unauthorized(TicktapeError):
    code = "unauthorized"


class IdempotencyKeyReused(TicktapeError):
    """The key was first used with a different request; it cannot name this one."""

    code = "idempotency_key_reused"

    def __init__(self, key: str, session_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {clip(key)!r} was used for a different request (session "
            f"{session_id!r}); use a new key for a new request",
            session_id=session_id,
        )
        self.session_id = session_id


class LimitExceeded(TicktapeError):
    """A configured limit refuses the request; ``limit`` names the setting."""

    code = "limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        limit: str,
        retry_after_s: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, limit=limit)
        self.limit = limit
        self.retry_after_s = retry_after_s
        if code is not None:
            self.code = code


CLIP_CHARS = 64  # input echoed in an error message is cut to this many characters


def clip(value: object, limit: int = CLIP_CHARS) -> object:
    """``value`` for an error message: a long string is cut, so errors never echo megabytes."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}…(+{len(value) - limit} chars)"
    if isinstance(value, list | tuple | dict) and len(repr(value)) > limit:
        return f"{repr(value)[:limit]}…"
    return value
