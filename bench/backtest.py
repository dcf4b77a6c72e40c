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
and summary), replay only (without them, as timed by ``RunResult.finish``), with the
stored form (every row's canonical line, what a store is given), streamed (the rows
handed out in batches as the run goes, as a backtest session runs; checked equal to
the unstreamed run), and per CPU second of the process (the figure to trust on a
machine shared with other work; the load average is printed). ``--only NAME``
measures only those paths.
The numba loop is compiled (or loaded from its cache) before timing. Peak RSS is
sampled in the same process. Last line: JSON.

    .venv/bin/python bench/backtest.py --ticks 2000000

With ``--store URL`` (repeatable) it measures the store path instead, on each store
in one run: a recording of ``--store-ticks`` ticks (default 10 M) written through
the store's fenced tick writes (or ``--source ID``, a recording already there),
then

- ``read``: the replay reader (``runners.replay.read_chunks`` over
  ``TickStore.read_window``) through the whole recording, rows/s; on QuestDB first
  ``read_pg_rows``, the same walk over the row-by-row PostgreSQL-wire read the
  Parquet export replaced, and the ratio (``--read-only``: no sessions after);
- ``backtest_noop`` / ``backtest_market_maker``: a backtest *session* under a real
  supervisor (create → ``completed``), ticks replayed per second of session time,
  and the process's peak RSS after it.

    .venv/bin/python bench/backtest.py --store sqlite:////tmp/bt.db --store-ticks 10000000

With ``--memory-store URL`` (repeatable) it shows peak memory against the session's
length: recordings of each ``--memory-ticks`` length (default 1 M, 3 M, 10 M) are
written to each store, then a backtest session (``--memory-strategy``, default
``sma_cross``) runs over each in a child process of its own, whose peak RSS (VmHWM)
is printed beside the others; ``--memory-compare DIR`` runs each also with another
checkout's ``src`` (e.g. ``git archive main``), on the same recordings.

    .venv/bin/python bench/backtest.py --memory-store sqlite:////tmp/m.db \
        --memory-store 'questdb://…&prefix=mem_' --memory-compare /tmp/main
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from ticktape.runners.backtest import stored
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
from ticktape.testing import iter_sim_blocks, record_source, sim_blocks
from ticktape.ticks import TickBatch

SYMBOLS = ("BTC_USDT", "ETH_USDT")
START_US = 1_700_000_000_000_000
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
    return sim_blocks(
        ticks, SYMBOLS, session_id="bench", seed=1, rate_per_s=rate_per_s, start_us=START_US
    )


def peak_rss_mib() -> float:
    """This process image's peak RSS (VmHWM: unlike ru_maxrss, not inherited over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(make: Any, chunks: list[list[TickBatch]]) -> dict[str, Any]:
    cpu = time.process_time()
    started = time.perf_counter()
    result = run_backtest(make(), chunks, SYMBOLS, SimConfig())
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu
    results_s = getattr(result, "finish_seconds", None)  # hash and summary, timed by the run
    if results_s is None:  # an older checkout (--compare-src): time them once more
        again = time.perf_counter()
        result.finish()
        results_s = time.perf_counter() - again
    lines_at = time.perf_counter()
    form = stored(result)  # the rows as a store is given them (all three tables' lines)
    lines_s = time.perf_counter() - lines_at
    # streamed, as a backtest session runs: the rows handed out in batches as it goes
    batches = [0]

    def sink(batch: Any) -> None:
        batches[0] += len(batch.orders) + len(batch.fills) + len(batch.equity)

    streamed_s = math.nan
    if "sink" in inspect.signature(run_backtest).parameters:  # not in older checkouts
        started = time.perf_counter()
        streamed = run_backtest(make(), chunks, SYMBOLS, SimConfig(), sink=sink)
        streamed_s = time.perf_counter() - started
        rows = len(form.orders) + len(form.fills) + len(form.equity)
        assert streamed.hash == result.hash and batches[0] == rows
    return {
        "status": result.status,
        "ticks": result.ticks,
        "seconds": round(elapsed, 3),
        "ticks_per_s": round(result.ticks / elapsed),
        "cpu_seconds": round(cpu_s, 3),
        "cpu_ticks_per_s": round(result.ticks / cpu_s),
        "results_seconds": round(results_s, 3),
        "stored_form_seconds": round(lines_s, 3),
        "with_stored_form_ticks_per_s": round(result.ticks / (elapsed + lines_s)),
        "streamed_seconds": None if math.isnan(streamed_s) else round(streamed_s, 3),
        "streamed_ticks_per_s": None
        if math.isnan(streamed_s)
        else round(result.ticks / streamed_s),
        "rows": len(form.orders) + len(form.fills) + len(form.equity),
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
    return iter_sim_blocks(
        ticks, SYMBOLS, session_id="bench", seed=1, rate_per_s=0, start_us=START_US
    )


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


# --------------------------------------------------------------------------- store path

STORE_TARGETS = {"read_rows_per_s": 1_000_000}  # from QuestDB, per the issue
RECORD_OWNER = "bench-recorder/0"


async def record(store: Any, ticks: int) -> str:
    """A ``stopped`` collect session of ``ticks`` simulated ticks, written in writes of
    100,000 ticks."""
    started = time.perf_counter()
    session = await record_source(
        store,
        lazy_blocks(ticks),
        SYMBOLS,
        owner=RECORD_OWNER,
        lease=timedelta(hours=6),
        write_ticks=100_000,
        visible_within_s=300.0,
    )
    elapsed = time.perf_counter() - started
    written = session.stats.trades + session.stats.orderbook
    print(f"  recorded {written:,} ticks in {elapsed:.1f} s ({written / elapsed:,.0f} ticks/s)")
    return str(session.id)


async def read_rate(store: Any, source_id: str, read: Any = None) -> dict[str, Any]:
    from ticktape.runners.replay import read_chunks

    source = await store.sessions.get_session(source_id)
    span = await store.ticks.span(source_id)
    assert span is not None, "the recording has no ticks"
    rows = chunks = 0
    cpu = time.process_time()
    started = time.perf_counter()
    async for chunk in read_chunks(
        store.ticks,
        source_id,
        symbols=None,
        first_us=span[0],
        last_us=span[1],
        total_rows=source.stats.records_collected,
        read=read,
    ):
        rows += sum(len(b) for b in chunk)
        chunks += 1
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu
    assert rows == source.stats.records_collected, (rows, source.stats)
    return {
        "rows": rows,
        "chunks": chunks,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(rows / elapsed),
        "cpu_seconds": round(cpu_s, 3),
        "rows_per_cpu_s": round(rows / cpu_s),
        "target_rows_per_s": STORE_TARGETS["read_rows_per_s"],
    }


async def session_rate(store_url: str, source_id: str, strategy: str) -> dict[str, Any]:
    """A backtest session under a real supervisor, from create to ``completed``."""
    from ticktape.config import Settings
    from ticktape.domain import SessionStatus
    from ticktape.metrics import Metrics
    from ticktape.runners import default_runners
    from ticktape.runtime.supervisor import Supervisor
    from ticktape.service import SessionService
    from ticktape.store import open_store
    from ticktape.strategies import validate_backtest

    registry = default_registry(entry_points=False)
    registry.register(DoNothing, origin="bench")
    settings = Settings(store_url=store_url, lease_s=60.0, heartbeat_interval_s=2.0)
    store = open_store(store_url)
    await store.open()
    metrics = Metrics()
    supervisor = Supervisor(store, settings, metrics, default_runners(registry))
    service = SessionService(store, supervisor, settings, metrics)
    await supervisor.start()
    try:
        spec = validate_backtest({"source_session": source_id, "strategy": strategy}, registry)
        started = time.perf_counter()
        cpu = time.process_time()
        session = await service.create(await service.backtest_spec(spec))
        while True:
            current = await store.sessions.get_session(session.id)
            if current.is_terminal:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu_s = time.process_time() - cpu
        assert current.status is SessionStatus.COMPLETED, current
        summary = await store.results.summary(session.id)
        ticks = current.stats.records_collected
        return {
            "strategy": strategy,
            "ticks": ticks,
            "seconds": round(elapsed, 3),
            "ticks_per_s": round(ticks / elapsed),
            "cpu_seconds": round(cpu_s, 3),
            "orders": None if summary is None else summary.orders,
            "fills": None if summary is None else summary.fills,
            "hash": None if summary is None else summary.hash[:16],
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }
    finally:
        await supervisor.shutdown()
        await store.close()


# ------------------------------------------------------------- memory across session lengths


def session_probe(url: str, source_id: str, strategy: str) -> None:
    """In a fresh process: one backtest session over ``source_id``; its figures and the
    process's peak RSS (VmHWM) as a JSON line."""
    print(json.dumps(asyncio.run(session_rate(url, source_id, strategy))))


def idle_probe() -> None:
    """In a fresh process: everything a probe imports and the numba loops loaded, no run."""
    from ticktape.runners import default_runners  # noqa: F401
    from ticktape.runtime.supervisor import Supervisor  # noqa: F401

    run_backtest(
        default_registry(entry_points=False).create("sma_cross"), generate(2_000, 0), SYMBOLS
    )
    print(json.dumps({"peak_rss_mib": round(peak_rss_mib(), 1)}))


async def record_lengths(url: str, lengths: list[int]) -> dict[int, str]:
    from ticktape.redact import redact
    from ticktape.store import open_store

    store = open_store(url)
    await store.open()
    try:
        out = {}
        for n in lengths:
            print(f"store {redact(url)}: recording {n:,} ticks")
            out[n] = await record(store, n)
        return out
    finally:
        await store.close()


def memory_lengths(
    urls: list[str],
    lengths: list[int],
    strategies: list[str],
    compare: str | None = None,
    reuse: list[str] | None = None,
) -> dict[str, Any]:
    """Backtest sessions over recordings of each length read from each store, every run in
    a child process of its own, so each peak RSS is that run's alone. With ``compare``
    (another checkout), each run is made with that checkout's ``src`` too, on the same
    recording, side by side."""
    from ticktape.redact import redact

    versions: list[tuple[str, dict[str, str]]] = [("this", dict(os.environ))]
    if compare:
        other = dict(os.environ, PYTHONPATH=str(Path(compare) / "src"))
        versions.insert(0, (Path(compare).name, other))

    idle = subprocess.run(
        [sys.executable, __file__, "--idle-probe"], capture_output=True, text=True, check=True
    )
    out: dict[str, Any] = {"idle_peak_rss_mib": json.loads(idle.stdout.splitlines()[-1])}
    print(
        f"a probe process with everything imported: {out['idle_peak_rss_mib']['peak_rss_mib']} MiB"
    )
    for url in urls:
        sources = (
            dict(zip(lengths, reuse, strict=True))
            if reuse
            else asyncio.run(record_lengths(url, lengths))
        )
        rows: dict[str, Any] = {}
        for strategy in strategies:
            for n, source_id in sources.items():
                for version, env in versions:
                    proc = subprocess.run(
                        [sys.executable, __file__, "--session-probe", url, source_id, strategy],
                        capture_output=True,
                        text=True,
                        check=False,
                        env=env,
                    )
                    if proc.returncode != 0:
                        tail = proc.stderr.strip().splitlines()[-3:]
                        rows[f"{version}/{strategy}/{n}"] = {"error": tail}
                        print(f"  {version} {strategy} {n:,}: the run failed: {tail}", flush=True)
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    rows[f"{version}/{strategy}/{n}"] = r
                    print(
                        f"  {redact(url).split(':', 1)[0]:8s} {version:8s} {strategy:10s} "
                        f"{r['ticks']:>11,} ticks: peak RSS {r['peak_rss_mib']:>7} MiB, "
                        f"{r['ticks_per_s']:,} ticks/s in {r['seconds']} s, "
                        f"{r['orders']} orders, {r['fills']} fills",
                        flush=True,
                    )
        out[url.split(":", 1)[0]] = rows
    return out


async def store_bench(
    url: str, ticks: int, source: str | None, read_only: bool = False
) -> dict[str, Any]:
    from ticktape.redact import redact
    from ticktape.store import open_store

    print(f"store {redact(url)}")
    store = open_store(url)
    await store.open()
    try:
        source_id = source or await record(store, ticks)
        out: dict[str, Any] = {"source": source_id}
        # QuestDB keeps its row-by-row PostgreSQL-wire read (the path before the Parquet
        # export): measured first, in the same run, for the ratio
        rows_path = getattr(getattr(store, "inner", store).ticks, "read_window_rows", None)
        paths = [("read", None)]
        if rows_path is not None:

            async def read_rows(lo: int, hi: int) -> Any:
                return await rows_path(source_id, lo, hi, None)

            paths.insert(0, ("read_pg_rows", read_rows))
        for name, reader in paths:
            out[name] = r = await read_rate(store, source_id, reader)
            print(
                f"  {name:12s} {r['rows']:,} rows in {r['chunks']} windows: "
                f"{r['rows_per_s']:,} rows/s ({r['seconds']} s, {r['cpu_seconds']} CPU s, "
                f"{r['rows_per_cpu_s']:,} rows per CPU s; target {r['target_rows_per_s']:,} "
                "from QuestDB)"
            )
        if rows_path is not None:
            out["read_speedup"] = round(
                out["read"]["rows_per_s"] / out["read_pg_rows"]["rows_per_s"], 1
            )
            print(f"  Parquet read / PG-wire read: {out['read_speedup']}x rows/s")
    finally:
        await store.close()
    if read_only:
        return out
    for name, strategy in (("backtest_noop", "do_nothing"), ("backtest_mm", "market_maker")):
        out[name] = await session_rate(url, source_id, strategy)
        b = out[name]
        print(
            f"  {name:14s} {b['ticks']:,} ticks in {b['seconds']} s: {b['ticks_per_s']:,} "
            f"ticks/s end to end ({b['orders']} orders, {b['fills']} fills; "
            f"peak RSS {b['peak_rss_mib']} MiB)"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2_000_000)
    parser.add_argument("--store", action="append", help="measure the store path on URL")
    parser.add_argument("--store-ticks", type=int, default=10_000_000)
    parser.add_argument("--source", help="an existing recording (one --store only)")
    parser.add_argument(
        "--read-only", action="store_true", help="with --store: the read rates only, no sessions"
    )
    parser.add_argument("--pacing-seconds", type=float, default=2.0, help="wall time at 100x")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(TARGETS),
        help="measure only these engine paths (repeatable; no pacing or memory probes)",
    )
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--session-probe", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--idle-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--memory-store",
        action="append",
        help="peak RSS of backtest sessions over recordings of each --memory-ticks length "
        "read from this store (repeatable), a child process per run",
    )
    parser.add_argument("--memory-ticks", default="1000000,3000000,10000000")
    parser.add_argument("--memory-strategy", action="append", help="default: sma_cross")
    parser.add_argument(
        "--memory-compare", help="another checkout: each memory run is made with its src too"
    )
    parser.add_argument(
        "--memory-sources", help="recordings already in the (one) store, an id per length"
    )
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return
    if args.session_probe:
        session_probe(*args.session_probe)
        return
    if args.idle_probe:
        idle_probe()
        return
    if args.memory_store:
        lengths = [int(n) for n in args.memory_ticks.split(",")]
        load = os.getloadavg()[0]
        print(f"load average {load:.1f} on {os.cpu_count()} CPUs")
        mem = memory_lengths(
            args.memory_store,
            lengths,
            args.memory_strategy or ["sma_cross"],
            args.memory_compare,
            args.memory_sources.split(",") if args.memory_sources else None,
        )
        print(json.dumps({"load_average": load, "memory_by_length": mem}))
        return
    if args.store:
        load = os.getloadavg()[0]
        print(f"load average {load:.1f} on {os.cpu_count()} CPUs")
        results: dict[str, Any] = {"load_average": load}
        for url in args.store:
            results[url.split(":", 1)[0]] = asyncio.run(
                store_bench(url, args.store_ticks, args.source, args.read_only)
            )
        print(json.dumps(results))
        return
    registry = default_registry(entry_points=False)
    warm = generate(20_000, 0)
    # compile / load the numba loops (the fill loop, the summary's folds: latency 0 fills)
    run_backtest(registry.create("sma_cross"), warm, SYMBOLS, SimConfig(entry_latency_us=0))
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
        if args.only and name not in args.only:
            continue
        figures = timed(make, chunks)
        figures["target_ticks_per_s"] = TARGETS[name]
        out[name] = figures
        print(
            f"{name:20s} {figures['ticks_per_s']:>11,} ticks/s end to end, "
            f"{figures['replay_ticks_per_s']:>11,} replay only (target {TARGETS[name]:,}); "
            f"{figures['cpu_ticks_per_s']:>11,} per CPU second; "
            f"{figures['orders']:,} orders, {figures['fills']:,} fills, {figures['seconds']} s "
            f"of which results {figures['results_seconds']} s; the stored form of "
            f"{figures['rows']:,} rows {figures['stored_form_seconds']} s more "
            f"({figures['with_stored_form_ticks_per_s']:,} ticks/s with it); streamed "
            f"(rows handed out as it runs, as a session does): "
            + (
                "n/a (this checkout has no streamed runs)"
                if figures["streamed_ticks_per_s"] is None
                else f"{figures['streamed_ticks_per_s']:,} ticks/s"
            )
        )
    if args.only:
        print(json.dumps(out))
        return
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
