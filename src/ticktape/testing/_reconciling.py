"""A reconciler on its own, without a supervisor: for tests of its passes."""

from __future__ import annotations

from collections.abc import Mapping

from ticktape.config import Settings
from ticktape.domain import Session
from ticktape.metrics import Metrics
from ticktape.runtime.handle import RunHandle
from ticktape.runtime.leases import LeaseKeeper
from ticktape.runtime.reconciler import Reconciler
from ticktape.store.base import Store


class _NoRunners:
    """The reconciler's host when nothing runs here and nothing may be resumed."""

    handles: Mapping[str, RunHandle] = {}
    closing = False

    def launch(self, session: Session, *, resumed: bool = False) -> None:
        raise AssertionError(f"nothing is resumable here (asked to launch {session.id})")

    def store_fault(self, session_id: str) -> str | None:
        return None


def lone_reconciler(store: Store, settings: Settings, *, owner: str, instance: str) -> Reconciler:
    """A reconciler for ``owner`` (of ``instance``) over ``store``, with its own lease
    keeper and metrics and no runners: it reaps and seals, and fails the test if a
    pass tries to resume a session here."""
    metrics = Metrics()
    leases = LeaseKeeper(store, settings, metrics, owner)
    return Reconciler(
        store, settings, metrics, owner=owner, instance=instance, leases=leases, host=_NoRunners()
    )
