"""A start writes the session log once on QuestDB: the create and the owner's ``pending`` →
``running`` transition share one transaction (``create_session(start_lease_until=)``).

The three instances' starts meet on the log's single writer ("table busy"), so its
transactions per start are what the 3-instance start latency follows. Counted here
from the log thread's own connections: every COMMIT of a transaction that wrote the
session log.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.conftest import Run
from ticktape.config import Settings
from ticktape.domain import Reason, SessionStatus
from ticktape.testing import Instance, eventually

pytestmark = pytest.mark.questdb

STARTS = 8
WAIT_S = 30.0


class _LogCommits:
    """An ``on_connect`` hook counting the COMMITs of transactions that inserted into
    the session log (the group commit's; its synchronous connections only)."""

    def __init__(self, log_table: str) -> None:
        self._table = log_table
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self, conn: Any) -> None:
        if not isinstance(conn, psycopg.Connection):
            return
        execute = conn.execute
        writing = [False]

        def watched(query: Any, *args: Any, **kwargs: Any) -> Any:
            sql = str(query)
            if sql.startswith("INSERT INTO") and self._table in sql:
                writing[0] = True
            elif sql == "ROLLBACK":
                writing[0] = False
            elif sql == "COMMIT" and writing[0]:
                writing[0] = False
                with self._lock:
                    self.count += 1
            return execute(query, *args, **kwargs)

        conn.execute = watched


def test_each_start_writes_the_session_log_in_one_transaction(qdb_url: str, run: Run[Any]) -> None:
    """Each session is created through the service and awaited ``running`` before the
    next is created, so no two starts can share a group: one log transaction per start
    (two before: the create's, then the runner's transition)."""
    instance = Instance(Settings(store_url=qdb_url, instance_name="starts"))
    store: Any = instance.raw.inner
    commits = _LogCommits(f"{store.address.prefix}session_log")
    store.on_connect = commits

    seen: list[tuple[SessionStatus, int]] = []  # each session read right after its create

    async def scenario() -> tuple[int, list[list[Any]]]:
        await instance.start()
        try:
            before = commits.count
            histories = []
            for _ in range(STARTS):
                created = await instance.create(symbols=["BTC_USDT"])
                assert created.status is SessionStatus.PENDING and created.version == 1
                got = await instance.service.get(created.id)  # read-your-writes at once
                seen.append((got.status, got.version))

                async def running_here(session_id: str = created.id) -> bool:
                    return session_id in instance.supervisor.running_ids

                await eventually(running_here, timeout_s=WAIT_S, what="its runner")
                events = await instance.service.events(created.id)
                histories.append([(e.from_status, e.to_status, e.reason) for e in events])
            return commits.count - before, histories
        finally:
            await instance.close()

    log_transactions, histories = run(scenario())
    assert log_transactions == STARTS
    assert seen == [(SessionStatus.RUNNING, 2)] * STARTS  # started in the create's write
    assert (
        histories
        == [
            [
                (None, SessionStatus.PENDING, "created"),
                (SessionStatus.PENDING, SessionStatus.RUNNING, Reason.STARTED),
            ]
        ]
        * STARTS
    )
