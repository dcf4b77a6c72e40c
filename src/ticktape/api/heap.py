"""The server process's garbage collector, set for a long-lived server.

Measured during ``bench/lifecycle.py -c 32`` on SQLite (docs/benchmarks.md, "Stop
13"): the start→get tail was CPython's full (generation-2) collections. Each one
walked the whole heap — ~50,000 objects of the imported libraries and the app,
plus the running sessions' objects (100,000 to 180,000 in all during the run) — for
50 to 120 ms of CPU with the event loop stopped, and one ran every 1 to 3 s; they found
next to nothing to free (the sessions' objects die by reference counting). Two
changes, made once the server has started (after the app's start-up, so its
objects are in place):

- :func:`gc.freeze` moves every object alive then (modules, routes, pydantic
  schemas, the settings) out of the collector's reach: no collection walks them
  again. They live as long as the process anyway.
- The third threshold goes from 10 to :data:`FULL_COLLECTION_EVERY`: a full
  collection runs after that many generation-1 collections instead of 10.
  Generations 0 and 1 are unchanged, so a cycle of young objects is still
  freed as soon as before; cyclic garbage that reached the oldest generation
  waits longer (a few tens of seconds at full load instead of a few).

``TICKTAPE_PYTHON_GC=0`` leaves the collector as CPython sets it. Only ``ticktape
serve`` (and each ``--workers`` worker) does this: an app embedded in another
program, or built by a test, leaves that program's collector alone.

The C allocator too (glibc's malloc, :func:`fix_mmap_threshold`): it serves a block of
at least its mmap threshold (128 KiB at first) from a mapping of its own, unmapped when
freed, and it raises that threshold to the size of every larger mapped block freed (up
to 32 MiB), its heaps' trim threshold to twice that. The ILP client's buffer grows by
doubling to the largest send and frees a mapping of several MiB at each doubling; from
then on the tick frames' columns (hundreds of KiB to a few MiB, built and freed at every
send) come from the heaps, and what they free there stays resident between live blocks.
At 1,000 sessions on QuestDB the instance's RSS rose tens of MiB in ten minutes while its
live memory (Python's and malloc's) stayed flat (docs/benchmarks.md, stop 18, rss11).
``serve`` sets the threshold once, which also ends its raising: large blocks are mapped
and unmapped again (a page fault per 4 KiB first touched).
``TICKTAPE_MALLOC_MMAP_THRESHOLD_BYTES=0`` leaves glibc's own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

FULL_COLLECTION_EVERY = 100  # generation-1 collections per full one (CPython: 10)
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def tune_collector() -> None:
    """Freeze what is alive now; make full collections ten times rarer."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def fix_mmap_threshold(threshold_bytes: int) -> bool:
    """Set glibc's mmap threshold to ``threshold_bytes`` for good (see the module).
    False where there is no glibc ``mallopt`` (musl, macOS) or it refused the value."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
