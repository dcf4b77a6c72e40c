"""Reading a recorded session for replay: consecutive windows of columnar batches.

:func:`read_chunks` walks a session's ticks in exchange-time windows
(``TickStore.read_window``), so a replay holds one window at a time however long
the recording is. Windows are sized to about ``target_rows`` ticks: the first from
the session's average density, each next one scaled by how many rows the last
returned (at most 4 times larger or smaller), so a quiet stretch is crossed in few reads and a
burst does not blow the memory bound by more than that factor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from ticktape.store.base import TickStore
from ticktape.ticks import TickBatch

DEFAULT_CHUNK_ROWS = 200_000
MIN_WINDOW_US = 1_000  # 1 ms
MAX_GROWTH = 4.0

Reader = Callable[[int, int], Awaitable[list[TickBatch]]]


async def read_chunks(
    ticks: TickStore,
    session_id: str,
    *,
    symbols: tuple[str, ...] | None,
    first_us: int,
    last_us: int,
    total_rows: int,
    target_rows: int = DEFAULT_CHUNK_ROWS,
    max_window_us: int | None = None,
    read: Reader | None = None,
) -> AsyncIterator[list[TickBatch]]:
    """Chunks of ``session_id``'s ticks with ``first_us <= ts <= last_us``, oldest first.

    ``total_rows`` (the session's tick count, an estimate is enough) sizes the first
    window. ``max_window_us`` caps a window's exchange time (a paced replay reads
    about a second of wall time ahead). ``read`` replaces ``ticks.read_window`` (to
    wrap it in retries).
    """

    async def default_read(lo: int, hi: int) -> list[TickBatch]:
        return await ticks.read_window(session_id, lo, hi, symbols)

    reader = read or default_read
    span = max(1, last_us - first_us + 1)
    cap = max_window_us or span
    window = min(cap, max(MIN_WINDOW_US, int(span * target_rows / max(1, total_rows))))
    lo = first_us
    while lo <= last_us:
        hi = min(lo + window, last_us + 1)
        batches = await reader(lo, hi)
        rows = sum(len(b) for b in batches)
        if rows:
            yield batches
        scale = (
            MAX_GROWTH if rows == 0 else min(MAX_GROWTH, max(1 / MAX_GROWTH, target_rows / rows))
        )
        window = min(cap, max(MIN_WINDOW_US, int(window * scale)))
        lo = hi
