"""QuestDB-specific guarantees, on a real server (the session's ``questdb_url``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Run
from ticktape.config import Settings
from ticktape.domain import (
    Reason,
    SessionStatus,
    Stats,
    is_valid_history,
    utcnow,
    validate_spec,
)
from ticktape.errors import (
    InvalidTransition,
    LeaseLost,
    SessionNotFound,
    StoreUnavailable,
    TransitionRace,
)
from ticktape.feeds.sim import SimExchange
from ticktape.metrics import Metrics
from ticktape.runners import default_runners
from ticktape.runtime.supervisor import Supervisor
from ticktape.service import SessionService
from ticktape.store import RetryingStore, Store, open_store
from ticktape.store.base import TickQuery
from ticktape.store.questdb import (
    READ_CONNECTIONS,
    QuestDBSessionStore,
    QuestDBStore,
    QuestDBTickStore,
)
from ticktape.testing import store_finished

pytestmark = pytest.mark.questdb


@pytest.fixture
def handles(qdb_url: str, run: Run[Any]) -> Any:
    """Three independent stores on one QuestDB: three sets of connections, like instances."""
    stores = [open_store(qdb_url) for _ in range(3)]
    for s in stores:
        run(s.open())
    yield stores
    for s in stores:
        run(s.close())


def _spec(**kw: Any) -> Any:
    return validate_spec(kind="collect", symbols=["BTC_USDT"], **kw)


async def _until_recorded(service: SessionService, session_id: str, records: int) -> None:
    """Poll the store (the only truth) until the session's published stats reach ``records``."""
    deadline = asyncio.get_running_loop().time() + 60
    while (await service.get(session_id)).stats.records_collected < records:
        assert asyncio.get_running_loop().time() < deadline, "no progress in 60 s"
        await asyncio.sleep(0.05)


def _service(store: Store, tmp_name: str, **settings: Any) -> tuple[Supervisor, SessionService]:
    cfg = Settings(store_url=store.url, instance_name=tmp_name, **settings)
    metrics = Metrics()
    supervisor = Supervisor(store, cfg, metrics, default_runners())
    return supervisor, SessionService(store, supervisor, cfg, metrics)


def test_read_your_writes_1000_creates_each_read_on_another_connection(
    handles: list[Store], run: Run[Any], make_session: Callable[..., Any]
) -> None:
    writer, reader = handles[0], handles[1]

    async def pairs(n: int, concurrency: int) -> list[str]:
        missing: list[str] = []

        async def one() -> None:
            session = make_session()
            await writer.sessions.create_session(session, actor="test")
            got = await reader.sessions.get_session(session.id)  # raises if not visible
            if got.id != session.id:
                missing.append(session.id)

        for _ in range(n // concurrency):
            await asyncio.gather(*(one() for _ in range(concurrency)))
        return missing

    assert run(pairs(500, 1)) == []
    assert run(pairs(500, 25)) == []  # concurrent readers: the case an indexed symbol broke


def test_racing_transitions_from_three_instances_have_exactly_one_winner(
    handles: list[Store], run: Run[Any], make_session: Callable[..., Any]
) -> None:
    targets = [SessionStatus.STOPPING, SessionStatus.COMPLETED, SessionStatus.FAILED]

    async def race() -> list[int]:
        winners = []
        for _ in range(15):
            session = make_session()
            await handles[0].sessions.create_session(session, actor="test")
            running = await handles[0].sessions.transition(
                session.id,
                expected_version=1,
                to_status=SessionStatus.RUNNING,
                actor="t",
                reason="started",
            )
            attempts = [
                store.sessions.transition(
                    running.id,
                    expected_version=running.version,
                    to_status=target,
                    actor=f"i{k}",
                    reason="race",
                )
                for k, (store, target) in enumerate(zip(handles * 2, targets * 2, strict=True))
            ]
            results = await asyncio.gather(*attempts, return_exceptions=True)
            for r in results:
                assert not isinstance(r, BaseException) or isinstance(
                    r, TransitionRace | InvalidTransition
                ), r
            winners.append(sum(not isinstance(r, BaseException) for r in results))
            events = await handles[2].sessions.list_events(session.id)
            statuses = [e.to_status for e in events if e.from_status != e.to_status]
            assert is_valid_history(statuses), statuses
            assert len(statuses) == 3  # created, running, and exactly one more
        return winners

    assert run(race()) == [1] * 15


def test_stats_equal_count_after_stop_with_tens_of_thousands_of_ticks(
    handles: list[Store], run: Run[Any]
) -> None:
    store = handles[0]

    async def scenario() -> None:
        supervisor, service = _service(store, "qdb-stats")
        await supervisor.start()
        try:
            session = await service.create(_spec(rate_per_s=0))
            await _until_recorded(service, session.id, 30_000)
            stopped = await service.stop(session.id, wait=True, timeout_s=60)
        finally:
            await supervisor.shutdown()
        counts = await handles[1].ticks.count(session.id)
        assert stopped.status is SessionStatus.STOPPED
        assert stopped.stats.records_collected >= 30_000
        assert (stopped.stats.trades, stopped.stats.orderbook) == (counts.trades, counts.orderbook)
        # the data routes' reads agree with count() too
        trades = await handles[2].ticks.read_trades(TickQuery(session.id, limit=10_000))
        assert len(trades) == min(10_000, counts.trades)
        assert [t.trade_id for t in trades] == list(range(1, len(trades) + 1))

    run(scenario())


def test_a_replayed_batch_creates_no_duplicates(
    handles: list[Store], run: Run[Any], make_session: Callable[..., Any]
) -> None:
    store = handles[0]
    session = make_session(owner="replayer")
    run(store.sessions.create_session(session, actor="test"))
    block = SimExchange(
        session.id, session.symbols, rate_per_s=0, start_us=1_700_000_000_000_000
    ).next_block()

    async def scenario() -> tuple[Any, Any]:
        await store.ticks.write(block, owner="replayer")
        await store.ticks.wait_visible(30)
        first = await store.ticks.count(session.id)
        await store.ticks.write(block, owner="replayer")  # e.g. a retry after a lost ack
        await store.ticks.wait_visible(30)
        return first, await handles[1].ticks.count(session.id)

    first, second = run(scenario())
    assert first == second
    assert first.trades == sum(len(b) for b in block if not hasattr(b, "depth"))


def test_a_heartbeat_of_many_renewals_reads_them_together_and_renews_each(
    handles: list[RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    store, other = handles[0], handles[1]
    ids = [make_session(owner="me").id for _ in range(30)]

    async def scenario() -> list[Any]:
        for sid in ids:
            await store.sessions.create_session(make_session(id=sid, owner="me"), actor="t")
        await other.sessions.create_session(make_session(id="not-mine", owner="you"), actor="t")
        reads: list[list[str]] = []
        sessions = store.inner.sessions
        assert isinstance(sessions, QuestDBSessionStore)
        sessions.on_read_many = reads.append  # the documented testing hook
        until = utcnow() + timedelta(seconds=30)
        results = await asyncio.gather(
            *(
                store.sessions.renew_lease(sid, owner="me", lease_expires_at=until)
                for sid in [*ids, "not-mine", "unknown"]
            ),
            return_exceptions=True,
        )
        assert len(reads) < len(ids) / 3, reads  # read together, not one query per session
        assert sum(len(batch) for batch in reads) >= len(ids) + 2
        return results

    results = run(scenario())
    assert [type(r) for r in results[-2:]] == [LeaseLost, SessionNotFound]
    for sid, renewed in zip(ids, results, strict=False):
        assert not isinstance(renewed, BaseException), renewed
        assert renewed.id == sid
        seen = run(other.sessions.get_session(sid))  # visible to another instance at once
        assert seen.lease_expires_at == renewed.lease_expires_at is not None


def test_concurrent_reads_of_sessions_share_queries_and_see_every_acknowledged_write(
    handles: list[RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    store = handles[0]
    ids = [make_session().id for _ in range(30)]

    async def scenario() -> list[Any]:
        for sid in ids:
            await store.sessions.create_session(make_session(id=sid), actor="t")
        reads: list[list[str]] = []
        sessions = store.inner.sessions
        assert isinstance(sessions, QuestDBSessionStore)
        sessions.on_read_many = reads.append  # the documented testing hook
        got = await asyncio.gather(*(store.sessions.get_session(sid) for sid in ids))
        assert len(reads) < len(ids) / 3, reads  # read together, not one query per get
        assert sorted(sid for batch in reads for sid in batch) == sorted(ids)
        return got

    got = run(scenario())
    assert [s.id for s in got] == ids


def test_a_heartbeat_never_waits_for_the_pooled_readers(
    handles: list[RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    """Every pooled read connection held (reads queued behind a slow query, say): the
    instance lease is renewed on a connection of its own and the heartbeat answers."""
    store = handles[0]
    session = make_session(owner="me", lease_expires_at=utcnow() + timedelta(seconds=5))

    async def scenario() -> Any:
        await store.sessions.create_session(session, actor="t")
        sessions = store.inner.sessions
        assert isinstance(sessions, QuestDBSessionStore)
        until = utcnow() + timedelta(seconds=30)
        async with contextlib.AsyncExitStack() as held:
            for _ in range(READ_CONNECTIONS):
                await held.enter_async_context(sessions._db.reader("hold the pool"))
            # on a pooled connection this would wait until the pool is released
            owned = await asyncio.wait_for(
                sessions.renew_instance(
                    "me", lease_expires_at=until, progress={session.id: Stats(trades=3)}
                ),
                20,
            )
        return owned, until

    owned, until = run(scenario())
    assert [(s.id, s.lease_expires_at, s.stats.trades) for s in owned] == [(session.id, until, 3)]
    seen = run(handles[1].sessions.get_session(session.id))  # as another instance sees it
    assert (seen.lease_expires_at, seen.stats.trades) == (until, 3)


def test_concurrent_tick_writes_go_in_one_send_and_a_stale_writer_is_refused_alone(
    handles: list[RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    store = handles[0]
    sessions = [make_session(owner="me") for _ in range(8)] + [make_session(owner="you")]
    blocks = [
        SimExchange(s.id, s.symbols, rate_per_s=0, start_us=1_700_000_000_000_000).next_block()
        for s in sessions
    ]

    async def scenario() -> list[Any]:
        for s in sessions:
            await store.sessions.create_session(s, actor="t")
        sends: list[None] = []
        ticks = store.inner.ticks
        assert isinstance(ticks, QuestDBTickStore)
        ticks.before_send = lambda: sends.append(None)  # the documented testing hook
        results = await asyncio.gather(
            *(store.ticks.write(block, owner="me") for block in blocks), return_exceptions=True
        )
        assert 1 <= len(sends) <= 2, len(sends)  # the first, then the rest
        await store.ticks.wait_visible(30)
        return results

    results = run(scenario())
    assert isinstance(results[-1], LeaseLost)  # "you" own it: only that write is refused
    for s, block, result in zip(sessions[:-1], blocks, results, strict=False):
        assert not isinstance(result, BaseException), result
        counts = run(handles[1].ticks.count(s.id))
        assert counts.trades == sum(len(b) for b in block if not hasattr(b, "depth")) > 0
    assert run(handles[1].ticks.count(sessions[-1].id)).trades == 0


def test_concurrent_writers_sends_are_spaced_so_a_flush_interval_goes_in_one_request(
    handles: list[RetryingStore],
    run: Run[Any],
    make_session: Callable[..., Any],
) -> None:
    store = handles[0]
    sessions = [make_session(owner="me") for _ in range(6)]
    feeds = [
        SimExchange(s.id, s.symbols, rate_per_s=0, start_us=1_700_000_000_000_000) for s in sessions
    ]
    ticks = store.inner.ticks
    assert isinstance(ticks, QuestDBTickStore)
    # long enough that the writes below all queue within it, however loaded the machine
    ticks.send_spacing_s = 2.0

    async def scenario() -> int:
        for s in sessions:
            await store.sessions.create_session(s, actor="t")
        sends: list[None] = []
        ticks.before_send = lambda: sends.append(None)
        # a lone writer is never held back: one write at a time, one send each
        started = asyncio.get_running_loop().time()
        for _ in range(3):
            await store.ticks.write(feeds[0].next_block(), owner="me")
        assert asyncio.get_running_loop().time() - started < ticks.send_spacing_s
        assert len(sends) == 3
        # concurrent writers: at most the first alone, then the rest together ...
        await asyncio.gather(*(store.ticks.write(f.next_block(), owner="me") for f in feeds))
        grouped = len(sends)
        assert 4 <= grouped <= 5, grouped
        # ... and from then on a send waits out the spacing: a write that finds the
        # sender idle waits for the ones that come after it, and they go in one send
        # (unspaced, the first would go alone as soon as it is queued)
        first = asyncio.create_task(store.ticks.write(feeds[0].next_block(), owner="me"))
        for _ in range(5):
            await asyncio.sleep(0)  # the write is queued and the sender waits
        rest = [store.ticks.write(f.next_block(), owner="me") for f in feeds[1:3]]
        await asyncio.gather(first, *rest)
        return len(sends) - grouped

    assert run(scenario()) == 1
    run(store.ticks.wait_visible(30))
    for s, feed in zip(sessions[:3], feeds[:3], strict=True):
        assert run(handles[1].ticks.count(s.id)).trades > 0, (s.id, feed)


def test_questdb_restarted_mid_session_loses_nothing_acknowledged(
    tmp_path: Path, run: Run[Any]
) -> None:
    from ticktape import questdb_server

    config = questdb_server.QuestDBServerConfig.with_free_ports(tmp_path / "qdb")
    handle = questdb_server.start(config)
    handles = [handle]
    try:
        store = open_store(handle.store_url)
        run(store.open())

        async def scenario() -> None:
            supervisor, service = _service(store, "qdb-restart", lease_s=30.0)
            await supervisor.start()
            try:
                session = await service.create(_spec(rate_per_s=2000))
                await _until_recorded(service, session.id, 2_000)
                before = await store.ticks.count(session.id)
                await asyncio.to_thread(handle.stop)
                await asyncio.sleep(1.0)  # the runner buffers and retries meanwhile
                handles.append(await asyncio.to_thread(questdb_server.start, config))
                stopped = await service.stop(session.id, wait=True, timeout_s=60)
            finally:
                await supervisor.shutdown()
            after = await store.ticks.count(session.id)
            assert after.trades >= before.trades  # nothing acknowledged was lost
            assert stopped.status in {SessionStatus.STOPPED, SessionStatus.FAILED}
            assert (stopped.stats.trades, stopped.stats.orderbook) == (
                after.trades,
                after.orderbook,
            )
            if stopped.status is SessionStatus.FAILED:
                # ERROR: ticks given up on. STORE_UNAVAILABLE: the restart took longer than
                # the lease (seen at >29 s on a loaded 2-core host), the runner stopped
                # itself and the session was ended naming the store fault.
                assert stopped.reason in {Reason.ERROR, Reason.STORE_UNAVAILABLE}, stopped
                if stopped.reason == Reason.ERROR:
                    assert stopped.stats.errors > 0

        run(scenario())
        run(store.close())
    finally:
        for h in reversed(handles):
            h.stop()


def test_append_history_writes_what_create_and_transition_write(
    handles: list[Store], run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """``append_history`` (bench/capacity.py's fast history) stores the same session and
    the same events as the contract's create + transition do."""
    backend = QuestDBStore(handles[0].url)
    via_contract, via_history = make_session(), make_session()

    async def both() -> tuple[Any, Any]:
        await backend.open()
        try:
            await store_finished(backend, [via_contract], actor="bench")
            await backend.sessions.append_history(
                [via_history], to_status=SessionStatus.FAILED, reason="start_failed", actor="bench"
            )
            reader = handles[1].sessions
            return (
                [await reader.get_session(s.id) for s in (via_contract, via_history)],
                [await reader.list_events(s.id) for s in (via_contract, via_history)],
            )
        finally:
            await backend.close()

    (contract, history), (contract_events, history_events) = run(both())
    assert history.status is SessionStatus.FAILED and history.reason == "start_failed"
    same = ("status", "reason", "version", "owner", "lease_expires_at", "stats", "deleted")
    assert [getattr(history, f) for f in same] == [getattr(contract, f) for f in same]
    assert [(e.seq, e.from_status, e.to_status, e.actor, e.reason) for e in history_events] == [
        (e.seq, e.from_status, e.to_status, e.actor, e.reason) for e in contract_events
    ]


def test_a_columnar_read_that_cannot_reach_questdb_marks_the_store_failing(
    qdb_url: str, run: Run[Any]
) -> None:
    """The Parquet read over HTTP /exp fails unreachable as a PG-wire read does: the
    store's health (``write_failure``: /health, /ready, admission) says so."""
    with socket.socket() as s:  # a port nobody listens on, for HTTP only
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    parts = urllib.parse.urlsplit(qdb_url)
    query = dict(urllib.parse.parse_qsl(parts.query), ilp=f"http://127.0.0.1:{dead}")
    store = QuestDBStore(parts._replace(query=urllib.parse.urlencode(query)).geturl())

    async def read() -> None:
        await store.open()
        try:
            assert store.write_failure is None
            with pytest.raises(StoreUnavailable, match="cannot reach QuestDB over HTTP"):
                await store.ticks.read_window("no-such-session", 0, 1_000_000)
            assert store.write_failure is not None
            assert "cannot reach QuestDB over HTTP" in store.write_failure
        finally:
            await store.close()

    run(read())


def test_a_transition_reads_its_owners_instance_lease_once_and_shows_it(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """The read before a transition brings the owner's instance lease with the row; the
    new row is shown with that lease (one query for both, where a second read of the
    lease cost one more per transition) — covered by it, with the progress published."""
    now = utcnow()
    session = make_session(owner="me", lease_expires_at=now + timedelta(seconds=5))
    store = QuestDBStore(qdb_url)
    lease_reads: list[str] = []

    def count_lease_reads(conn: Any) -> None:
        if not isinstance(conn, psycopg.AsyncConnection):
            return  # the log thread's connections (group commit) read no lease
        execute = conn.execute

        async def counted(query: Any, *args: Any, **kwargs: Any) -> Any:
            if "instances WHERE token IN" in str(query):
                lease_reads.append(str(query))
            return await execute(query, *args, **kwargs)

        conn.execute = counted

    store.on_connect = count_lease_reads  # every connection the store opens

    async def scenario() -> Any:
        await store.open()
        try:
            await store.sessions.create_session(session, actor="t")
            instance_lease = now + timedelta(seconds=30)
            await store.sessions.renew_instance(
                "me", lease_expires_at=instance_lease, progress={session.id: Stats(7, 3, 0)}
            )
            lease_reads.clear()
            running = await store.sessions.transition(
                session.id,
                expected_version=session.version,
                to_status=SessionStatus.RUNNING,
                actor="t",
                reason="started",
            )
            assert len(lease_reads) == 1, lease_reads
            assert running.lease_expires_at == instance_lease
            assert running.stats == Stats(7, 3, 0)
            assert await store.sessions.get_session(session.id) == running
        finally:
            await store.close()

    run(scenario())


def test_a_group_commit_that_finds_the_log_busy_rolls_back_and_commits_once_it_is_free(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """Another writer (another instance) holds the session log in a transaction: the
    group's pipelined BEGIN / INSERT / read fails "table busy", is rolled back, and is
    tried again until the log is free; the create then commits, once, and only its row
    is there (the other writer's rolled back row is not)."""
    store = QuestDBStore(qdb_url)
    session = make_session()
    log_table = f"{store.address.prefix}session_log"
    rolled_back = threading.Event()  # set in the log thread

    def watch_rollbacks(conn: Any) -> None:
        if not isinstance(conn, psycopg.Connection):
            return  # the group commit runs on the log thread's (synchronous) connections
        execute = conn.execute

        def watched(query: Any, *args: Any, **kwargs: Any) -> Any:
            if str(query) == "ROLLBACK":
                rolled_back.set()
            return execute(query, *args, **kwargs)

        conn.execute = watched

    store.on_connect = watch_rollbacks  # every connection the store opens

    async def scenario() -> None:
        await store.open()
        other = await psycopg.AsyncConnection.connect(store.address.conninfo, autocommit=True)
        try:
            await other.execute("BEGIN")
            await other.execute(
                f"INSERT INTO {log_table} (id, row_seq, ts) VALUES ('held', 1, now())"
            )
            rolled_back.clear()
            create = asyncio.ensure_future(store.sessions.create_session(session, actor="t"))
            assert await asyncio.to_thread(rolled_back.wait, 10)  # it met the busy table
            assert not create.done()
            await other.execute("ROLLBACK")
            created = await asyncio.wait_for(create, 10)
            assert created == session
            assert await store.sessions.get_session(session.id) == session
            cur = await other.execute(
                f"SELECT id, count() FROM {log_table} WHERE id IN ('held', %s)", (session.id,)
            )
            assert dict(await cur.fetchall()) == {session.id: 1}
        finally:
            await other.close()
            await store.close()

    run(scenario())


def test_a_group_commit_commits_while_the_event_loop_is_blocked(
    qdb_url: str, run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """The session log's group commit runs on a thread of its own: from its first round
    trip to its COMMIT it needs no turn of the event loop, so the log is held for the
    server's round trips only, however busy the loop is. Here the loop is blocked
    outright, from the moment the group opens its connection, until another connection
    sees the created session committed."""
    store = QuestDBStore(qdb_url)
    session = make_session()
    log_table = f"{store.address.prefix}session_log"
    loops: list[asyncio.AbstractEventLoop] = []
    committed_while_blocked: list[bool] = []
    blocking: list[Any] = []  # the connection whose opening blocked the loop

    def block_until_committed() -> None:  # on the event loop: nothing else runs meanwhile
        with psycopg.connect(store.address.conninfo, autocommit=True) as other:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                cur = other.execute(f"SELECT count() FROM {log_table} WHERE id = %s", (session.id,))
                if cur.fetchall()[0][0]:
                    committed_while_blocked.append(True)
                    return
                time.sleep(0.01)  # a poll of the other connection
        committed_while_blocked.append(False)

    def on_connect(conn: Any) -> None:
        # the log thread's first connection: the group is about to BEGIN
        if isinstance(conn, psycopg.Connection) and not blocking:
            blocking.append(conn)
            loops[0].call_soon_threadsafe(block_until_committed)

    store.on_connect = on_connect

    async def scenario() -> Any:
        loops.append(asyncio.get_running_loop())
        await store.open()
        try:
            created = await asyncio.wait_for(store.sessions.create_session(session, actor="t"), 30)
            assert committed_while_blocked == [True]
            assert created == session
            assert await store.sessions.get_session(session.id) == session
        finally:
            await store.close()

    run(scenario())


def test_a_stored_session_the_symbol_lookup_misses_is_read_again_by_its_string(
    handles: list[RetryingStore], run: Run[Any], make_session: Callable[..., Any]
) -> None:
    """QuestDB 9.3.4's lookup of the log's ``id`` symbol can miss a stored session for a
    moment while other connections add ids fast (docs/questdb.md); every by-id read that
    must find the session reads the ids it missed again by their string value. Here the
    testing hook drops the session from every first read: the create's read-back after
    COMMIT, a get, a renewal's compare-and-set, a tick write's owner check and a count's
    tenure read all still find it, and each of them is counted."""
    store = handles[0]
    inner = store.inner
    assert isinstance(inner, QuestDBStore)
    lookups = inner.log_lookups
    session = make_session(owner="me", idempotency_key="vis-" + make_session().id)
    hidden = session.id
    block = SimExchange(
        hidden, session.symbols, rate_per_s=0, start_us=1_700_000_000_000_000
    ).next_block()

    def drop(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [r for r in rows if str(r[0]) != hidden]

    lookups.on_lookup = drop  # the documented testing hook

    async def scenario() -> None:
        created = await store.sessions.create_session(session, actor="t")
        assert lookups.confirmed == 1  # the read-back after COMMIT
        assert (await store.sessions.get_session(hidden)).id == hidden
        assert lookups.confirmed == 2
        until = utcnow() + timedelta(seconds=30)
        renewed = await store.sessions.renew_lease(hidden, owner="me", lease_expires_at=until)
        assert renewed.lease_expires_at == until
        assert renewed.version >= created.version
        confirmed = lookups.confirmed
        await store.ticks.write(block, owner="me")  # not refused as "unknown session"
        assert lookups.confirmed > confirmed
        await store.ticks.wait_visible(30)
        counts = await store.ticks.count(hidden)
        assert counts.trades == sum(len(b) for b in block if not hasattr(b, "depth"))
        # the same key again: the session holding it, not a second one
        again = make_session(owner="me", idempotency_key=session.idempotency_key)
        assert again.id != hidden
        assert (await store.sessions.create_session(again, actor="t")).id == hidden
        confirmed = lookups.confirmed
        assert [e.seq for e in await store.sessions.list_events(hidden)] == [1]
        assert lookups.confirmed == confirmed + 2  # the get before it, its events
        # an id that is really unknown is still unknown: read again, found nowhere
        rechecked, confirmed = lookups.rechecked, lookups.confirmed
        with pytest.raises(SessionNotFound):
            await store.sessions.get_session("no-such-session")
        assert (lookups.rechecked, lookups.confirmed) == (rechecked + 1, confirmed)
        # another instance (no hook) sees the renewal as the newest state, and the
        # create's events once: nothing was appended twice
        seen = await handles[1].sessions.get_session(hidden)
        assert (seen.lease_expires_at, seen.version) == (until, renewed.version)
        assert [e.seq for e in await handles[1].sessions.list_events(hidden)] == [1]

    run(scenario())
