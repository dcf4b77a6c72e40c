"""The one reconnect of a PG-wire connect whose handshake the server closed.

A new connection that QuestDB closes during its handshake (a handshake slower than the
server's idle timeout, on a loaded machine) had nothing sent on it: it is opened again at
once, ``QUESTDB_CONNECT_ATTEMPTS`` in all, before the connect fails (a failed connect marks
the store failing writes). The pooled connections (``_db``, async) and the log thread's
(``_logthread``, a thread of its own) connect through the same attempts::

    for attempt in connect_attempts(lambda: self._closed):
        with attempt:
            conn = connect()

Any other error, the last attempt's, or one raised once the store is closed propagates
unchanged from the ``with``. This is not the store's retry of transient errors
(``ticktape.store.retrying``): that one backs off between whole calls and does not cover a
readiness check or a connect another call's failure came between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from types import TracebackType

import psycopg

from ticktape.config import QUESTDB_CONNECT_ATTEMPTS

log = logging.getLogger(__name__)
#: What libpq says when the server closes a connection, during its handshake too.
HANDSHAKE_CLOSED = "server closed the connection unexpectedly"


class ConnectAttempt:
    """One try of a connect: a context that swallows a closed handshake worth retrying."""

    def __init__(self, number: int, store_closed: Callable[[], bool]) -> None:
        self.number = number
        self._store_closed = store_closed
        self.retry = False

    def __enter__(self) -> ConnectAttempt:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not self._closed_in_handshake(exc):
            return False
        log.warning("connect: %s; connecting again", str(exc).splitlines()[0])
        self.retry = True
        return True

    def _closed_in_handshake(self, exc: BaseException) -> bool:
        return (
            self.number < QUESTDB_CONNECT_ATTEMPTS
            and not self._store_closed()
            and isinstance(exc, psycopg.OperationalError)
            and HANDSHAKE_CLOSED in str(exc)
        )


def connect_attempts(store_closed: Callable[[], bool]) -> Iterator[ConnectAttempt]:
    """The tries of one connect: the next only after a closed handshake was swallowed."""
    for number in range(1, QUESTDB_CONNECT_ATTEMPTS + 1):
        attempt = ConnectAttempt(number, store_closed)
        yield attempt
        if not attempt.retry:
            return
