"""Start→get latency and lookup success over real HTTP, per store, side by side.

For each store it starts a ``ticktape serve`` subprocess (or uses ``--url``),
then runs N pairs "POST /api/sessions, then GET /api/sessions/{id} at once" at
concurrency C. Each session has a 1 s duration, so it completes by itself and
the server never holds more than a few hundred running sessions. The load comes
from ``--procs`` client processes speaking HTTP/1.1 keep-alive (written by hand); the
server and the clients share this machine's cores, which the figures include. Prints one
line of figures per store and, last, one JSON line with all of them.

    .venv/bin/python bench/lifecycle.py --stores sqlite -n 10000 -c 1 -c 32
    .venv/bin/python bench/lifecycle.py --stores sqlite -n 2000 -c 32 --workers 1 --workers 2
    .venv/bin/python bench/lifecycle.py -n 1000 -c 32 --rounds 3 --code main=/tmp/main/src

With a server it started (or ``--server-pid`` with ``--url``) it also reports the
server's CPU per pair, from /proc: the figure a loaded machine disturbs least.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from ticktape.testing import ServerProcess

BODY = {"kind": "collect", "symbols": ["BTC_USDT"], "rate_per_s": 1, "duration": "1s"}


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (``--workers``),
    from /proc: the server's own cost, whatever else loads the machine."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        child = int(entry.name)
        parents[child] = int(fields[1])
        times[child] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in tree)


def machine_busy_s() -> tuple[float, float]:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat: all but idle,
    iowait and steal) and those the hypervisor gave other guests (steal: this VM's cores
    were wanted and not given; the project VM is on a shared host)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    steal = fields[7] if len(fields) > 7 else 0.0
    return (sum(fields[:8]) - fields[3] - fields[4] - steal) / tick, steal / tick


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Connection:
    """One keep-alive HTTP/1.1 connection, spoken by hand: a request is written as one
    buffer and a response read by its Content-Length (or its chunks).

    The load generator shares the server's two cores, so what it costs is taken from
    the server it measures: httpx cost about 2 ms of CPU per request; h11 (uvicorn's
    own parser, used up to stop 31) 0.47-0.50 ms per pair at c=32, and this
    0.23-0.26 ms (``client_cpu_ms_per_pair`` in the figures).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-length: {len(body)}\r\n"
        if body:
            head += "content-type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line, *lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers = dict(line.lower().split(b":", 1) for line in lines if line)
        length = headers.get(b"content-length")
        if length is not None:
            data = await self.reader.readexactly(int(length))
        elif headers.get(b"transfer-encoding", b"").strip() == b"chunked":
            chunks = []
            while size := int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")  # the empty trailer
            data = b"".join(chunks)
        else:  # neither: the body runs to the end of the connection
            data = await self.reader.read()
            headers[b"connection"] = b"close"
        if headers.get(b"connection", b"").strip() == b"close":
            self.writer.close()
            self.writer = self.reader = None
        return status, data


async def run_pairs(url: str, pairs: int, concurrency: int) -> dict[str, Any]:
    """One client process: ``pairs`` start→get pairs over ``concurrency`` connections."""
    cpu_started = time.process_time()
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
    cpu_s = time.process_time() - cpu_started
    return {"latencies": latencies, "found": found, "errors": errors, "cpu_s": cpu_s}


def _client_process(args: tuple[str, int, int]) -> dict[str, Any]:
    return asyncio.run(run_pairs(*args))


def measure(
    url: str,
    pairs: int,
    concurrency: int,
    procs: int,
    server_pid: int | None = None,
    questdb_pid: int | None = None,
) -> dict[str, Any]:
    """Split the pairs and the connections over ``procs`` client processes; merge.

    With ``server_pid``, also the server's CPU per pair: its (and its workers') CPU
    time over the run, which includes the sessions' own runs, over the pairs; with
    ``questdb_pid``, the QuestDB JVM's likewise (its idle cost and whatever another
    server on it does meanwhile included)."""
    procs = max(1, min(procs, concurrency))
    shares = [
        (
            url,
            pairs // procs + (i < pairs % procs),
            concurrency // procs + (i < concurrency % procs),
        )
        for i in range(procs)
    ]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        pool.map(abs, range(procs))  # the clients' start-up is not the server's cost
        cpu_before = process_tree_cpu_s(server_pid) if server_pid else 0.0
        jvm_before = process_tree_cpu_s(questdb_pid) if questdb_pid else 0.0
        busy_before, steal_before = machine_busy_s()
        started = time.perf_counter()
        parts = pool.map(_client_process, shares)
        elapsed = time.perf_counter() - started
        busy_after, steal_after = machine_busy_s()
        if server_pid:  # the last sessions still run their 1 s: count their end too
            time.sleep(1.5)
        cpu_after = process_tree_cpu_s(server_pid) if server_pid else 0.0
        jvm_after = process_tree_cpu_s(questdb_pid) if questdb_pid else 0.0
    latencies = [x for part in parts for x in part["latencies"]]
    found = sum(part["found"] for part in parts)
    cores_s = elapsed * (os.cpu_count() or 1)
    return {
        "pairs": pairs,
        "concurrency": concurrency,
        "client_procs": procs,
        "start_ms_p50": round(statistics.median(latencies), 2),
        "start_ms_p95": round(percentile(latencies, 95), 2),
        "start_ms_p99": round(percentile(latencies, 99), 2),
        "lookup_success_pct": round(100.0 * found / pairs, 4),
        "pairs_per_s": round(pairs / elapsed, 1),
        "client_cpu_ms_per_pair": round(sum(part["cpu_s"] for part in parts) * 1000 / pairs, 3),
        "server_cpu_ms_per_pair": (
            round((cpu_after - cpu_before) * 1000 / pairs, 3) if server_pid else None
        ),
        "questdb_cpu_ms_per_pair": (
            round((jvm_after - jvm_before) * 1000 / pairs, 3) if questdb_pid else None
        ),
        # the share of the cores' time that was busy (steal included), and that the host
        # took for others: how much of a run's latency the machine, not the server, decided
        "machine_busy_pct": round(
            100.0 * (busy_after - busy_before + steal_after - steal_before) / cores_s, 1
        ),
        "steal_pct": round(100.0 * (steal_after - steal_before) / cores_s, 1),
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


def _median_row(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one server at one level: the median of each figure, lookups summed."""
    out = dict(rounds[-1])
    for key in ("start_ms_p50", "start_ms_p95", "start_ms_p99", "pairs_per_s"):
        out[key] = round(statistics.median(r[key] for r in rounds), 2)
    for key in (
        "client_cpu_ms_per_pair",
        "server_cpu_ms_per_pair",
        "questdb_cpu_ms_per_pair",
        "machine_busy_pct",
        "steal_pct",
    ):
        cpu = [r[key] for r in rounds if r[key] is not None]
        out[key] = round(statistics.median(cpu), 3) if cpu else None
    out["pairs"] = sum(r["pairs"] for r in rounds)
    out["lookup_success_pct"] = round(
        sum(r["lookup_success_pct"] * r["pairs"] for r in rounds) / out["pairs"], 4
    )
    out["rounds"] = len(rounds)
    out["round_p95s"] = [r["start_ms_p95"] for r in rounds]
    out["errors"] = [e for r in rounds for e in r["errors"]][:5]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite", help="comma list: sqlite,questdb")
    parser.add_argument("--questdb-url", default=None)
    parser.add_argument("--url", default=None, help="use this running server instead")
    parser.add_argument(
        "--server-pid", type=int, default=None, help="with --url: its pid, for CPU per pair"
    )
    parser.add_argument(
        "--questdb-pid",
        type=int,
        default=None,
        help="the QuestDB server's pid (a managed one's is in ROOT/questdb.pid): its CPU per pair",
    )
    parser.add_argument("-n", "--pairs", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, action="append")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument(
        "--workers",
        type=int,
        action="append",
        help="serve --workers N (repeat to compare, e.g. --workers 1 --workers 2)",
    )
    parser.add_argument(
        "--code",
        action="append",
        metavar="LABEL=SRC",
        help="also serve the ticktape in SRC (a checkout's src/, via PYTHONPATH), e.g. "
        "main=/tmp/main/src: every server runs at once and the rounds alternate",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of -n pairs per server and level"
    )
    args = parser.parse_args()
    levels = args.concurrency or [1, 32]
    codes: list[tuple[str, str | None]] = [("this", None)]
    for item in args.code or []:
        label, _, src = item.partition("=")
        codes.append((label, str(Path(src).resolve())))
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stores.split(","):
            servers: list[tuple[str, int, str, int | None, ServerProcess | None]] = []
            try:
                if args.url is not None:
                    servers.append(("url", 1, args.url, args.server_pid, None))
                for label, src in codes if args.url is None else []:
                    for workers in args.workers or [1]:
                        store_url = store_url_for(name, Path(tmp), args.questdb_url)
                        if name == "sqlite":  # each server its own file: like with like
                            store_url = store_url.replace(".db", f"-{label}-w{workers}.db")
                        env = {
                            "TICKTAPE_LOG_LEVEL": "warning",
                            "TICKTAPE_WORKERS": str(workers),
                            # a benchmark creates sessions as fast as it can, and keeps many:
                            "TICKTAPE_CREATE_RATE_PER_MIN": "100000000",
                            "TICKTAPE_MAX_RUNNING_PER_STORE": "100000000",
                            "TICKTAPE_MAX_RUNNING_PER_INSTANCE": "100000000",
                        }
                        if src is not None:
                            env["PYTHONPATH"] = src
                        server = ServerProcess(store_url, Path(tmp), env=env)
                        server.start()
                        assert server.proc is not None
                        servers.append((label, workers, server.url, server.proc.pid, server))
                for c in levels:
                    rounds: dict[int, list[dict[str, Any]]] = {}
                    for _ in range(args.rounds):
                        for i, (_, _, url, pid, _) in enumerate(servers):
                            rounds.setdefault(i, []).append(
                                measure(
                                    url,
                                    args.pairs,
                                    c,
                                    args.procs,
                                    pid,
                                    args.questdb_pid if name == "questdb" or args.url else None,
                                )
                            )
                    for i, (label, workers, _, _, _) in enumerate(servers):
                        figures = {"code": label, "workers": workers, **_median_row(rounds[i])}
                        results.setdefault(name, []).append(figures)
                        cpu = figures["server_cpu_ms_per_pair"]
                        jvm = figures["questdb_cpu_ms_per_pair"]
                        print(
                            f"{name:8s} {label:6s} workers={workers} c={c:<3d} "
                            f"p50={figures['start_ms_p50']}ms p95={figures['start_ms_p95']}ms "
                            f"p99={figures['start_ms_p99']}ms "
                            f"found={figures['lookup_success_pct']}% "
                            f"({figures['pairs_per_s']} pairs/s"
                            + (f", server CPU {cpu} ms/pair" if cpu is not None else "")
                            + (f", QuestDB CPU {jvm} ms/pair" if jvm is not None else "")
                            + (f", round p95s {figures['round_p95s']}" if args.rounds > 1 else "")
                            + f", machine busy {figures['machine_busy_pct']} %"
                            + f" steal {figures['steal_pct']} %"
                            + ")",
                            flush=True,
                        )
            finally:
                for *_, server in servers:
                    if server is not None:
                        server.stop()
    print(json.dumps({"benchmark": "lifecycle", "results": results}))


if __name__ == "__main__":
    main()
