"""How long a ready callback waits for the event loop beside an instance's sim sessions.

``--sessions`` simulated sessions at the sim's default rate (trades and books, one
symbol) fed by the instance's real :class:`~ticktape.feeds.simdriver.SimDriver` into
buffers written by its real :class:`~ticktape.runners.writer.TickWriter`, whose store is
a stand-in that answers at once (the store's own work is not measured). Sessions are
attached in a spread of one block period, as starts spread them. Meanwhile a probe
sleeps ``PROBE_EVERY_S`` again and again and measures how late each wake-up runs (a
timer due, waiting for the loop): what a request (a start, a heartbeat's answer) waits
for the driver's turns and the writer's rounds. Reported: the waits' p50/p95/p99/max
(ms) and the process's CPU per session-second. ``--code LABEL=SRC`` runs the same in a
child process with another tree's ``ticktape`` (e.g. main's ``git archive``); the codes
alternate ``--rounds`` times. The load average is printed beside each figure; one JSON line last.

    .venv/bin/python bench/looplag.py --sessions 2000 --seconds 20 --rounds 3 \\
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
from pathlib import Path
from typing import Any, cast

from standins import AckingStore, QuietClient
from ticktape.config import Settings
from ticktape.feeds.sim import BLOCK_PERIOD_S, SimExchange
from ticktape.feeds.simdriver import SimDriver
from ticktape.metrics import Metrics
from ticktape.runners import TickWriter
from ticktape.runtime.handle import RunHandle
from ticktape.store.base import Store

PROBE_EVERY_S = 0.005
WARM_S = 3.0  # first chunks and the attach spread, not measured


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _measure(sessions: int, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    writer = TickWriter(cast(Store, AckingStore()), Settings(store_url="memory://"), Metrics(), "b")
    driver = SimDriver(loop)
    client = QuietClient()
    regs = []
    for i in range(sessions):
        reg = writer.register(RunHandle(f"s{i}"), client)
        exchange = SimExchange(f"s{i:06d}", ("BTCUSDT",), seed=i)
        driver.attach(exchange, reg.buffer.offer, reg.buffer.put)
        regs.append(reg)
        if i % 100 == 99:  # spread over a block period, as starts spread them
            await asyncio.sleep(BLOCK_PERIOD_S * 100 / sessions)
    await asyncio.sleep(WARM_S)
    waits: list[float] = []
    cpu0, end = time.process_time(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        due = time.perf_counter() + PROBE_EVERY_S
        await asyncio.sleep(PROBE_EVERY_S)
        waits.append(max(0.0, time.perf_counter() - due) * 1000)
    cpu = time.process_time() - cpu0
    for reg in regs:
        writer.unregister(reg)
    waits.sort()
    return {
        "wait_p50_ms": round(_pct(waits, 50), 2),
        "wait_p95_ms": round(_pct(waits, 95), 2),
        "wait_p99_ms": round(_pct(waits, 99), 2),
        "wait_max_ms": round(waits[-1], 2),
        "probes": len(waits),
        "cpu_us_per_session_s": round(cpu / (sessions * seconds) * 1e6, 2),
    }


def _child(args: argparse.Namespace, src: str | None) -> dict[str, float]:
    """One run in a fresh process (each code alike): this tree's, or ``src``'s."""
    env = dict(os.environ) if src is None else {**os.environ, "PYTHONPATH": src}
    cmd = [sys.executable, __file__, "--child", "--sessions", str(args.sessions)]
    out = subprocess.run(
        [*cmd, "--seconds", str(args.seconds)], env=env, capture_output=True, text=True, check=True
    )
    got: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per code, alternated")
    parser.add_argument("--code", action="append", default=[], metavar="LABEL=SRC")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.sessions, args.seconds))))
        return
    codes: list[tuple[str, str | None]] = [("this", None)]
    for item in args.code:
        label, _, src = item.partition("=")
        codes.append((label, str(Path(src).resolve())))
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in codes}
    for r in range(args.rounds):
        for label, src in codes:
            got = _child(args, src)
            runs[label].append(got)
            load = os.getloadavg()[0]
            print(f"round {r + 1} {label}: {json.dumps(got)} (load {load:.1f})", flush=True)
    result: dict[str, Any] = {}
    for label, got_runs in runs.items():
        medians = {k: statistics.median(run[k] for run in got_runs) for k in got_runs[0]}
        result[label] = {"runs": got_runs, "median": medians}
        print(f"{label}: median {json.dumps(medians)}")
    print(json.dumps({"benchmark": "loop-lag", "sessions": args.sessions, **result}))


if __name__ == "__main__":
    main()
