"""The in-memory backend (``memory://``): the whole store contract in one process.

For unit tests and the fake: it keeps compare-and-set, fencing and idempotent
tick writes exactly as the real backends do. The public face is :class:`MemoryStore`;
the modules inside this package are private.
"""

from ticktape.store.memory._store import MemoryStore

__all__ = ["MemoryStore"]
