"""What the seal's count scans do to everyone else's PostgreSQL-wire requests.

Starts its own QuestDB (``--root``) with ``--workers`` network workers, makes the
product's tick tables, fills today's partition server-side with ``--prefill-rows`` rows
(``bench/ticksend.py``'s prefill: 3,000 sessions, 5 trades to 3 book levels, stamped from
midnight UTC to a minute ago) and then, per entry of ``--scans``, runs that many
connections each repeating a shutdown seal's count read (the query shape of
``QuestDBTickStore._read_counts``: per tick table ``GROUP BY session_id, tenure`` over
``session_id IN (…)`` of ``--sessions`` sessions, owning a third of the rows, as one of
three instances' sessions do) for ``--seconds``, while a probe every ``--probe-every-s``
times a fresh connect plus ``SELECT 1`` (5 s connect timeout, as the store's) and, on a
connection of its own, an append to a small non-WAL table and its read back (what a
lease renewal costs the server). ``--workers`` takes several values: the data stays,
the server is restarted with each.

Per scenario: the scans' seconds (count, p50, max), the probe's connect+``SELECT 1``
and append seconds (p50, p95, max) and the connects that failed. Last line: JSON. The
root is deleted at the end (``--keep`` keeps it).

    .venv/bin/python bench/count_scans.py --root /tmp/x-qdb --prefill-rows 80000000 \\
        --scans 0,1,2,3 --workers 2,4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ticksend import _prefill


def _quantiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    v = sorted(values)
    return {
        "n": len(v),
        "p50_s": round(statistics.median(v), 3),
        "p95_s": round(v[min(len(v) - 1, int(len(v) * 0.95))], 3),
        "max_s": round(v[-1], 3),
    }


async def _scan_loop(conninfo: str, ids: list[str], until: float, took: list[float]) -> None:
    import psycopg

    marks = ", ".join("%s" for _ in ids)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        while time.monotonic() < until:
            for table, extra in (("tt_trades", ""), ("tt_orderbook", " AND level = 0")):
                began = time.monotonic()
                cur = await conn.execute(
                    f"SELECT session_id, tenure, count(), max(batch_seq) FROM {table} "
                    f"WHERE session_id IN ({marks}){extra}",
                    ids,
                )
                await cur.fetchall()
                took.append(time.monotonic() - began)


async def _probe_connects(conninfo: str, until: float, every_s: float, out: dict[str, Any]) -> None:
    """A fresh connect plus ``SELECT 1`` every ``every_s``."""
    import psycopg

    while time.monotonic() < until:
        due = time.monotonic() + every_s
        began = time.monotonic()
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=5
            ) as conn:
                await (await conn.execute("SELECT 1")).fetchall()
            out["connect"].append(time.monotonic() - began)
        except psycopg.OperationalError:
            out["connect_failed"] += 1
        await asyncio.sleep(max(0.0, due - time.monotonic()))


async def _probe_appends(conninfo: str, until: float, every_s: float, out: dict[str, Any]) -> None:
    """On a kept connection (replaced if the server closes it), an append to a small
    non-WAL table and its read back every ``every_s``: a lease renewal's kind of work."""
    import psycopg

    conn = None
    n = 0
    while time.monotonic() < until:
        due = time.monotonic() + every_s
        began = time.monotonic()
        n += 1
        try:
            if conn is None:
                conn = await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, connect_timeout=5
                )
            await conn.execute("INSERT INTO s21_probe VALUES (now(), %s)", [n])
            sql = "SELECT max(n) FROM s21_probe WHERE ts > dateadd('m', -1, now())"
            await (await conn.execute(sql)).fetchall()
            out["append"].append(time.monotonic() - began)
        except psycopg.OperationalError:
            out["append_failed"] += 1
            if conn is not None:
                await conn.close()
            conn = None
        await asyncio.sleep(max(0.0, due - time.monotonic()))
    if conn is not None:
        await conn.close()


async def scenario(
    conninfo: str, ids: list[str], scans: int, seconds: float, every_s: float
) -> dict[str, Any]:
    until = time.monotonic() + seconds
    took: list[float] = []
    probe: dict[str, Any] = {"connect": [], "append": [], "connect_failed": 0, "append_failed": 0}
    await asyncio.gather(
        _probe_connects(conninfo, until, every_s, probe),
        _probe_appends(conninfo, until, every_s, probe),
        *(_scan_loop(conninfo, ids, until, took) for _ in range(scans)),
    )
    return {
        "scans": scans,
        "scan": _quantiles(took),
        "probe_connect": _quantiles(probe["connect"]),
        "probe_connect_failed": probe["connect_failed"],
        "probe_append": _quantiles(probe["append"]),
        "probe_append_failed": probe["append_failed"],
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _jvm_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--prefill-rows", type=int, default=80_000_000)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--scans", default="0,1,2,3")
    parser.add_argument("--workers", default="2,4")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--probe-every-s", type=float, default=0.15)
    parser.add_argument("--idle-s", type=float, default=20.0, help="JVM CPU sampled at rest")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="the root is prefilled already")
    args = parser.parse_args()

    import psycopg

    from ticktape import questdb_server as qs
    from ticktape.store import open_store

    root = Path(args.root)
    results: dict[str, Any] = {"prefill_rows": args.prefill_rows, "runs": []}
    config = qs.QuestDBServerConfig.with_free_ports(root)
    try:
        for n, workers in enumerate(int(w) for w in args.workers.split(",")):
            server = qs.start(replace(config, network_workers=workers))
            try:
                conninfo = server.pg_conninfo
                if n == 0 and not args.reuse:

                    async def make(url: str) -> None:
                        store = open_store(url)
                        await store.open()
                        await store.close()

                    asyncio.run(make(server.store_url))
                    with psycopg.connect(conninfo, autocommit=True) as conn:
                        conn.execute(
                            "CREATE TABLE IF NOT EXISTS s21_probe (ts TIMESTAMP, n LONG) "
                            "TIMESTAMP(ts) PARTITION BY DAY BYPASS WAL"
                        )
                    results["prefill"] = _prefill(
                        conninfo, ["tt_trades", "tt_orderbook"], args.prefill_rows
                    )
                    print(f"prefill: {json.dumps(results['prefill'])}", flush=True)
                cpu0 = _jvm_cpu_s(server.pid)
                time.sleep(args.idle_s)
                idle = (_jvm_cpu_s(server.pid) - cpu0) / args.idle_s
                run: dict[str, Any] = {"workers": workers, "jvm_cpu_at_rest": round(idle, 4)}
                ids = [f"p{k}" for k in range(0, 3 * args.sessions, 3)]
                run["scenarios"] = []
                for scans in (int(s) for s in args.scans.split(",")):
                    got = asyncio.run(
                        scenario(conninfo, ids, scans, args.seconds, args.probe_every_s)
                    )
                    print(f"workers {workers}: {json.dumps(got)}", flush=True)
                    run["scenarios"].append(got)
                results["runs"].append(run)
            finally:
                server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
