"""Stores, chosen by URL: ``sqlite:///path``, ``questdb://host:port?ilp=...``, ``memory://``."""

from __future__ import annotations

from ticktape.errors import ValidationError
from ticktape.store.base import SessionStore, Store, TickStore


def open_store(url: str) -> Store:
    """The store for ``url`` (not yet opened: call ``await store.open()``)."""
    if url.startswith("sqlite:///"):
        from ticktape.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith("questdb://"):
        from ticktape.store.questdb import QuestDBStore  # type: ignore[import-not-found,unused-ignore]

        return QuestDBStore(url)  # type: ignore[no-any-return,unused-ignore]
    if url.startswith("memory://"):
        from ticktape.store.memory import MemoryStore

        return MemoryStore(url)
    raise ValidationError(
        f"unknown store URL {url!r}: use sqlite:///path/to/file.db, "
        "questdb://host:8812?ilp=http://host:9000 or memory://",
        field="store",
    )


__all__ = ["SessionStore", "Store", "TickStore", "open_store"]
