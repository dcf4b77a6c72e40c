"""Random sequences of start, stop, get, list and restarts keep DESIGN.md's invariants.

A hypothesis state machine drives the real service, supervisor and collect
runner on a real SQLite file and on a real QuestDB (tables of its own per
example). "Restart" is either graceful (shutdown) or a crash (every task of the
instance cancelled, no shutdown code, as with SIGKILL); either way the store
handle is closed and a new one opened, and the next incarnation has the same
instance name, like a restarted server. Every stopped session's data is checked
against the oracle of ``tests/oracle.py`` (the feed's own ids, the runner's tally).

The search is random, not a replay of fixed sequences: CI runs a modest number of
examples (``STATEFUL_EXAMPLES``); ``--hypothesis-profile ticktape-nightly`` runs
many more. A failure prints the seed to reproduce it (``--hypothesis-seed``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import _drop_tables, isolated_questdb_url, questdb_available
from tests.oracle import check_stored
from ticktape.config import Settings
from ticktape.domain import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Reason,
    Session,
    SessionStatus,
    Stats,
    is_valid_history,
    utcnow,
    validate_spec,
)
from ticktape.errors import SessionNotFound
from ticktape.metrics import Metrics
from ticktape.runners import default_runners
from ticktape.runtime.supervisor import Supervisor
from ticktape.service import SessionService
from ticktape.store import open_store
from ticktape.store.base import SessionQuery

#: Examples per backend in CI, and steps per example; a hypothesis profile other than the
#: default one (``--hypothesis-profile ticktape-nightly``) sets its own ``max_examples``.
STATEFUL_EXAMPLES = {"sqlite": 40, "questdb": 8}
STATEFUL_STEPS = 20
DROP_TIMEOUT_S = 30.0
CI_PROFILE = "ticktape"

SYMBOLS = st.lists(
    st.sampled_from(["BTC_USDT", "ETH_USDT", "SOL_USDT"]), min_size=1, max_size=3, unique=True
)


class Instance:
    """One "server": supervisor + service over the shared store."""

    def __init__(self, store: Any, settings_: Settings) -> None:
        self.metrics = Metrics()
        self.supervisor = Supervisor(store, settings_, self.metrics, default_runners())
        self.service = SessionService(store, self.supervisor, settings_, self.metrics)


class SessionMachine(RuleBasedStateMachine):
    sessions = Bundle("sessions")
    store_url: Any = None  # () -> a URL of a new, empty store (set per backend by the test)
    drop_store: Any = None  # (url) -> None: remove that store once the example is done

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.settings = Settings(
            store_url=type(self).store_url(),
            instance_name="prop-instance",
            heartbeat_interval_s=0.2,
            lease_s=2.0,
            reconcile_interval_s=0.5,
            flush_interval_s=0.05,
            buffer_max_rows=20_000,
            flush_max_rows=5_000,
        )
        self.store = self._open()
        self.instance = self._boot()
        self.terminal: dict[str, SessionStatus] = {}  # what we saw end, must never change
        self.known: set[str] = set()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _open(self) -> Any:
        store = open_store(self.settings.store_url)
        self.run(store.open())
        return store

    def _reopen(self) -> None:
        """A restarted process: the old store handle closed, a new loop, a new handle."""
        self.run(self.store.close())
        self._end_loop()
        self.loop = asyncio.new_event_loop()
        self.store = self._open()

    def _end_loop(self) -> None:
        """Close the loop, with whatever the old process still had pending cancelled."""
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.run(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def _boot(self) -> Instance:
        instance = Instance(self.store, self.settings)
        self.run(instance.supervisor.start())
        return instance

    @rule(target=sessions, symbols=SYMBOLS, rate=st.sampled_from([5, 200, 2_000]))
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
        self._recorded_exactly(session)

    def _recorded_exactly(self, session: Any) -> None:
        """Invariant 7 against the oracle: the feed's ids, once each, and the runner's tally.

        A session reaped after a crash has no runner tally, and its owner's unflushed
        tail is what the crash lost.
        """
        reaped = session.reason == Reason.OWNER_LOST
        self.run(check_stored(self.store, session.id, tail_lost=reaped, tally=not reaped))

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
            if session.id in self.known:
                self._recorded_exactly(session)
        self._reopen()
        self.instance = self._boot()

    @rule()
    def crash_restart(self) -> None:
        tasks = self.instance.supervisor.tasks  # the instance's own, as testing.crash
        for task in tasks:
            task.cancel()
        self.run(asyncio.gather(*tasks, return_exceptions=True))
        # A cancelled task's store call may still finish on a driver thread (a killed
        # process's would not); closing the handle waits for it, and the new incarnation
        # gets a handle of its own.
        self._reopen()
        self.instance = self._boot()  # same instance name: reaps its dead incarnation
        for session in self._all():
            if session.status in ACTIVE_STATUSES:
                assert session.owner == self.instance.supervisor.owner, session
            elif session.id not in self.terminal and session.reason == Reason.OWNER_LOST:
                self._recorded_exactly(session)

    def _all(self) -> list[Any]:
        page = self.run(
            self.instance.service.list_sessions(SessionQuery(limit=500, include_deleted=True))
        )
        return list(page.sessions)

    @invariant()
    def invariants_hold(self) -> None:
        before = {sid: self.run(self.instance.service.get(sid)) for sid in self.known}
        listed = {s.id: s for s in self._all()}
        after = {sid: self.run(self.instance.service.get(sid)) for sid in self.known}
        # invariant 1/6: every acknowledged session is found, by get and by list, agreeing:
        # where no transition moved it between the two gets, the listing shows the same
        # session; only a heartbeat's progress (stats, lease) may have advanced meanwhile
        assert self.known <= set(listed)
        for sid in self.known:
            if before[sid].version == after[sid].version:
                _agree(before[sid], listed[sid], after[sid])
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
                # its runner is here — or stopped itself when its lease ran out (a loaded
                # machine's heartbeats can be late) and the reaper finalises it next
                if sid not in running_here:
                    grace = timedelta(seconds=self.settings.heartbeat_interval_s)
                    assert session.lease_expires_at <= utcnow() + grace, session
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
            self._end_loop()
            type(self).drop_store(self.settings.store_url)


def _agree(before: Session, listed: Session, after: Session) -> None:
    """``listed`` (read between ``before`` and ``after``, same version) is that session."""
    frozen = {"stats": Stats(), "lease_expires_at": None}
    assert replace(listed, **frozen) == replace(before, **frozen), (listed, before)
    for field in ("trades", "orderbook", "errors"):
        seen = [getattr(s.stats, field) for s in (before, listed, after)]
        assert seen == sorted(seen), (field, seen)  # progress only moves forward
    leases = [s.lease_expires_at for s in (before, listed, after)]
    if None not in leases:
        assert leases == sorted(leases), leases  # type: ignore[type-var]


def machine_settings(backend: str) -> settings:
    """Random (not derandomized) search; CI's example count unless a profile asks for more."""
    default = settings.default
    ci = settings.get_current_profile_name() == CI_PROFILE
    return settings(
        default,
        max_examples=STATEFUL_EXAMPLES[backend] if ci else default.max_examples,
        stateful_step_count=STATEFUL_STEPS,
        derandomize=False,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


@pytest.mark.parametrize(
    "store_backend", ["sqlite", pytest.param("questdb", marks=pytest.mark.questdb)]
)
def test_session_state_machine(
    store_backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    dropped_later: list[str] = []
    if store_backend == "sqlite":

        def new_url() -> str:
            return f"sqlite:///{tmp_path_factory.mktemp('stateful')}/t.db"

        def drop(url: str) -> None:
            Path(url.removeprefix("sqlite:///")).parent.joinpath("t.db").unlink(missing_ok=True)

    else:
        if not questdb_available():
            pytest.skip("no QuestDB here (needs Java >= 17 and mvn)")
        server = request.getfixturevalue("questdb_url")

        def new_url() -> str:
            return isolated_questdb_url(server)

        def drop(url: str) -> None:
            """Each example's tables go at once: hundreds would exhaust the server's heap."""
            try:
                _drop_tables(url)
            except psycopg.Error:  # a WAL job may still hold a table: try again at the end
                dropped_later.append(url)

    def drop_the_rest() -> None:
        for url in dropped_later:
            deadline = time.monotonic() + DROP_TIMEOUT_S
            while True:
                try:
                    _drop_tables(url)
                    break
                except psycopg.Error:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)  # a table lock held by the server's WAL job: poll

    request.addfinalizer(drop_the_rest)
    machine = type(
        f"SessionMachine_{store_backend}",
        (SessionMachine,),
        {"store_url": staticmethod(new_url), "drop_store": staticmethod(drop)},
    )
    run_state_machine_as_test(machine, settings=machine_settings(store_backend))
