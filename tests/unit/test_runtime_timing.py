"""The timing the orphan bound rests on: reconcile interval, jitter, self-fencing (no I/O)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from ticktape.config import (
    HEARTBEAT_INTERVAL_S,
    LEASE_S,
    RECONCILE_JITTER_MIN,
    RECONCILE_WAKE_SPREAD,
    Settings,
)
from ticktape.domain import Session, utcnow
from ticktape.metrics import Metrics
from ticktape.runtime import reconciler as reconciler_module
from ticktape.runtime.leases import LeaseKeeper
from ticktape.runtime.reconciler import Reconciler, wait_before_pass
from ticktape.store.memory import MemoryStore
from ticktape.testing import faulty_server


def test_the_reconcile_interval_defaults_to_the_heartbeat_interval() -> None:
    settings = Settings.from_env({})
    assert settings.reconcile_interval_s is None
    assert settings.reconcile_every_s == HEARTBEAT_INTERVAL_S
    assert settings.reap_bound_s == LEASE_S + HEARTBEAT_INTERVAL_S


def test_the_reconcile_interval_follows_a_configured_heartbeat() -> None:
    settings = Settings.from_env({"TICKTAPE_HEARTBEAT_S": "0.5", "TICKTAPE_LEASE_S": "2"})
    assert (settings.reconcile_every_s, settings.reap_bound_s) == (0.5, 2.5)


def test_an_explicit_reconcile_interval_is_kept_and_widens_the_bound() -> None:
    settings = Settings.from_env({"TICKTAPE_RECONCILE_S": "3"})
    assert settings.reconcile_every_s == 3.0
    assert settings.reap_bound_s == LEASE_S + 3.0


def test_a_zero_reconcile_interval_is_refused() -> None:
    with pytest.raises(SystemExit):
        Settings.from_env({"TICKTAPE_RECONCILE_S": "0"})


@pytest.mark.parametrize(
    ("heartbeat", "lease"), [(2.0, 10.0), (0.5, 2.0), (0.2, 1.0), (2.0, 2.5), (1.0, 1.1)]
)
def test_self_fencing_comes_after_the_next_heartbeat_and_before_the_lease_ends(
    heartbeat: float, lease: float
) -> None:
    settings = Settings(heartbeat_interval_s=heartbeat, lease_s=lease)
    assert heartbeat < settings.self_fence_after_s < lease


def test_the_production_settings_know_nothing_of_fault_injection() -> None:
    """Faults are injected by composition (ticktape.testing.faulty_server), not by a setting."""
    assert "faults" not in {f.name for f in dataclasses.fields(Settings)}
    assert not hasattr(Settings.from_env({"TICKTAPE_FAULTS": "write=0.1"}), "faults")


def test_the_faulty_server_reads_its_spec_and_the_usual_settings() -> None:
    settings, spec = faulty_server.parse_args(
        ["--faults", "write=0.1", "--port", "9123", "--store", "memory://"]
    )
    assert spec == "write=0.1"
    assert (settings.port, settings.store_url) == (9123, "memory://")


def test_a_malformed_fault_spec_stops_the_faulty_server_with_one_line() -> None:
    with pytest.raises(SystemExit, match=r"--faults: invalid fault 'wrte=0\.1'"):
        faulty_server.parse_args(["--faults", "wrte=0.1"])


def test_reconciler_waits_never_exceed_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jitter spreads the instances but never lengthens a wait, and a wait plus the pass's
    visibility budget stays within the interval (the bound needs that)."""
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) >= 200:
            raise asyncio.CancelledError

    async def nothing(**_: Any) -> int:
        return 0

    monkeypatch.setattr(reconciler_module.asyncio, "sleep", fake_sleep)
    monkeypatch.setattr(reconciler_module, "random", random.Random(7))
    settings = Settings(heartbeat_interval_s=0.5, lease_s=2.0)
    store, metrics = MemoryStore(), Metrics()
    leases = LeaseKeeper(store, settings, metrics, "me/1")
    rec = Reconciler(
        store,
        settings,
        metrics,
        owner="me/1",
        instance="me",
        leases=leases,
        host=None,  # type: ignore[arg-type]
    )
    monkeypatch.setattr(rec, "reconcile", nothing)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(rec.loop())
    assert len(waits) == 200
    budget = settings.reconcile_pass_budget_s  # kept for the pass itself
    assert 0 < settings.reconcile_visibility_s < budget < 0.5
    assert max(waits) + budget <= 0.5
    assert min(waits) >= (0.5 - budget) * RECONCILE_JITTER_MIN


def test_the_reconciler_wakes_just_after_the_earliest_known_lease_expires() -> None:
    """With a next expiry known from its last scan, the wait ends just after it (plus a
    spread of at most RECONCILE_WAKE_SPREAD of the interval), never later than the
    polling wait; an expiry past the polling wait leaves the polling wait."""
    settings = Settings(heartbeat_interval_s=0.5, lease_s=2.0)
    polling = settings.reconcile_every_s - settings.reconcile_pass_budget_s
    spread = settings.reconcile_every_s * RECONCILE_WAKE_SPREAD
    for _ in range(100):
        assert wait_before_pass(settings, utcnow() + timedelta(seconds=0.1)) <= 0.1 + spread
        # expired already: go now
        assert wait_before_pass(settings, utcnow() - timedelta(seconds=1)) <= spread
        far = wait_before_pass(settings, utcnow() + timedelta(seconds=60))
        assert polling * RECONCILE_JITTER_MIN <= far <= polling
        unknown = wait_before_pass(settings, None)
        assert polling * RECONCILE_JITTER_MIN <= unknown <= polling


def test_before_a_lease_expires_the_reconciler_wakes_once_its_owner_would_have_stopped() -> None:
    """A lease expiring later than ``lost_owner_quiet_s`` from now gets a pass just after
    that much before it (the pass notes what the tick store committed, the target of the
    seals should its owner be lost); nearer, the wake is just after the expiry itself."""
    settings = Settings()  # heartbeat 2 s, lease 10 s: the polling wait is 0.75-1.5 s
    quiet = settings.lost_owner_quiet_s
    spread = settings.reconcile_every_s * RECONCILE_WAKE_SPREAD
    assert spread < quiet < 1.0
    for _ in range(100):
        before = wait_before_pass(settings, utcnow() + timedelta(seconds=1.0))
        assert 1.0 - quiet - 0.01 <= before <= 1.0 - quiet + spread
        near = wait_before_pass(settings, utcnow() + timedelta(seconds=quiet / 2))
        assert quiet / 2 - 0.01 <= near <= quiet / 2 + spread


def test_a_pass_learns_the_next_expiry_from_its_scan(
    make_session: Callable[..., Session],
) -> None:
    async def scenario() -> None:
        settings = Settings(heartbeat_interval_s=0.5, lease_s=2.0)
        store, metrics = MemoryStore(), Metrics()
        await store.open()
        until = utcnow() + timedelta(seconds=30)
        session = await store.sessions.create_session(
            make_session(owner="other/1", lease_expires_at=until), actor="t"
        )
        rec = Reconciler(
            store,
            settings,
            metrics,
            owner="me/1",
            instance="me",
            leases=LeaseKeeper(store, settings, metrics, "me/1"),
            host=None,  # type: ignore[arg-type]
        )
        assert await rec.reconcile() == 0
        assert rec.next_expiry == session.lease_expires_at == until

    asyncio.run(scenario())
