"""The one retry of transient store errors: bounded full-jitter backoff (invariant 3).

Its bounds are named in :class:`ticktape.config.RetryPolicy`; docs/design.md states them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ticktape.config import STORE_RETRY_ATTEMPTS, STORE_RETRY_BASE_S, STORE_RETRY_MAX_S
from ticktape.errors import StoreBusy, StoreUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Errors worth retrying: the operation did not happen and may succeed later.
TRANSIENT = (StoreBusy, StoreUnavailable)


def backoff_delays(attempts: int, base_s: float, max_s: float) -> list[float]:
    """Full-jitter delays between attempts: ``attempts - 1`` of them."""
    return [random.uniform(0, min(max_s, base_s * 2**i)) for i in range(attempts - 1)]


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int = STORE_RETRY_ATTEMPTS,
    base_s: float = STORE_RETRY_BASE_S,
    max_s: float = STORE_RETRY_MAX_S,
    on_retry: Callable[[Exception], None] | None = None,
    errors: tuple[type[Exception], ...] = TRANSIENT,
    log_level: int = logging.WARNING,
) -> T:
    """Run ``operation``; on a transient store error wait and retry, at most ``attempts`` times.

    ``errors`` narrows what counts as transient (e.g. only :class:`StoreBusy`, a lock
    another writer holds for milliseconds, retried soon and often). The last error
    propagates unchanged, so the caller gets the store's own message.
    """
    # The delays are drawn only when an attempt fails: most calls succeed at once, and
    # drawing them all up front was 3 % of a busy server's event loop (issue 13).
    for attempt in range(attempts - 1):
        try:
            return await operation()
        except errors as exc:
            delay = random.uniform(0, min(max_s, base_s * 2**attempt))
            log.log(log_level, "%s failed (%s); retrying in %.3fs", what, exc, delay)
            if on_retry is not None:
                on_retry(exc)
            await asyncio.sleep(delay)
    return await operation()
