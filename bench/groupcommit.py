"""Group commits on one QuestDB session log from a loaded instance and an idle one.

Two processes create sessions on the same tables at once for ``--seconds``: the
*loaded* writer ``--concurrency`` at a time while its event loop is hogged in
``--hog-ms`` chunks of pure Python (a busy instance: loop lag of that order), the
*idle* writer one at a time with a free loop. Before stop 16 a group held the log
from its first reply until COMMIT and read each reply on the event loop, so the
loaded writer held the log for its loop lag: its own creates were slow and the idle
writer met "table busy". Prints, per code and round, both writers' creates (count,
p50, p95 in ms) and, last, one JSON line.

    .venv/bin/python bench/groupcommit.py --questdb-url URL --code before=/tmp/main/src

``--code LABEL=SRC`` (repeatable) runs the loaded writer from another tree's ``src``
(PYTHONPATH) too, alternated ``--rounds`` times; the idle writer always runs this tree.
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
import uuid
from datetime import timedelta
from typing import Any

from codes import add_code_option, code_trees, env_for, with_prefix
from ticktape.domain import DataType, Session, utcnow
from ticktape.store.questdb import QuestDBStore
from ticktape.testing import draft_session


def _session() -> Session:
    return draft_session(
        data_types=(DataType.TRADES,),
        owner="bench-groupcommit",
        lease_expires_at=utcnow() + timedelta(seconds=30),
    )


async def _writer(url: str, hog_ms: float, seconds: float, concurrency: int) -> dict[str, Any]:
    store = QuestDBStore(url)
    await store.open()
    await store.sessions.create_session(_session(), actor="bench")  # connections opened
    stop = asyncio.Event()

    async def hog() -> None:
        while not stop.is_set():
            end = time.perf_counter() + hog_ms / 1000
            while time.perf_counter() < end:
                pass
            await asyncio.sleep(0)

    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def creates() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await store.sessions.create_session(_session(), actor="bench")
            latencies.append((time.perf_counter() - started) * 1000)

    hogging = asyncio.create_task(hog()) if hog_ms > 0 else None
    try:
        await asyncio.gather(*(creates() for _ in range(concurrency)))
    finally:
        stop.set()
        if hogging is not None:
            await hogging
        await store.close()
    latencies.sort()
    return {
        "creates": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
    }


async def _create_tables(url: str) -> None:
    store = QuestDBStore(url)  # before the writers start: they never race to create them
    await store.open()
    await store.close()


def _spawn(args: argparse.Namespace, url: str, src: str | None, loaded: bool) -> Any:
    env = env_for(src, os.environ)
    role = ["--hog-ms", str(args.hog_ms), "--concurrency", str(args.concurrency)]
    return subprocess.Popen(
        [sys.executable, __file__, "--role", url, "--seconds", str(args.seconds)]
        + (role if loaded else ["--hog-ms", "0", "--concurrency", "1"]),
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questdb-url", help="questdb://...; each run uses tables of its own")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--hog-ms", type=float, default=20.0, help="the loaded loop's chunks")
    parser.add_argument("--concurrency", type=int, default=8, help="the loaded writer's creates")
    add_code_option(parser, "the loaded writer")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--role", default=None, help=argparse.SUPPRESS)  # a writer process
    args = parser.parse_args()
    if args.role is not None:
        figures = asyncio.run(_writer(args.role, args.hog_ms, args.seconds, args.concurrency))
        print(json.dumps(figures))
        return
    codes = code_trees(args.code)
    runs = []
    for round_ in range(1, args.rounds + 1):
        for label, src in codes:
            url = with_prefix(args.questdb_url, f"gc{uuid.uuid4().hex[:8]}_")
            asyncio.run(_create_tables(url))
            loaded = _spawn(args, url, src, loaded=True)
            idle = _spawn(args, url, None, loaded=False)
            figures = {
                "code": label,
                "round": round_,
                "loaded": json.loads(loaded.communicate()[0]),
                "idle": json.loads(idle.communicate()[0]),
                "load_avg": round(os.getloadavg()[0], 1),
            }
            print(
                f"{label:8} round {round_}: loaded {figures['loaded']}  idle "
                f"{figures['idle']}  load {figures['load_avg']}",
                flush=True,
            )
            runs.append(figures)
    print(json.dumps({"benchmark": "groupcommit", "hog_ms": args.hog_ms, "runs": runs}))


if __name__ == "__main__":
    main()
