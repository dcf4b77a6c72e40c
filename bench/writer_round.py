"""The instance's tick writer alone: CPU per session per round, with a stand-in store.

``--sessions`` registrations with the instance's :class:`~ticktape.runners.writer.TickWriter`;
each round, every session's buffer is offered one 5-row batch (``flush_eager_rows`` 5, so
each buffer becomes due and the writer is woken at once) and the writer writes them all
with one ``write_sessions`` call of a stand-in store that answers at once. The figure is
the process's CPU time per session per round (the offers, the round and the answers'
rules), so only the writer's own Python is measured, not a backend. ``--code
LABEL=SRC`` runs the same in a child process with another tree's ``ticktape`` (e.g.
main's ``git archive``); the codes alternate ``--rounds`` times. The load average is
printed beside each figure; one JSON line last.

    .venv/bin/python bench/writer_round.py --sessions 1000 --writes 200 --rounds 5 \\
        --code before=/tmp/before/src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, cast

import numpy as np

from codes import add_code_option, code_trees, env_for
from standins import AckingStore, QuietClient
from ticktape.config import Settings
from ticktape.metrics import Metrics
from ticktape.runners import TickWriter
from ticktape.runtime.handle import RunHandle
from ticktape.store.base import Store
from ticktape.ticks import TickBatch, TradeBatch

ROWS = 5


class _Client(QuietClient):
    """Every session's rules, with the round's tally."""

    def __init__(self, sessions: int) -> None:
        self.sessions = sessions
        self.stored_now = 0
        self.round_done = asyncio.Event()  # every session's answer applied

    def stored(self, batches: list[TickBatch], handle: RunHandle) -> None:
        self.stored_now += 1
        if self.stored_now == self.sessions:
            self.round_done.set()


def _batch(session_id: str) -> TradeBatch:
    ids = np.arange(ROWS, dtype=np.int64)
    ones = np.ones(ROWS)
    return TradeBatch(session_id, "X", ids, ids, ones, ones, np.ones(ROWS, dtype=np.int8))


async def _measure(sessions: int, writes: int) -> float:
    """CPU µs per session per round."""
    store = AckingStore()
    settings = Settings(store_url="memory://", flush_interval_s=3600.0, flush_eager_rows=ROWS)
    writer = TickWriter(cast(Store, store), settings, Metrics(), "bench")
    client = _Client(sessions)
    regs = [writer.register(RunHandle(f"s{i}"), client) for i in range(sessions)]
    blocks = [[_batch(f"s{i}")] for i in range(sessions)]
    start = time.process_time()
    for _ in range(writes):
        client.stored_now = 0
        client.round_done.clear()
        for reg, block in zip(regs, blocks, strict=True):
            if not reg.buffer.offer(block):
                await reg.buffer.put(block)
        await asyncio.wait_for(client.round_done.wait(), 60)
    cpu = time.process_time() - start
    for reg in regs:
        writer.unregister(reg)
    return cpu / (writes * sessions) * 1e6


def _child(args: argparse.Namespace, src: str | None) -> float:
    """One run in a fresh process (each code alike): this tree's, or ``src``'s."""
    env = env_for(src, os.environ)
    cmd = [sys.executable, __file__, "--child", "--sessions", str(args.sessions)]
    out = subprocess.run(
        [*cmd, "--writes", str(args.writes)], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=200, help="rounds measured per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per code, alternated")
    add_code_option(parser)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(asyncio.run(_measure(args.sessions, args.writes)))
        return
    codes = code_trees(args.code)
    figures: dict[str, list[float]] = {label: [] for label, _ in codes}
    for r in range(args.rounds):
        for label, src in codes:
            us = _child(args, src)
            figures[label].append(us)
            load = os.getloadavg()[0]
            print(f"round {r + 1} {label}: {us:.3f} us CPU per session per round (load {load:.1f})")
    result: dict[str, Any] = {
        label: {"us_per_session_round": values, "median": statistics.median(values)}
        for label, values in figures.items()
    }
    for label, got in result.items():
        print(f"{label}: median {got['median']:.3f} us CPU per session per round")
    print(json.dumps({"benchmark": "writer-round", "sessions": args.sessions, **result}))


if __name__ == "__main__":
    main()
