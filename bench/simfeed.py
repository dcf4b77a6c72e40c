"""The simulated feed's side of many sessions: CPU per tick handed to the buffers.

``--sessions`` simulated sessions (1 symbol, the sim's default rate: trades and order
books) feed real :class:`~ticktape.runners.buffer.TickBuffer`\\ s of one instance pool
for ``--seconds`` of wall time, two ways, alternated ``--rounds`` times (each run in a
fresh process):

- ``chain``: a pump per session, as the collect runner ran every simulated feed before
  the driver (``SimFeed.items`` → a counter per item → ``TickBuffer.put`` per batch);
- ``driver``: the instance's :class:`~ticktape.feeds.simdriver.SimDriver` (one task,
  ``TickBuffer.offer`` per block, counters once per turn).

A stand-in for the instance's tick writer empties every buffer at each point of the
flush clock (one task, ``take_ready`` per buffer, no store), as the writer of a run
does, so the buffers see the same doors as in a run (a flusher per buffer waiting in
``take`` would turn most offers away into puts). The figure is the process's CPU time
per tick handed over (µs/tick) and the ticks per second against the rate the sessions
are due; the machine's load average is printed beside it. ``--code LABEL=SRC`` also runs
another tree's feed (``bench/codes.py``), the codes alternating within each round.
Prints one line per run and, last, one JSON line.

    .venv/bin/python bench/simfeed.py --sessions 1000 --seconds 20 --rounds 2
    .venv/bin/python bench/simfeed.py --modes driver --rounds 4 --code main=/tmp/main/src
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
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from codes import add_code_option, code_trees, env_for
from ticktape.config import Settings
from ticktape.feeds.clock import ticker
from ticktape.feeds.contract import FeedBooks, FeedEvent
from ticktape.feeds.sim import SimExchange
from ticktape.feeds.simdriver import SimDriver
from ticktape.feeds.simulated import SimFeed
from ticktape.runners.buffer import RowPool, TickBuffer


async def _writer(buffers: list[TickBuffer], interval: float, done: asyncio.Event) -> None:
    """Takes what every buffer holds at each point of the flush clock, as the instance's
    tick writer does (runners/writer.py), and drops it (no store)."""
    loop = asyncio.get_running_loop()
    clock = ticker(interval, loop)
    while not done.is_set():
        await clock.after(loop.time())
        for buffer in buffers:
            if buffer.rows:
                await buffer.take_ready()


async def _chain(exchange: SimExchange, buffer: TickBuffer, until: asyncio.Event, c: Any) -> None:
    trades, books = c.labels(data_type="trades"), c.labels(data_type="orderbook")
    async for item in SimFeed(exchange).items(until):
        if isinstance(item, FeedEvent):
            continue
        (books if isinstance(item, FeedBooks) else trades).inc(len(item))
        await buffer.put([item.batch])


async def one(mode: str, sessions: int, seconds: float) -> dict[str, Any]:
    settings = Settings()
    pool = RowPool(settings.instance_buffer_max_rows)
    counter = Counter("rows", "rows", ["data_type"], registry=CollectorRegistry())
    buffers = [
        TickBuffer(
            max_rows=settings.buffer_max_rows,
            flush_rows=settings.flush_max_rows,
            eager_rows=settings.flush_eager_rows,
            flush_interval_s=settings.flush_interval_s,
            pool=pool,
        )
        for _ in range(sessions)
    ]
    exchanges = [SimExchange(f"s{i}", ("BTC_USDT",), seed=i) for i in range(sessions)]
    done = asyncio.Event()
    writer = asyncio.create_task(_writer(buffers, settings.flush_interval_s, done))
    until = asyncio.Event()
    rows_before = sum(counter.labels(data_type=d)._value.get() for d in ("trades", "orderbook"))
    cpu0, t0 = time.process_time(), time.monotonic()
    if mode == "chain":
        pumps = [
            asyncio.create_task(_chain(e, b, until, counter))
            for e, b in zip(exchanges, buffers, strict=True)
        ]
        await asyncio.sleep(seconds)
        until.set()
        await asyncio.gather(*pumps)
    else:
        t, b = counter.labels(data_type="trades"), counter.labels(data_type="orderbook")

        def count(n_trades: int, n_books: int) -> None:
            t.inc(n_trades)
            b.inc(n_books)

        driver = SimDriver(asyncio.get_running_loop(), on_rows=count)
        streams = [
            driver.attach(e, buf.offer, buf.put) for e, buf in zip(exchanges, buffers, strict=True)
        ]
        await asyncio.sleep(seconds)
        for s, buf in zip(streams, buffers, strict=True):
            putting = driver.detach(s)
            if putting is not None:
                await buf.unbound()
                await putting
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    rows = sum(counter.labels(data_type=d)._value.get() for d in ("trades", "orderbook"))
    rows -= rows_before
    done.set()
    await writer
    return {
        "mode": mode,
        "ticks_per_s": round(rows / wall),
        "cpu_us_per_tick": round(cpu / rows * 1e6, 2),
        "cpu_share": round(cpu / wall, 3),
        "load_avg": os.getloadavg()[0],
    }


def _child(mode: str, args: argparse.Namespace, src: str | None) -> dict[str, Any]:
    """One run in a fresh process (each code and mode alike): this tree's, or ``src``'s."""
    cmd = [sys.executable, __file__, "--child", "--modes", mode]
    cmd += ["--sessions", str(args.sessions), "--seconds", str(args.seconds)]
    done = subprocess.run(
        cmd, env=env_for(src, os.environ), capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="chain,driver", help="which of chain,driver to run")
    add_code_option(parser, "the simulated feed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    modes = args.modes.split(",")
    if args.child:
        print(json.dumps(asyncio.run(one(modes[0], args.sessions, args.seconds))))
        return
    results: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        for label, src in code_trees(args.code):
            for mode in modes:
                r = {"code": label, **_child(mode, args, src)}
                results.append(r)
                print(
                    f"{label:6} {mode:6}  {r['ticks_per_s']:>8,} ticks/s"
                    f"  {r['cpu_us_per_tick']:6.2f} µs/tick"
                    f"  cpu {r['cpu_share']:.0%}  load {r['load_avg']:.2f}",
                    flush=True,
                )
    summary = {
        f"{label} {mode}": statistics.median(
            r["cpu_us_per_tick"] for r in results if r["code"] == label and r["mode"] == mode
        )
        for label, _ in code_trees(args.code)
        for mode in modes
    }
    print(
        json.dumps(
            {
                "sessions": args.sessions,
                "seconds": args.seconds,
                "median_us_per_tick": summary,
                "runs": results,
            }
        )
    )


if __name__ == "__main__":
    main()
