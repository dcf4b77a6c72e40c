"""The store's asynchronous PG-wire connection: a query whose task is cancelled is
abandoned (the connection closed), never cancelled on the server.

psycopg's own connection answers a cancelled task mid-query by sending the server a
cancel request (up to 5 s) and then waiting for the query to end (up to 5 s more), so a
task cancelled while the server is busy or frozen — a runner cancelled at the shutdown's
grace, the heartbeat stopped at exit — takes up to 10 s to end, and the exit waits for
it. Here the connection is closed instead: the task ends at once, the server ends the
query when it sees the socket closed, and the caller gets a new connection next time
(every pool and slot of ``_db.Connections`` drops a closed one). Whether the abandoned
statement took effect is as unknown as after psycopg's cancel, which also ends by
closing the connection when the server does not stop the query in time.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import psycopg
from psycopg import pq, waiting
from psycopg.abc import PQGen

RV = TypeVar("RV")
WAIT_INTERVAL_S = 0.1  # psycopg's own: how often a wait looks at the socket again


class AbandoningConnection(psycopg.AsyncConnection[Any]):
    """An ``AsyncConnection`` whose interrupted query closes the connection."""

    async def wait(
        self,
        gen: PQGen[RV],
        interval: float = WAIT_INTERVAL_S,
        timeout: float | None = None,  # noqa: ASYNC109 (psycopg's signature, overridden)
    ) -> RV:
        """psycopg's wait, but an interruption mid-query closes the connection."""
        try:
            return await waiting.wait_async(
                gen, self.pgconn.socket, interval=interval, timeout=timeout
            )
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            if self.pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                self.pgconn.finish()
            raise
