"""Backtest engine paths on generated in-memory ticks (no store yet).

Generates a simulated session at the feed's maximum rate — trades of two symbols
and a depth-3 book snapshot every 5th trade — cut into chunks as a store reader
would give them, then replays it through:

- ``event_noop``: the per-event engine with a strategy whose handlers do nothing
  (every tick is still dispatched to a Python handler);
- ``event_market_maker``: the per-event engine with ``market_maker`` quoting on
  every book, against the fill simulator;
- ``columnar_sma_cross``: the columnar engine with ``sma_cross`` (numba fill loop);
- ``memory``: peak RSS of a fresh process running ``market_maker`` over a lazily
  generated session of N and 4N ticks (flat if the replay streams);
- ``pacing_100x``: a short stretch at speed 100 (100 trades/s per symbol), lateness
  of each tick's delivery beside its schedule (p50 / p99 / max).

Ticks/s count every replayed tick (trades and snapshots) over the engine's wall
time, merging included, generation excluded: end to end (with the results' hash
and summary), replay only (without them), and per CPU second of the process (the
figure to trust on a machine shared with other work; the load average is printed).
The numba loop is compiled (or loaded from its cache) before timing. Peak RSS is
sampled in the same process. Last line: JSON.

    .venv/bin/python bench/backtest.py --ticks 2000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ticktape.feeds.sim import SimExchange
from ticktape.strategies import (
    BookTick,
    Context,
    Pacer,
    SimConfig,
    Strategy,
    TradeTick,
    default_registry,
    run_backtest,
)
from ticktape.ticks import TickBatch

SYMBOLS = ("BTC_USDT", "ETH_USDT")
TARGETS = {  # ticks/s, from the issue
    "event_noop": 500_000,
    "event_market_maker": 150_000,
    "columnar_sma_cross": 5_000_000,
}


class DoNothing(Strategy):
    name = "do_nothing"

    def on_trade(self, ctx: Context, trade: TradeTick) -> None:
        return None

    def on_book(self, ctx: Context, book: BookTick) -> None:
        return None


def generate(ticks: int, rate_per_s: float) -> list[list[TickBatch]]:
    ex = SimExchange(
        "bench", SYMBOLS, seed=1, rate_per_s=rate_per_s, start_us=1_700_000_000_000_000
    )
    chunks: list[list[TickBatch]] = []
    n = 0
    while n < ticks:
        block = ex.next_block()
        chunks.append(block)
        n += sum(len(b) for b in block)
    return chunks


def peak_rss_mib() -> float:
    """This process image's peak RSS (VmHWM: unlike ru_maxrss, not inherited over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(strategy: Any, chunks: list[list[TickBatch]]) -> dict[str, Any]:
    cpu = time.process_time()
    started = time.perf_counter()
    result = run_backtest(strategy, chunks, SYMBOLS, SimConfig())
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu
    again = time.perf_counter()
    result.finish()  # the results' hash and summary once more, timed on their own
    results_s = time.perf_counter() - again
    return {
        "status": result.status,
        "ticks": result.ticks,
        "seconds": round(elapsed, 3),
        "ticks_per_s": round(result.ticks / elapsed),
        "cpu_seconds": round(cpu_s, 3),
        "cpu_ticks_per_s": round(result.ticks / cpu_s),
        "results_seconds": round(results_s, 3),
        "replay_ticks_per_s": round(result.ticks / max(elapsed - results_s, 1e-9)),
        "orders": len(result.orders),
        "fills": len(result.fills),
        "hash": result.hash[:16],
    }


PACING_RATE_PER_S = 100.0  # trades per symbol per second of exchange time (a busy perpetual)


def pacing(seconds: float, speed: float) -> dict[str, Any]:
    # 2 symbols x 100 trades/s + a snapshot every 5th: 240 ticks/s, 24,000/s at 100x
    chunks = generate(int(2 * 1.2 * PACING_RATE_PER_S * seconds * speed), PACING_RATE_PER_S)
    pacer = Pacer(speed, record_lateness=True)
    run_backtest(DoNothing(DoNothing.params_model()), chunks, SYMBOLS, pacer=pacer)
    late = sorted(pacer.lateness_s or [0.0])

    def pct(q: float) -> float:
        return round(late[min(len(late) - 1, int(q * len(late)))] * 1000, 3)

    return {
        "speed": speed,
        "ticks": len(late),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(late[-1] * 1000, 3),
    }


def lazy_blocks(ticks: int) -> Iterator[list[TickBatch]]:
    ex = SimExchange("bench", SYMBOLS, seed=1, rate_per_s=0, start_us=1_700_000_000_000_000)
    n = 0
    while n < ticks:
        block = ex.next_block()
        n += sum(len(b) for b in block)
        yield block


def memory_probe(ticks: int) -> None:
    """In a fresh process: market_maker over a lazily generated session; peak RSS."""
    strategy = default_registry(entry_points=False).create("market_maker")
    result = run_backtest(strategy, lazy_blocks(ticks), SYMBOLS)
    print(json.dumps({"ticks": result.ticks, "peak_rss_mib": round(peak_rss_mib(), 1)}))


def memory_flatness(ticks: int) -> dict[str, Any]:
    out = {}
    for n in (ticks, 4 * ticks):
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-probe", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[str(n)] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2_000_000)
    parser.add_argument("--pacing-seconds", type=float, default=2.0, help="wall time at 100x")
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return
    registry = default_registry(entry_points=False)
    warm = generate(20_000, 0)
    run_backtest(registry.create("sma_cross"), warm, SYMBOLS)  # compile / load the numba loop
    chunks = generate(args.ticks, 0)
    total = sum(len(b) for block in chunks for b in block)
    load = os.getloadavg()[0]
    print(
        f"{total:,} ticks in {len(chunks)} chunks ({len(SYMBOLS)} symbols, depth 3); "
        f"load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    out: dict[str, Any] = {"ticks": total, "chunks": len(chunks), "load_average": load}
    runs = {
        "event_noop": lambda: DoNothing(DoNothing.params_model()),
        "event_market_maker": lambda: registry.create("market_maker", form="event"),
        "columnar_sma_cross": lambda: registry.create("sma_cross", form="columnar"),
    }
    for name, make in runs.items():
        figures = timed(make(), chunks)
        figures["target_ticks_per_s"] = TARGETS[name]
        out[name] = figures
        print(
            f"{name:20s} {figures['ticks_per_s']:>11,} ticks/s end to end, "
            f"{figures['replay_ticks_per_s']:>11,} replay only (target {TARGETS[name]:,}); "
            f"{figures['cpu_ticks_per_s']:>11,} per CPU second; "
            f"{figures['orders']:,} orders, {figures['fills']:,} fills, {figures['seconds']} s "
            f"of which results {figures['results_seconds']} s"
        )
    out["pacing_100x"] = pacing(args.pacing_seconds, 100.0)
    p = out["pacing_100x"]
    print(
        f"pacing at 100x: {p['ticks']:,} ticks, lateness p50 {p['p50_ms']} ms, "
        f"p99 {p['p99_ms']} ms, max {p['max_ms']} ms (target p99 < 5 ms)"
    )
    out["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(f"peak RSS {out['peak_rss_mib']} MiB (the generated ticks are held in memory)")
    out["memory"] = memory_flatness(args.ticks // 2)
    for n, m in out["memory"].items():
        print(
            f"market_maker over {int(n):,} lazily generated ticks: peak RSS {m['peak_rss_mib']} MiB"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
