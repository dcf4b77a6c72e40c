"""The server process's garbage collector, set for a long-lived server.

Measured during ``bench/lifecycle.py -c 32`` on SQLite (docs/benchmarks.md, "Stop
13"): the start→get tail was CPython's full (generation-2) collections. Each one
walked the whole heap — ~50,000 objects of the imported libraries and the app,
plus the running sessions' objects (100,000 to 180,000 in all during the run) — for
50 to 120 ms of CPU with the event loop stopped, and one ran every 1 to 3 s; they found
next to nothing to free (the sessions' objects die by reference counting). Three
changes, made once the server has started (after the app's start-up, so its
objects are in place):

- :func:`gc.freeze` moves every object alive then (modules, routes, pydantic
  schemas, the settings) out of the collector's reach: no collection walks them
  again. They live as long as the process anyway.
- The third threshold goes from 10 to :data:`FULL_COLLECTION_EVERY`: a full
  collection runs after that many generation-1 collections instead of 10.
  Cyclic garbage that reached the oldest generation waits longer (a few tens of
  seconds at full load instead of a few).
- The first threshold goes from 700 to :data:`YOUNG_COLLECTION_EVERY`. Measured on
  QuestDB with 1,000 running sessions on one instance (docs/benchmarks.md, "Stop
  19 — startfast12"): with 700, about 50 young collections a second, each walking
  the young objects still alive then (ticks in buffers and in flight, rows of the
  store's reads): 5.8 % of the wall time in collections of all generations, every
  thread stopped, freeing next to nothing; with 10,000, 2 a second, most of those
  objects already gone by reference counting, 3.3 % in all, a young collection ~9 ms
  (up to ~30). Cyclic young garbage is freed after 10,000 new objects instead of 700.

``TICKTAPE_PYTHON_GC=0`` leaves the collector as CPython sets it. Only ``ticktape
serve`` (and each ``--workers`` worker) does this: an app embedded in another
program, or built by a test, leaves that program's collector alone.
"""

from __future__ import annotations

import gc

FULL_COLLECTION_EVERY = 100  # generation-1 collections per full one (CPython: 10)
YOUNG_COLLECTION_EVERY = 10_000  # net new container objects per young collection (CPython: 700)


def tune_collector() -> None:
    """Freeze what is alive now; make young collections rarer, full ones ten times rarer."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, FULL_COLLECTION_EVERY)
