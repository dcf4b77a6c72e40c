"""Test support: helpers for tests and benchmarks, never used by the product itself.

- :class:`ServerProcess`, :func:`running_server`: the real ``ticktape serve`` as a
  subprocess, configured only through flags and environment variables; with
  ``faults=`` it runs :mod:`ticktape.testing.faulty_server` instead, the same server
  with store faults injected into its runtime.
- :class:`Instance`, :func:`instances`: what ``ticktape serve`` wires together (store
  handle, supervisor, service) in this process, each behind a :class:`FaultyStore`.
- :class:`FaultyStore`: wraps any store and fails or delays the calls a rule picks
  (:meth:`FaultyStore.fail`, :meth:`FaultyStore.delay`, :meth:`FaultyStore.from_spec`).
- :func:`crash` (a supervisor dies as with SIGKILL), :func:`eventually` (await a
  condition with a deadline instead of sleeping), :func:`free_port`, :func:`sigstop`
  (freeze a process and wait until every thread of it has stopped).
- :func:`sim_blocks` / :func:`iter_sim_blocks` (the simulated exchange's ticks, no wall
  clock) and :func:`record_source` (a finished collect session holding them, written
  straight into a store): the source of backtest tests and ``bench/backtest.py``.
- :func:`lone_reconciler`: a reconciler with no supervisor and no runners (tests of
  its passes).
- :func:`draft_session`: a pending collect session to store (tests and benchmarks);
  :func:`store_finished`: sessions stored and ended ``failed`` through the contract
  (create, then one transition), a store's history of finished sessions.

Fault injection is composition: the store is wrapped where a test or benchmark
builds the app (``create_app(runtime_store=...)``); the production settings and
supervisor know nothing of it. The modules inside this package are private.
"""

from ticktape.testing._faults import (
    OPERATIONS,
    FaultRule,
    FaultyStore,
    parse_fault_spec,
)
from ticktape.testing._reconciling import lone_reconciler
from ticktape.testing._recording import (
    draft_session,
    iter_sim_blocks,
    record_source,
    sim_blocks,
    store_finished,
)
from ticktape.testing._servers import (
    TICKTAPE,
    Instance,
    ServerProcess,
    crash,
    eventually,
    free_port,
    instances,
    running_server,
    sigstop,
    stopped,
)

__all__ = [
    "OPERATIONS",
    "TICKTAPE",
    "FaultRule",
    "FaultyStore",
    "Instance",
    "ServerProcess",
    "crash",
    "draft_session",
    "eventually",
    "free_port",
    "instances",
    "iter_sim_blocks",
    "lone_reconciler",
    "parse_fault_spec",
    "record_source",
    "running_server",
    "sigstop",
    "sim_blocks",
    "stopped",
    "store_finished",
]
