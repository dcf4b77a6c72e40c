"""The optional disk budget: stop recording before the store's disk fills.

With ``TICKTAPE_DISK_BUDGET_MB`` set, new sessions are refused (429
``disk_budget``) once the store's files reach the budget — see
:meth:`ticktape.service.SessionService.create` — and this loop, run by each
server, stops the sessions running on its instance with reason ``disk_budget``,
so they end ``stopped`` with their data flushed while there is still room,
instead of failing on a full disk. Only stores whose files are local (SQLite)
can be measured; for others the budget does nothing and the server says so.
"""

from __future__ import annotations

import asyncio
import logging

from ticktape.domain import Reason
from ticktape.errors import TicktapeError
from ticktape.service import SessionService
from ticktape.store.base import Store

log = logging.getLogger(__name__)


async def enforce_disk_budget(
    store: Store, service: SessionService, budget_mb: float, interval_s: float
) -> None:
    """Every ``interval_s``: over budget, stop this instance's running sessions."""
    if store.disk_usage_bytes() is None:
        log.warning("TICKTAPE_DISK_BUDGET_MB is set but this store's size cannot be measured")
        return
    while True:
        await asyncio.sleep(interval_s)
        await check_disk_budget(store, service, budget_mb)


async def check_disk_budget(store: Store, service: SessionService, budget_mb: float) -> int:
    """One check; returns how many sessions it asked to stop."""
    used = store.disk_usage_bytes()
    if used is None or used < budget_mb * 1_000_000:
        return 0
    ids = service.local_running_ids()
    if ids:
        log.error(
            "store files take %.1f MB, over the disk budget of %g MB: stopping %d sessions",
            used / 1e6,
            budget_mb,
            len(ids),
        )
    for session_id in ids:
        try:
            await service.stop(session_id, reason=Reason.DISK_BUDGET)
        except TicktapeError as exc:
            log.error("session %s: could not stop for the disk budget: %s", session_id, exc)
    return len(ids)
