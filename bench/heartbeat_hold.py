"""How long one instance's heartbeat holds its event loop, at ``--sessions`` sessions.

Each child process opens tables of its own (a fresh prefix) on the store, creates
``--sessions`` running sessions owned by one instance and ``--others`` owned by other
instances (they are in the active scan every heartbeat reads, as at 3 instances), and
keeps the first ones' leases with the real :class:`~ticktape.runtime.leases.LeaseKeeper`
(no runners: their handles' tallies grow between heartbeats, so every heartbeat
publishes new progress, as a running instance does). It then runs ``--heartbeats``
heartbeats ``--every-s`` apart with the loop in asyncio's debug mode, which reports
every callback longer than ``SLOW_CALLBACK_S`` with its duration: a heartbeat's longest
callback is its longest hold of the loop — what a request or a tick writer's round
waited for it. Wall time, so other processes' load lengthens it (alternate the codes;
state the load); also without the garbage collections that ran inside the callback
(``gc.callbacks``: a full collection lands in whatever callback allocates, heartbeat or
not). Reported per code: the holds' p50/p95/max, the heartbeats' wall time and their
CPU (process time) per heartbeat — from as many heartbeats again, run between the timed
ones without the debug mode (it logs every slow callback, which costs CPU itself).
``--profile`` prints the heartbeats' top functions (cProfile, by own time).

``--code LABEL=SRC`` (repeatable) runs the same child from another tree's ``src``; the
codes alternate round after round (``--rounds``). The load average is printed beside
each figure. Last line: JSON.

    .venv/bin/python bench/heartbeat_hold.py --store 'questdb://127.0.0.1:8812?ilp=http://127.0.0.1:9000' \\
        --sessions 1000 --others 2000 --rounds 3 --code before=/tmp/before/src
"""  # noqa: E501

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import re
import statistics
import sys
import time
from datetime import timedelta
from typing import Any

from codes import add_code_option, run_rounds
from shutdown import drop_tables

OWNER = "bench-heartbeat:1/me"
CREATE_CONCURRENCY = 50
TICKS_PER_HEARTBEAT = 48  # one session's ticks in a 2 s heartbeat at the sim's rate
SLOW_CALLBACK_S = 0.0005  # callbacks longer than this are reported (and counted)
TOOK = re.compile(r"took (\d+\.\d+) seconds")


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _create(store: Any, owner: str, count: int) -> list[str]:
    from ticktape.domain import utcnow
    from ticktape.testing import draft_session

    ids: list[str] = []
    for start in range(0, count, CREATE_CONCURRENCY):
        part = min(CREATE_CONCURRENCY, count - start)
        made = await asyncio.gather(
            *(
                store.sessions.create_session(
                    draft_session(owner=owner),
                    actor=owner,
                    start_lease_until=utcnow() + timedelta(seconds=600),
                )
                for _ in range(part)
            )
        )
        ids += [s.id for s in made]
    return ids


async def measure(
    url: str, sessions: int, others: int, heartbeats: int, every_s: float, profile: bool
) -> dict[str, Any]:
    from ticktape.config import Settings
    from ticktape.metrics import Metrics
    from ticktape.runtime.handle import RunHandle
    from ticktape.runtime.leases import LeaseKeeper
    from ticktape.store import open_store
    from ticktape.ticks import TickCounts

    store = open_store(url)
    await store.open()
    try:
        ids = await _create(store, OWNER, sessions)
        for i in range(0, others, max(1, others // 2)):
            await _create(store, f"bench-other-{i}:1/x", min(max(1, others // 2), others - i))
        settings = Settings(store_url=url)
        keeper = LeaseKeeper(store, settings, Metrics(), OWNER)
        handles = [RunHandle(sid) for sid in ids]
        for handle in handles:
            keeper.track(handle)
        await keeper.heartbeat()  # the first reads the whole log: not measured

        # each callback's wall ms and the GC ms inside it, as asyncio's debug mode reports
        # the callbacks slower than slow_callback_duration (public API: nothing patched)
        steps: list[tuple[float, float]] = []
        collecting = [0.0, 0.0, 0.0]  # the running collection's start, total so far, at last step

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                collecting[0] = time.perf_counter()
            else:
                collecting[1] += time.perf_counter() - collecting[0]

        class Took(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                took = TOOK.search(record.getMessage())
                if took is not None:
                    steps.append(
                        (float(took.group(1)) * 1000, (collecting[1] - collecting[2]) * 1000)
                    )
                collecting[2] = collecting[1]

        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = SLOW_CALLBACK_S
        took_log = logging.getLogger("asyncio")
        took_log.setLevel(logging.WARNING)
        took_log.propagate = False
        handler = Took()
        took_log.addHandler(handler)
        gc.callbacks.append(on_gc)

        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
        holds, own_holds, gc_ms_max, walls, cpus = [], [], [], [], []
        # every other heartbeat in debug mode: its holds are timed; the CPU is taken from
        # the others (debug mode logs each slow callback, which costs CPU itself)
        for i in range(2 * heartbeats):
            timing = i % 2 == 1
            loop.set_debug(timing)
            # the debug mode's costly part, not needed here: where each coroutine was made
            sys.set_coroutine_origin_tracking_depth(0)
            await asyncio.sleep(every_s)
            for handle in handles:
                handle.written = handle.written + TickCounts(TICKS_PER_HEARTBEAT // 2, 24)
            steps.clear()
            collecting[2] = collecting[1]
            began, cpu0 = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.enable()
            # a task of its own: its last step (the view built after the store's answer)
            # must end, and be timed, before this one reads the steps
            await asyncio.create_task(keeper.heartbeat())
            if profiler is not None:
                profiler.disable()
            ended = time.perf_counter()
            if not timing:
                cpus.append((time.process_time() - cpu0) * 1000)
                walls.append((ended - began) * 1000)
                continue
            holds.append(max((wall for wall, _ in steps), default=SLOW_CALLBACK_S * 1000))
            # the same without the garbage collections that ran inside the callback (a
            # full collection of this process's heap lands in whatever allocates)
            own_holds.append(max((wall - gc_ms for wall, gc_ms in steps), default=0.0))
            gc_ms_max.append(max((gc_ms for _, gc_ms in steps), default=0.0))
        loop.set_debug(False)
        took_log.removeHandler(handler)
        gc.callbacks.remove(on_gc)
        if profiler is not None:
            import pstats

            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        holds.sort()
        own_holds.sort()
        return {
            "hold_p50_ms": round(_pct(holds, 50), 2),
            "hold_p95_ms": round(_pct(holds, 95), 2),
            "hold_max_ms": round(holds[-1], 2),
            "hold_without_gc_p50_ms": round(_pct(own_holds, 50), 2),
            "hold_without_gc_p95_ms": round(_pct(own_holds, 95), 2),
            "gc_in_one_callback_max_ms": round(max(gc_ms_max), 2),
            "wall_p50_ms": round(statistics.median(walls), 2),
            "cpu_ms_per_heartbeat": round(statistics.median(cpus), 2),
            "heartbeats": heartbeats,
            "lost": sum(handle.lost.is_set() for handle in handles),  # must be 0
        }
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="a store URL (a prefix is added)")
    parser.add_argument("--sessions", type=int, default=1000, help="this instance's")
    parser.add_argument("--others", type=int, default=2000, help="other instances' sessions")
    parser.add_argument("--heartbeats", type=int, default=20)
    parser.add_argument("--every-s", type=float, default=0.5, help="between heartbeats")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile to stderr")
    add_code_option(parser, "the child (store, sessions, heartbeats)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(
            measure(
                args.store, args.sessions, args.others, args.heartbeats, args.every_s, args.profile
            )
        )
        print(json.dumps(result))
        return
    child = ["--sessions", str(args.sessions), "--others", str(args.others)]
    child += ["--heartbeats", str(args.heartbeats), "--every-s", str(args.every_s)]
    child += ["--profile"] if args.profile else []
    results = run_rounds(
        args, child, script=__file__, prefix="hb", drop_tables=drop_tables, show_stderr=args.profile
    )
    summary = {
        label: {
            key: statistics.median(r[key] for r in runs)
            for key in (
                "hold_p50_ms",
                "hold_p95_ms",
                "hold_without_gc_p95_ms",
                "gc_in_one_callback_max_ms",
                "cpu_ms_per_heartbeat",
            )
        }
        for label, runs in results.items()
    }
    print(f"medians: {json.dumps(summary)}")
    print(json.dumps({"benchmark": "heartbeat-hold", "runs": results, "medians": summary}))


if __name__ == "__main__":
    main()
