"""Random sequences of start, stop, get, list and restarts keep DESIGN.md's invariants.

A hypothesis state machine drives the real service, supervisor and collect
runner on a real SQLite file. "Restart" is either graceful (shutdown) or a
crash (every task of the instance cancelled, no shutdown code, as with SIGKILL);
the next incarnation has the same instance name, like a restarted server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from ticktape.config import Settings
from ticktape.domain import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Reason,
    SessionStatus,
    is_valid_history,
    validate_spec,
)
from ticktape.errors import SessionNotFound
from ticktape.metrics import Metrics
from ticktape.runtime.supervisor import Supervisor
from ticktape.service import SessionService
from ticktape.store import open_store
from ticktape.store.base import SessionQuery

SYMBOLS = st.lists(
    st.sampled_from(["BTC_USDT", "ETH_USDT", "SOL_USDT"]), min_size=1, max_size=3, unique=True
)


class Instance:
    """One "server": supervisor + service over the shared store."""

    def __init__(self, store: Any, settings_: Settings) -> None:
        self.metrics = Metrics()
        self.supervisor = Supervisor(store, settings_, self.metrics)
        self.service = SessionService(store, self.supervisor, settings_, self.metrics)


class SessionMachine(RuleBasedStateMachine):
    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(TMP_FACTORY.mktemp("stateful"))
        self.settings = Settings(
            store_url=f"sqlite:///{self.tmp}/t.db",
            instance_name="prop-instance",
            heartbeat_interval_s=0.2,
            lease_s=2.0,
            reconcile_interval_s=0.5,
            flush_interval_s=0.05,
            buffer_max_rows=20_000,
            flush_max_rows=5_000,
        )
        self.store = open_store(self.settings.store_url)
        self.run(self.store.open())
        self.instance = self._boot()
        self.terminal: dict[str, SessionStatus] = {}  # what we saw end, must never change
        self.known: set[str] = set()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _boot(self) -> Instance:
        instance = Instance(self.store, self.settings)
        self.run(instance.supervisor.start())
        return instance

    @rule(target=sessions, symbols=SYMBOLS, rate=st.sampled_from([5, 500, 20_000]))
    def start(self, symbols: list[str], rate: int) -> str:
        spec = validate_spec(kind="collect", symbols=symbols, rate_per_s=rate)
        session = self.run(self.instance.service.create(spec))
        # invariant 2: visible at once, to a read that goes through the store
        assert self.run(self.instance.service.get(session.id)).id == session.id
        self.known.add(session.id)
        return str(session.id)

    @rule(session_id=sessions)
    def stop_and_wait(self, session_id: str) -> None:
        session = self.run(self.instance.service.stop(session_id, wait=True, timeout_s=30))
        assert session.status in TERMINAL_STATUSES
        counts = self.run(self.store.ticks.count(session_id))
        # invariant 7: stats equal stored rows once stopped
        assert (session.stats.trades, session.stats.orderbook) == (counts.trades, counts.orderbook)

    @rule(session_id=sessions)
    def stop_no_wait(self, session_id: str) -> None:
        session = self.run(self.instance.service.stop(session_id))
        assert session.status in {SessionStatus.STOPPING} | TERMINAL_STATUSES

    @rule(session_id=sessions)
    def get(self, session_id: str) -> None:
        assert self.run(self.instance.service.get(session_id)).id == session_id

    @rule()
    def get_unknown(self) -> None:
        with pytest.raises(SessionNotFound):
            self.run(self.instance.service.get("no-such-session"))

    @rule()
    def let_time_pass(self) -> None:
        self.run(asyncio.sleep(0.1))

    @rule()
    def graceful_restart(self) -> None:
        self.run(self.instance.supervisor.shutdown())
        for session in self._all():
            assert session.status not in ACTIVE_STATUSES, session  # nothing left running
        self.instance = self._boot()

    @rule()
    def crash_restart(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in tasks:
            task.cancel()
        self.run(asyncio.gather(*tasks, return_exceptions=True))
        # A cancelled task's SQLite call still finishes on the writer thread (a killed
        # process's would not): queue a no-op write behind it so the crash is complete.
        self.run(self.store._db.write(lambda conn: None, "drain"))
        self.instance = self._boot()  # same instance name: reaps its dead incarnation
        for session in self._all():
            if session.status in ACTIVE_STATUSES:
                assert session.owner == self.instance.supervisor.owner, session
            elif session.id not in self.terminal and session.reason == Reason.OWNER_LOST:
                counts = self.run(self.store.ticks.count(session.id))
                assert session.stats.trades == counts.trades

    def _all(self) -> list[Any]:
        page = self.run(
            self.instance.service.list_sessions(SessionQuery(limit=500, include_deleted=True))
        )
        return list(page.sessions)

    @invariant()
    def invariants_hold(self) -> None:
        listed = {s.id: s for s in self._all()}
        # invariant 1/6: every acknowledged session is found, by get and by list, agreeing
        assert self.known <= set(listed)
        running_here = set(self.instance.supervisor.running_ids)
        for sid in self.known:
            session = listed[sid]
            # invariant 4: terminal states are final
            if sid in self.terminal:
                assert session.status == self.terminal[sid], (sid, session)
            elif session.status in TERMINAL_STATUSES:
                self.terminal[sid] = session.status
            # invariant 5: every running session has an owner with a lease, and it is us
            if session.status is SessionStatus.RUNNING:
                assert session.owner == self.instance.supervisor.owner
                assert session.lease_expires_at is not None
                assert sid in running_here
            before = self.run(self.instance.service.get(sid))
            events = self.run(self.instance.service.events(sid))
            after = self.run(self.instance.service.get(sid))
            statuses = [e.to_status for e in events if e.from_status != e.to_status]
            assert is_valid_history(statuses), statuses
            if before.version == after.version:  # background tasks may move it meanwhile
                assert statuses[-1] == after.status

    def teardown(self) -> None:
        try:
            self.run(self.instance.supervisor.shutdown())
            self.run(self.store.close())
        finally:
            self.loop.close()


TMP_FACTORY: Any = None


@pytest.fixture(autouse=True)
def _tmp_factory(tmp_path_factory: pytest.TempPathFactory) -> None:
    global TMP_FACTORY
    TMP_FACTORY = tmp_path_factory


SessionMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_session_state_machine = SessionMachine.TestCase
