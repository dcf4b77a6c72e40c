"""The simulated feed's side of many sessions: CPU per tick handed to the buffers.

``--sessions`` simulated sessions (1 symbol, the sim's default rate: trades and order
books) feed real :class:`~ticktape.runners.buffer.TickBuffer`\\ s of one instance pool
for ``--seconds`` of wall time, two ways, alternated ``--rounds`` times in this one
process:

- ``chain``: a pump per session, as the collect runner ran every simulated feed before
  the driver (``SimFeed.items`` → a counter per item → ``TickBuffer.put`` per batch);
- ``driver``: the instance's :class:`~ticktape.feeds.simdriver.SimDriver` (one task,
  ``TickBuffer.offer`` per block, counters once per turn).

A stand-in flusher per session empties its buffer at each flush interval (``take``,
no store), so the buffers see the same waits as in a run. The figure is the process's
CPU time per tick handed over (µs/tick) and the ticks per second against the rate the
sessions are due; the machine's load average is printed beside it. Prints one line per
round and mode and, last, one JSON line.

    .venv/bin/python bench/simfeed.py --sessions 1000 --seconds 20 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from ticktape.config import Settings
from ticktape.feeds.contract import FeedBooks, FeedEvent
from ticktape.feeds.sim import SimExchange
from ticktape.feeds.simdriver import SimDriver
from ticktape.feeds.simulated import SimFeed
from ticktape.runners.buffer import RowPool, TickBuffer


async def _flusher(buffer: TickBuffer) -> None:
    while await buffer.take():
        pass


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
    flushers = [asyncio.create_task(_flusher(b)) for b in buffers]
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
    for buf in buffers:
        await buf.close()
    await asyncio.gather(*flushers)
    return {
        "mode": mode,
        "ticks_per_s": round(rows / wall),
        "cpu_us_per_tick": round(cpu / rows * 1e6, 2),
        "cpu_share": round(cpu / wall, 3),
        "load_avg": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="chain,driver", help="which of chain,driver to run")
    args = parser.parse_args()
    modes = args.modes.split(",")
    results: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        for mode in modes:
            r = asyncio.run(one(mode, args.sessions, args.seconds))
            results.append(r)
            print(
                f"{mode:6}  {r['ticks_per_s']:>8,} ticks/s  {r['cpu_us_per_tick']:6.2f} µs/tick"
                f"  cpu {r['cpu_share']:.0%}  load {r['load_avg']:.2f}",
                flush=True,
            )
    summary = {
        mode: min(r["cpu_us_per_tick"] for r in results if r["mode"] == mode) for mode in modes
    }
    print(
        json.dumps(
            {"sessions": args.sessions, "seconds": args.seconds, "best": summary, "runs": results}
        )
    )


if __name__ == "__main__":
    main()
