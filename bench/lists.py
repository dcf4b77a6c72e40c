"""Concurrent ``GET /api/sessions?status=running`` over real HTTP, per store and code.

A dashboard or a client fleet polls the running list: many lists at once. For each
store, each code (``--code LABEL=SRC``, alternated round after round) starts a
``ticktape serve`` subprocess on tables of its own, starts ``--running`` sessions
(sim feed, 1 symbol, the sim's default rate), warms up, then has ``--clients``
keep-alive connections each send ``--lists`` lists one after another, and reports the
p50/p95 latency, lists a second and the server's CPU per list (from /proc). Every
list is checked to answer 200 and hold every started session. Prints one line per
code and round and, last, one JSON line with all of them.

    .venv/bin/python bench/lists.py --stores questdb --questdb-url URL --clients 32 \\
        --rounds 2 --code main=/tmp/main/src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from capacity import start_sessions
from codes import add_code_option, code_tag, code_trees, env_for, with_prefix
from lifecycle import Connection, percentile, process_tree_cpu_s, store_url_for
from ticktape.testing import ServerProcess

PATH = "/api/sessions?status=running&limit=500"


async def _client(url: str, lists: int, expected: set[str], latencies: list[float]) -> None:
    parsed = urllib.parse.urlsplit(url)
    conn = Connection(parsed.hostname or "127.0.0.1", parsed.port or 80)
    try:
        for _ in range(lists):
            t0 = time.perf_counter()
            status, body = await conn.request("GET", PATH)
            latencies.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise SystemExit(f"list: {status} {body[:200]!r}")
            listed = {s["id"] for s in json.loads(body)["sessions"]}
            if not expected <= listed:
                raise SystemExit(f"list: {len(expected - listed)} running sessions missing")
    finally:
        if conn.writer is not None:
            conn.writer.close()


async def _load(
    url: str, clients: int, lists: int, expected: set[str]
) -> tuple[list[float], float]:
    latencies: list[float] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(_client(url, lists, expected, latencies) for _ in range(clients)))
    return latencies, time.perf_counter() - t0


def _measure(
    args: argparse.Namespace, store_url: str, src: str | None, tmp: Path
) -> dict[str, Any]:
    server = ServerProcess(store_url, tmp, env=env_for(src, {"TICKTAPE_LOG_LEVEL": "warning"}))
    server.start()
    try:
        expected = set(asyncio.run(start_sessions(server.url, args.running)))
        asyncio.run(_load(server.url, 4, 20, expected))  # warm-up: the index's first read
        assert server.proc is not None
        cpu0 = process_tree_cpu_s(server.proc.pid)
        latencies, wall = asyncio.run(_load(server.url, args.clients, args.lists, expected))
        cpu1 = process_tree_cpu_s(server.proc.pid)
    finally:
        server.stop()
    return {
        "lists": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "lists_per_s": round(len(latencies) / wall, 1),
        "server_cpu_ms_per_list": round((cpu1 - cpu0) * 1000 / len(latencies), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite", help="comma list: sqlite,questdb")
    parser.add_argument("--questdb-url", default=None)
    parser.add_argument("--running", type=int, default=10, help="running sessions")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections")
    parser.add_argument("--lists", type=int, default=40, help="lists per connection")
    parser.add_argument("--rounds", type=int, default=1)
    add_code_option(parser, "the server (each code on tables of its own)")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.stores.split(","):
            for round_ in range(args.rounds):
                for label, src in code_trees(args.code):
                    tag = f"{code_tag(label)}{round_}"
                    if store == "sqlite":
                        url = f"sqlite:///{tmp}/bench-lists-{tag}.db"
                    else:
                        url = store_url_for(store, Path(tmp), args.questdb_url)
                        url = with_prefix(url, f"ls{os.getpid()}_{tag}_")
                    got = {"store": store, "code": label, "round": round_ + 1}
                    got.update(_measure(args, url, src, Path(tmp)))
                    print(json.dumps(got), flush=True)
                    results.append(got)
    print(json.dumps({"benchmark": "lists", "clients": args.clients, "results": results}))


if __name__ == "__main__":
    main()
