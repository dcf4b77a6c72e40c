"""Start→get latency and lookup success over real HTTP, per store, side by side.

For each store it starts a ``ticktape serve`` subprocess (or uses ``--url``),
then runs N pairs "POST /api/sessions, then GET /api/sessions/{id} at once" at
concurrency C. Each session has a 1 s duration, so it completes by itself and
the server never holds more than a few hundred running sessions. The load comes
from ``--procs`` client processes speaking HTTP/1.1 keep-alive through h11; the
server and the clients share this machine's cores, which the figures include. Prints one
line of figures per store and, last, one JSON line with all of them.

    .venv/bin/python bench/lifecycle.py --stores sqlite -n 10000 -c 1 -c 32
    .venv/bin/python bench/lifecycle.py --stores sqlite -n 2000 -c 32 --workers 1 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import h11

from ticktape.testing import ServerProcess

BODY = {"kind": "collect", "symbols": ["BTC_USDT"], "rate_per_s": 1, "duration": "1s"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Connection:
    """One keep-alive HTTP/1.1 connection driven with h11 (uvicorn's own parser).

    httpx costs about 2 ms of CPU per request, enough for the load generator to
    starve the server it measures on a 2-core machine; this costs a tenth of that.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.conn = h11.Connection(h11.CLIENT)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None or self.conn.our_state is h11.MUST_CLOSE:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.conn = h11.Connection(h11.CLIENT)
        elif self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        headers = [("host", self.host), ("content-length", str(len(body)))]
        if body:
            headers.append(("content-type", "application/json"))
        assert self.writer is not None and self.reader is not None
        self.writer.write(self.conn.send(h11.Request(method=method, target=path, headers=headers)))
        self.writer.write(self.conn.send(h11.Data(data=body)) if body else b"")
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(chunks)


async def run_pairs(url: str, pairs: int, concurrency: int) -> dict[str, Any]:
    """One client process: ``pairs`` start→get pairs over ``concurrency`` connections."""
    latencies: list[float] = []
    found = 0
    errors: list[str] = []
    remaining = pairs
    parsed = urllib.parse.urlsplit(url)
    body = json.dumps(BODY).encode()

    async def worker() -> None:
        nonlocal found, remaining
        conn = Connection(parsed.hostname or "127.0.0.1", parsed.port or 80)
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            status, created = await conn.request("POST", "/api/sessions", body)
            latencies.append((time.perf_counter() - t0) * 1000)
            if status != 201:
                errors.append(f"start {status}: {created[:200]!r}")
                continue
            sid = json.loads(created)["id"]
            status, got = await conn.request("GET", f"/api/sessions/{sid}")
            if status == 200 and json.loads(got)["id"] == sid:
                found += 1
            else:
                errors.append(f"get {status}")
        if conn.writer is not None:
            conn.writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"latencies": latencies, "found": found, "errors": errors}


def _client_process(args: tuple[str, int, int]) -> dict[str, Any]:
    return asyncio.run(run_pairs(*args))


def measure(url: str, pairs: int, concurrency: int, procs: int) -> dict[str, Any]:
    """Split the pairs and the connections over ``procs`` client processes; merge."""
    procs = max(1, min(procs, concurrency))
    shares = [
        (
            url,
            pairs // procs + (i < pairs % procs),
            concurrency // procs + (i < concurrency % procs),
        )
        for i in range(procs)
    ]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        parts = pool.map(_client_process, shares)
    elapsed = time.perf_counter() - started
    latencies = [x for part in parts for x in part["latencies"]]
    found = sum(part["found"] for part in parts)
    return {
        "pairs": pairs,
        "concurrency": concurrency,
        "client_procs": procs,
        "start_ms_p50": round(statistics.median(latencies), 2),
        "start_ms_p95": round(percentile(latencies, 95), 2),
        "start_ms_p99": round(percentile(latencies, 99), 2),
        "lookup_success_pct": round(100.0 * found / pairs, 4),
        "pairs_per_s": round(pairs / elapsed, 1),
        "errors": [e for part in parts for e in part["errors"]][:5],
    }


def store_url_for(name: str, workdir: Path, questdb_url: str | None) -> str:
    if name == "sqlite":
        return f"sqlite:///{workdir}/bench-lifecycle.db"
    if name == "questdb":
        if not questdb_url:
            raise SystemExit(
                "--questdb-url is needed for the questdb store (e.g. from `ticktape questdb start`)"
            )
        return questdb_url
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite", help="comma list: sqlite,questdb")
    parser.add_argument("--questdb-url", default=None)
    parser.add_argument("--url", default=None, help="use this running server instead")
    parser.add_argument("-n", "--pairs", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, action="append")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument(
        "--workers",
        type=int,
        action="append",
        help="serve --workers N (repeat to compare, e.g. --workers 1 --workers 2)",
    )
    args = parser.parse_args()
    levels = args.concurrency or [1, 32]
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, workers in [
            (n, w) for n in args.stores.split(",") for w in (args.workers or [1])
        ]:
            server = None
            url = args.url
            if url is None:
                store_url = store_url_for(name, Path(tmp), args.questdb_url)
                if name == "sqlite":  # each server its own file: rows compare like with like
                    store_url = store_url.replace(".db", f"-w{workers}.db")
                server = ServerProcess(
                    store_url,
                    Path(tmp),
                    env={
                        "TICKTAPE_LOG_LEVEL": "warning",
                        "TICKTAPE_WORKERS": str(workers),
                        # a benchmark creates sessions as fast as it can, and keeps many:
                        "TICKTAPE_CREATE_RATE_PER_MIN": "100000000",
                        "TICKTAPE_MAX_RUNNING_PER_STORE": "100000000",
                        "TICKTAPE_MAX_RUNNING_PER_INSTANCE": "100000000",
                    },
                )
                server.start()
                url = server.url
            try:
                for c in levels:
                    figures = {"workers": workers, **measure(url, args.pairs, c, args.procs)}
                    results.setdefault(name, []).append(figures)
                    print(
                        f"{name:8s} workers={workers} c={c:<3d} p50={figures['start_ms_p50']}ms "
                        f"p95={figures['start_ms_p95']}ms p99={figures['start_ms_p99']}ms "
                        f"found={figures['lookup_success_pct']}% "
                        f"({figures['pairs_per_s']} pairs/s)",
                        flush=True,
                    )
            finally:
                if server is not None:
                    server.stop()
    print(json.dumps({"benchmark": "lifecycle", "results": results}))


if __name__ == "__main__":
    main()
