"""Push latency across instances: a change made through instance B, seen by a client of A.

Starts two ``ticktape serve`` processes on one store (a fresh SQLite file, or
``--store`` such as a QuestDB URL), opens ``--clients`` Server-Sent-Event
streams on A, then N times: start a session through B and stop it through B
(waiting until stopped), timing from B's answer to the moment every client of A
has received the matching event. Also reports A's resident memory before and
after. Prints figures and, last, one JSON line.

    .venv/bin/python bench/push.py -n 50 --clients 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from ticktape.testing import ServerProcess

BODY = {"kind": "collect", "symbols": ["BTC_USDT"], "rate_per_s": 20}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Listener(threading.Thread):
    """One SSE client of A: when it first saw each (session id, status), and each id at all."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: dict[tuple[str, str], float] = {}
        self.ready = threading.Event()
        self.cond = threading.Condition()

    def run(self) -> None:
        with (
            httpx.Client(timeout=None) as client,
            client.stream("GET", self.url + "/api/sessions/stream") as stream,
        ):
            event = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                    if event == "ready":
                        self.ready.set()
                elif line.startswith("data: ") and event == "session":
                    s = json.loads(line[6:])
                    with self.cond:
                        now = time.monotonic()
                        self.seen.setdefault((s["id"], "*"), now)  # first sight, any status
                        self.seen.setdefault((s["id"], s["status"]), now)
                        self.cond.notify_all()

    def wait(self, key: tuple[str, str], timeout_s: float = 30.0) -> float:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while key not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{key} not seen in {timeout_s}s")
                self.cond.wait(left)
            return self.seen[key]


def rss_kib(server: ServerProcess) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="sessions started and stopped")
    parser.add_argument("--clients", type=int, default=20, help="SSE clients on instance A")
    parser.add_argument("--store", default=None, help="store URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ticktape-push-"))
    store = args.store or f"sqlite:///{tmp}/ticktape.db"
    env = {"TICKTAPE_HEARTBEAT_S": "0.5", "TICKTAPE_LEASE_S": "3"}
    a, b = ServerProcess(store, tmp, env=env), ServerProcess(store, tmp, env=env)
    a.start()
    b.start()
    try:
        listeners = [Listener(a.url) for _ in range(args.clients)]
        for listener in listeners:
            listener.start()
        for listener in listeners:
            listener.ready.wait(30)
        rss_before = rss_kib(a)
        start_lat: list[float] = []
        stop_lat: list[float] = []
        with httpx.Client(base_url=b.url, timeout=60.0) as cb:
            for _ in range(args.n):
                created = cb.post("/api/sessions", json=BODY).json()
                acked = time.monotonic()
                start_lat += [max(0.0, x.wait((created["id"], "*")) - acked) for x in listeners]
                for x in listeners:
                    x.wait((created["id"], "running"))
                stopped = cb.post(f"/api/sessions/{created['id']}/stop", params={"wait": "true"})
                acked = time.monotonic()
                assert stopped.json()["status"] == "stopped"
                stop_lat += [
                    max(0.0, x.wait((created["id"], "stopped")) - acked) for x in listeners
                ]
        rss_after = rss_kib(a)
    finally:
        a.stop()
        b.stop()
    figures: dict[str, Any] = {"sessions": args.n, "clients": args.clients, "store": store}
    for name, values in (("start", start_lat), ("stop", stop_lat)):
        figures[f"{name}_p50_ms"] = round(statistics.median(values) * 1000, 1)
        figures[f"{name}_p99_ms"] = round(percentile(values, 99) * 1000, 1)
        figures[f"{name}_max_ms"] = round(max(values) * 1000, 1)
        print(
            f"{name}: seen on A {figures[f'{name}_p50_ms']} ms p50, "
            f"{figures[f'{name}_p99_ms']} ms p99, {figures[f'{name}_max_ms']} ms max "
            f"({len(values)} deliveries)"
        )
    figures["rss_a_kib_before"], figures["rss_a_kib_after"] = rss_before, rss_after
    print(f"instance A resident memory: {rss_before} KiB before, {rss_after} KiB after")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
