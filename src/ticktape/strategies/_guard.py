"""A run under a per-call time budget: a strategy that hangs fails its run.

The run goes on a thread of its own. A watchdog (the caller's thread) looks at
the run's progress counter: if it has not moved for ``budget_s`` while the run
was not waiting on its source or its pacing, the strategy is stuck in one call.
The watchdog raises :class:`StrategyTimeout` inside that thread, which ends a
strategy looping in Python at its next bytecode; the run then reports
``strategy_error`` with the stack where it was stuck. A strategy blocked inside
native code cannot be interrupted this way: the watchdog returns the results up
to that point with ``strategy_error`` all the same and leaves the daemon thread
behind (it ends when the native call returns).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable

from ticktape.strategies._engine import Run
from ticktape.strategies._errors import StrategyTimeout
from ticktape.strategies._results import RunResult

DEFAULT_CALL_BUDGET_S = 5.0  # a strategy call that takes longer fails the run
# The watchdog wakes this often (a tenth of the budget, within these bounds). Each
# wake takes the GIL from the run, which on a busy machine can stall it for a
# scheduling slice: it wakes rarely.
POLL_MIN_S = 0.02
POLL_MAX_S = 0.25


def _raise_in(thread: threading.Thread) -> None:
    ident = thread.ident
    if ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(ident), ctypes.py_object(StrategyTimeout)
        )


def run_guarded(
    run: Run,
    body: Callable[[], RunResult],
    partial: Callable[[str, str], RunResult],
    budget_s: float = DEFAULT_CALL_BUDGET_S,
) -> RunResult:
    """Run ``body`` (the engine's ``run``) with the watchdog; ``partial`` builds the
    results of a run whose thread could not be interrupted."""
    outcome: list[RunResult] = []
    crashed: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(body())
        except BaseException as exc:  # an engine bug: hand it to the caller
            crashed.append(exc)

    thread = threading.Thread(target=target, name="ticktape-strategy", daemon=True)
    thread.start()
    seen, since = -1, time.monotonic()
    poll_s = min(POLL_MAX_S, max(POLL_MIN_S, budget_s / 10))
    while thread.is_alive():
        thread.join(poll_s)
        now = time.monotonic()
        if run.ticks != seen or run.waiting:
            seen, since = run.ticks, now
        elif now - since > budget_s:
            _raise_in(thread)
            thread.join(max(budget_s, 1.0))
            if thread.is_alive():
                run.stop.set()  # should it ever return, it goes no further
                return partial(
                    "strategy_error",
                    f"the strategy did not return within its {budget_s:g} s budget per call "
                    "and could not be interrupted",
                )
            break
    if crashed:
        raise crashed[0]
    return outcome[0]
