"""The running-sessions list at many running sessions: ``GET /api/sessions?status=running``
p50/p95 over real HTTP, from a server whose event loop is as busy as a loaded instance's.

Each round starts a ``ticktape serve`` on a new SQLite file (default timing, limits lifted),
starts ``--sessions`` collect sessions on it (sim, 1 symbol, the sim's default rate: they
really run), waits ``--settle-s`` (every session running and renewed), then times
``--requests`` GETs of the running list one after another — the default page (50) and, in
turn, a page of 500 — and kills the server (its file is thrown away). ``--code LABEL=SRC``
adds the ticktape in SRC (a checkout's src/, via PYTHONPATH); the rounds alternate between
the codes, so load drifts fall on each alike. Prints one line per round and code, then
the medians, then one JSON line.

    .venv/bin/python bench/list_running.py --sessions 1000 --rounds 2 --code main=/tmp/main/src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from codes import add_code_option, code_trees, env_for
from lifecycle import Connection, percentile
from ticktape.testing import ServerProcess

START = {"kind": "collect", "symbols": ["BTC_USDT"]}  # the sim's default rate
ENV = {
    "TICKTAPE_LOG_LEVEL": "warning",
    "TICKTAPE_CREATE_RATE_PER_MIN": "100000000",
    "TICKTAPE_MAX_RUNNING_PER_STORE": "100000000",
    "TICKTAPE_MAX_RUNNING_PER_INSTANCE": "100000000",
}
PAGES = {
    "list50": "/api/sessions?status=running",
    "list500": "/api/sessions?status=running&limit=500",
}


def _connection(url: str) -> Connection:
    parsed = urllib.parse.urlsplit(url)
    return Connection(parsed.hostname or "127.0.0.1", parsed.port or 80)


async def _start(url: str, count: int, clients: int) -> None:
    left = list(range(count))

    async def client() -> None:
        conn = _connection(url)
        while left:
            left.pop()
            status, body = await conn.request("POST", "/api/sessions", json.dumps(START).encode())
            if status != 201:
                raise SystemExit(f"start: {status} {body[:200]!r}")
        if conn.writer is not None:
            conn.writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))


async def _running(url: str) -> int:
    conn = _connection(url)
    status, body = await conn.request("GET", "/api/sessions?status=running&limit=1")
    if conn.writer is not None:
        conn.writer.close()
    if status != 200:
        raise SystemExit(f"list: {status}")
    return len(json.loads(body)["sessions"])


async def _timed(url: str, requests: int) -> dict[str, list[float]]:
    conn = _connection(url)
    took: dict[str, list[float]] = {name: [] for name in PAGES}
    for i in range(requests):
        name = list(PAGES)[i % len(PAGES)]
        t0 = time.perf_counter()
        status, body = await conn.request("GET", PAGES[name])
        took[name].append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise SystemExit(f"GET {PAGES[name]}: {status} {body[:200]!r}")
    if conn.writer is not None:
        conn.writer.close()
    return took


def one_round(src: str | None, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = env_for(src, ENV)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        server = ServerProcess(f"sqlite:///{tmp}/list.db", Path(tmp), env=env)
        server.start()
        try:
            started = time.perf_counter()
            asyncio.run(_start(server.url, args.sessions, args.clients))
            start_s = time.perf_counter() - started
            time.sleep(args.settle_s)  # every session running and renewed: nothing to await
            assert asyncio.run(_running(server.url)) == 1
            took = asyncio.run(_timed(server.url, args.requests))
        finally:
            server.kill()  # a throw-away store: no graceful stop of its sessions
    figures: dict[str, Any] = {"start_s": round(start_s, 1)}
    for name, values in took.items():
        figures[name] = {
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(percentile(values, 95), 2),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8, help="concurrent starts")
    parser.add_argument("--settle-s", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=200, help="per round, both pages")
    parser.add_argument("--rounds", type=int, default=2)
    add_code_option(parser, "the server")
    args = parser.parse_args()
    codes = code_trees(args.code)
    rounds: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in codes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for label, src in codes if r % 2 == 0 else codes[::-1]:
                figures = one_round(src, args, Path(tmp))
                rounds[label].append(figures)
                load = os.getloadavg()[0]
                print(f"round {r} {label:6s} {json.dumps(figures)} load {load:.1f}", flush=True)
    summary: dict[str, Any] = {}
    for label, runs in rounds.items():
        summary[label] = {
            name: {
                key: round(statistics.median(run[name][key] for run in runs), 2)
                for key in ("p50_ms", "p95_ms")
            }
            for name in PAGES
        }
        print(f"{label:6s} median over {len(runs)} rounds: {json.dumps(summary[label])}")
    print(
        json.dumps(
            {
                "benchmark": "list_running",
                "sessions": args.sessions,
                "requests": args.requests,
                "rounds": rounds,
                "median": summary,
            }
        )
    )


if __name__ == "__main__":
    main()
