"""A paused owner comes back as a zombie: it must stop at once and store nothing more.

The owner is frozen with SIGSTOP for longer than its lease, the other instance
reaps its session, then the owner is resumed with SIGCONT. Its runner must stop
itself within one heartbeat (it sees its lease is gone), the stored rows must not
grow after the reap (the store fences late writes), the session's stats must
equal its stored rows, and the old owner's /metrics must count the zombie. Its notes
(lease_lost, runner_tally, zombie_stopped) reach the store only after the reap, so the
store refuses them (add_event(owner=...)): the reap's terminal event stays the last in
the history, and the zombie's account is its metrics and its log.
"""

from __future__ import annotations

import signal
import time

from tests.acceptance.helpers import assert_valid_history, start_collect, stored_counts, wait_for
from tests.acceptance.test_multi_instance import (
    BOUND_S,
    EVENTUAL_S,
    StartServer,
    client,
    owner_of,
    recorded_exactly,
    report,
    start_server,
)
from ticktape.testing import ServerProcess

__all__ = ["start_server"]  # a fixture, used by name

MAX_PAUSE_ATTEMPTS = 50


def metric(server: ServerProcess, name: str) -> float:
    with client(server) as c:
        for line in c.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name!r} in /metrics: a misspelt name must not read as 0")


def pause(server: ServerProcess) -> None:
    """SIGSTOP at a moment the server does not hold the SQLite write lock (see
    ServerProcess.freeze: a frozen writer would block the file, not the subject here)."""
    assert server.freeze(MAX_PAUSE_ATTEMPTS), "the server always held the SQLite write lock"


def test_a_paused_owner_stops_its_runner_on_waking_and_stores_nothing_late(
    start_server: StartServer,
) -> None:
    a, b = start_server(), start_server()
    with client(a) as ca:
        sid = start_collect(ca, rate_per_s=1000)["id"]
    with client(b) as cb:
        wait_for(cb, sid, lambda s: s["stats"]["records_collected"] > 0, what="data")
        pause(a)
        paused = time.monotonic()
        reaped = wait_for(
            cb, sid, lambda s: s["status"] == "failed", timeout_s=BOUND_S + 10, what="the reap"
        )
        reaped_after_s = time.monotonic() - paused
        assert reaped["reason"] == "owner_lost"
        at_reap = stored_counts(cb, sid)
        a.signal(signal.SIGCONT)
        woke = time.monotonic()
        deadline = woke + EVENTUAL_S  # it must come; how soon is the report's figure
        while metric(a, "ticktape_zombies_self_stopped_total") < 1:
            assert time.monotonic() < deadline, "the zombie did not stop itself"
            time.sleep(0.02)
        stopped_after_s = time.monotonic() - woke
        assert metric(a, "ticktape_local_runners") == 0
        # the zombie's last note was tried, and refused: the session was reaped meanwhile
        refused = f"session {sid}: could not record 'zombie_stopped'"
        while refused not in a.logs():
            assert time.monotonic() < deadline, "the zombie's note was never tried"
            time.sleep(0.02)
        assert stored_counts(cb, sid) == at_reap  # nothing stored after the reap
        session = recorded_exactly(cb, sid, reaped=True)
        assert session["status"] == "failed"
        history = assert_valid_history(cb, sid)
        reasons = [e["reason"] for e in history]
        assert reasons[-1] == "owner_lost", reasons  # the terminal event stays the last
        zombie_notes = [e for e in history if e["actor"].startswith(f"{owner_of(a)}/")]
        assert not [e for e in zombie_notes if e["reason"] in ("zombie_stopped", "runner_tally")]
        report(
            "zombie",
            reaped_after_pause_s=reaped_after_s,
            stopped_after_wake_s=stopped_after_s,
            fenced_writes=metric(a, "ticktape_fenced_writes_total"),
            lease_renew_failures=metric(a, "ticktape_lease_renew_failures_total"),
        )
