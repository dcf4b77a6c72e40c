"""Overload: one session at the maximum rate with many symbols, plus many ordinary ones.

Runs the real supervisor, collect runners and SQLite store in-process on the
default timing (heartbeat 2 s, lease 10 s) — or ``--heartbeat-s/--lease-s`` —
for ``--seconds``, then stops every session. Prints how many sessions lost
their lease (``owner_lost`` / ``lease_lost`` events, failed sessions), the
worst heartbeat (all renewals of one round) and the ticks stored, and checks
stats = rows for every session. The flood is stopped first, alone: ``flood_stop_s``
is its stop latency (bounded by ``--stop-drain-s``, the ``TICKTAPE_STOP_DRAIN_S``
budget; ``inf`` drains everything, as before the budget existed) and
``flood_shed_rows`` what its budget gave up (recorded as ``stop_drain`` gaps).
Last line: JSON. The issue's figure:

    .venv/bin/python bench/overload.py --seconds 60 --sessions 300 --symbols 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ticktape.config import HEARTBEAT_INTERVAL_S, LEASE_S, STOP_DRAIN_S, Settings
from ticktape.domain import Reason, SessionStatus
from ticktape.runtime import leases
from ticktape.testing import instances


async def run(args: argparse.Namespace, db: Path) -> dict[str, Any]:
    settings = Settings(
        store_url=f"sqlite:///{db}",
        heartbeat_interval_s=args.heartbeat_s,
        lease_s=args.lease_s,
        max_running_per_instance=args.sessions + 10,
        max_running_per_store=args.sessions + 10,
        stop_drain_s=args.stop_drain_s,
    )
    rounds: list[float] = []
    original = leases.LeaseKeeper.heartbeat

    async def timed(self: leases.LeaseKeeper) -> None:
        started = time.monotonic()
        await original(self)
        rounds.append(time.monotonic() - started)

    leases.LeaseKeeper.heartbeat = timed  # type: ignore[method-assign]
    symbols = [f"S{i:03d}_USDT" for i in range(args.symbols)]
    async with instances(settings) as add:
        node = await add("bench-overload")
        flood = await node.create(symbols=symbols, rate_per_s=0)
        ordinary = [await node.create(symbols=["BTC_USDT"]) for _ in range(args.sessions)]
        created = time.monotonic()
        await asyncio.sleep(args.seconds)  # the load runs for the measured time
        elapsed = time.monotonic() - created
        everyone = [flood, *ordinary]
        asked = time.monotonic()
        await node.service.stop(flood.id, wait=True, timeout_s=1200)
        flood_stop_s = time.monotonic() - asked
        await asyncio.gather(*(node.service.stop(s.id, wait=True, timeout_s=120) for s in ordinary))
        shed = sum(
            node.metrics.registry.get_sample_value("ticktape_ticks_shed_total", {"data_type": d})
            or 0.0
            for d in ("trades", "orderbook")
        )
        lost = failed = mismatched = 0
        ticks = 0
        for s in everyone:
            final = await node.raw.sessions.get_session(s.id)
            events = await node.raw.sessions.list_events(s.id)
            lost += any(e.reason in {Reason.OWNER_LOST, Reason.LEASE_LOST} for e in events)
            failed += final.status is SessionStatus.FAILED
            counts = await node.raw.ticks.count(s.id)
            mismatched += (final.stats.trades, final.stats.orderbook) != (
                counts.trades,
                counts.orderbook,
            )
            ticks += counts.trades + counts.orderbook
        flood_final = await node.raw.sessions.get_session(flood.id)
    return {
        "seconds": round(elapsed, 1),
        "sessions": len(everyone),
        "flood_symbols": args.symbols,
        "owner_lost": lost,
        "failed": failed,
        "stats_ne_rows": mismatched,
        "heartbeat_max_s": round(max(rounds, default=0.0), 3),
        "heartbeat_p50_s": round(sorted(rounds)[len(rounds) // 2], 3) if rounds else 0.0,
        "lease_s": args.lease_s,
        "ticks_stored": ticks,
        "flood_ticks_per_s": round(flood_final.stats.records_collected / elapsed),
        "flood_unstored": flood_final.stats.errors,
        "flood_stop_s": round(flood_stop_s, 2),
        "stop_drain_s": args.stop_drain_s,
        "flood_shed_rows": int(shed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sessions", type=int, default=300, help="ordinary sessions")
    parser.add_argument("--symbols", type=int, default=100, help="symbols of the flood session")
    parser.add_argument("--heartbeat-s", type=float, default=HEARTBEAT_INTERVAL_S)
    parser.add_argument("--lease-s", type=float, default=LEASE_S)
    parser.add_argument("--stop-drain-s", type=float, default=STOP_DRAIN_S)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args, Path(tmp) / "overload.db"))
    for key, value in result.items():
        print(f"{key:>20}: {value}")
    print(json.dumps({"bench": "overload", **result}))


if __name__ == "__main__":
    main()
