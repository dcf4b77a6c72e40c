"""Stores, chosen by URL: ``sqlite:///path``, ``questdb://host:port?ilp=...``, ``memory://``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ticktape.config import DEFAULT_RETRY, RetryPolicy
from ticktape.errors import StoreBusy, StoreUnavailable, ValidationError, clip
from ticktape.redact import redact
from ticktape.store.base import SessionStore, Store, TickStore
from ticktape.store.retrying import RetryingStore


def open_store(
    url: str,
    retry: RetryPolicy = DEFAULT_RETRY,
    *,
    on_retry: Callable[[Exception], None] | None = None,
    actor: str = "store",
    timeout_s: float | None = None,
    log_transaction_max_s: float | None = None,
) -> RetryingStore:
    """The store for ``url`` (not yet opened: call ``await store.open()``).

    Its public face is the retry layer (:class:`~ticktape.store.retrying.RetryingStore`,
    bounded by ``retry``) around the backend, which is ``.inner``. ``timeout_s``
    bounds each of the backend's writes and reads (``TICKTAPE_STORE_TIMEOUT_S``);
    ``log_transaction_max_s`` a QuestDB session-log transaction
    (``TICKTAPE_QUESTDB_LOG_TRANSACTION_MAX_S``; other backends have none).
    """
    backend = _backend(url, retry)
    if timeout_s is not None:
        backend.timeout_s = timeout_s
    if log_transaction_max_s is not None and url.startswith("questdb://"):
        from ticktape.store.questdb import QuestDBStore

        if isinstance(backend, QuestDBStore):
            backend.log_transaction_max_s = log_transaction_max_s
    return RetryingStore(backend, retry, on_retry=on_retry, actor=actor)


def _backend(url: str, retry: RetryPolicy) -> Store:
    if url.startswith("sqlite:///"):
        from ticktape.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith("questdb://"):
        from ticktape.store.questdb import QuestDBStore

        return QuestDBStore(url, retry)
    if url.startswith("memory://"):
        from ticktape.store.memory import MemoryStore

        return MemoryStore(url)
    raise ValidationError(
        f"unknown store URL {clip(redact(url))!r}: use sqlite:///path/to/file.db, "
        "questdb://host:8812?ilp=http://host:9000 or memory://",
        field="store",
    )


async def check_reachable(
    url: str, *, wait_s: float = 0.0, on_retry: Callable[[Exception, float], None] | None = None
) -> None:
    """Open and close the store at ``url``, retrying transient failures for ``wait_s`` seconds.

    Raises the store's own error (one clear line) when it is still unreachable.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.25
    while True:
        store = open_store(url)
        try:
            await store.open()
            return
        except (StoreUnavailable, StoreBusy) as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            if on_retry is not None:
                on_retry(exc, left)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)
        finally:
            await store.close()


__all__ = [
    "RetryingStore",
    "SessionStore",
    "Store",
    "TickStore",
    "check_reachable",
    "open_store",
]
