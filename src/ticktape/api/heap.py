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
"""

from __future__ import annotations

import gc

FULL_COLLECTION_EVERY = 100  # generation-1 collections per full one (CPython: 10)


def tune_collector() -> None:
    """Freeze what is alive now; make full collections ten times rarer."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
