"""Chaos run: several ``ticktape serve`` on one store, killed, paused and restarted at random.

Starts ``--instances`` servers on one store URL (a temporary SQLite file by
default, or any ``sqlite:///`` / ``questdb://`` URL) with short leases, keeps a
population of collect sessions starting and stopping over HTTP (some of them
resumable), and meanwhile SIGKILLs, SIGTERMs and SIGSTOPs instances at random
(always leaving one running) and restarts them; with ``--questdb-root`` it also
restarts that managed QuestDB server once. Store faults are injected in every
server's runtime (``--faults``, run by ``python -m ticktape.testing.faulty_server``;
``--faults ''`` for none): they hit the supervisor's store calls (heartbeats, tick writes, its
transitions, the reconciler), not the API's own reads and writes.

Then it verifies, from the store itself and over HTTP:

- every acknowledged session is found (by id, on a running instance);
- no orphan is left (no non-terminal session with an expired lease);
- no zombie: no running (not paused) instance runs more sessions than the store
  says it owns for longer than the bound, and none runs anything once every
  session is stopped;
- every history is a path of the state machine;
- every ended session recorded exactly what the simulated feed produced, checked
  by the oracle of ``tests/oracle.py`` (not by comparing stats with a number
  counted from the same rows): per symbol, trade ids 1..n each once and the
  snapshots of those trades, the stats equal to that, and no ``count_mismatch``
  event — allowing only the unflushed tail a crashed owner loses, which is counted
  (a resume's gap, a self-stopped runner's unwritten buffer, reaped sessions);
- orphans were reaped or claimed within lease + one heartbeat of their owner's
  last renewal (from each reap's own record: time, and the lease it found expired)
  — except those whose lease window overlaps a QuestDB restart: nothing can be
  reaped while the store is down, so those are reported apart, with the outage.

Also reported, not checked: the reconciler's pass phases, and the session log's "table
busy" answers in the servers' logs with their longest stretch (one writer holding the
log that long: stop 18's 12 s was an instance frozen inside a group commit).

Prints progress and figures, and last one JSON line. Exit status 1 if a check failed.

    .venv/bin/python bench/chaos.py --minutes 3
    .venv/bin/python bench/chaos.py --minutes 10 --store 'questdb://127.0.0.1:8812?ilp=http://127.0.0.1:9000' --questdb-root ~/.cache/ticktape/questdb
"""  # noqa: E501

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from ticktape.api.app import redact_url
from ticktape.config import STORE_RETRY_MAX_S
from ticktape.domain import is_valid_history, utcnow
from ticktape.store import open_store
from ticktape.store.base import SessionQuery
from ticktape.testing import ServerProcess, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests/oracle.py
from tests.oracle import Recording, check_recording, read_stored, was_resumed

DEFAULT_FAULTS = (
    "write=0.02,write@after=0.01,renew_instance=0.05,transition=0.02,transition@after=0.01,"
    "claim=0.05,count=0.02,seal=0.02,add_event=0.02,scan_leases=0.02"
)
SYMBOLS = ["BTC_USDT", "ETH_USDT", "SOL_USDT", "XRP_USDT"]
ACTIVE = "pending,running,stopping"
_EXPIRED_AT = re.compile(r"lease expired at (\S+?)(?:;|$)")
COUNTERS = (
    "ticktape_orphans_reaped_total",
    "ticktape_zombies_self_stopped_total",
    "ticktape_lease_renew_failures_total",
    "ticktape_store_retries_total",
    "ticktape_sessions_resumed_total",
    "ticktape_sessions_handed_over_total",
    "ticktape_fenced_writes_total",
    "ticktape_tick_write_errors_total",
)


PHASES = "ticktape_reconcile_phase_seconds"
STOP_WAIT_S = 30.0  # a process given SIGTERM or SIGKILL has exited by then
PORT_WAIT_S = 10.0  # a restart waits this long for its old port, then takes a new one
_PASS = re.compile(
    r"reconciler pass: (\d+) of (\d+) orphans taken; scan (\S+) s, visibility (\S+) s, "
    r"seal\+commit (\S+) s, total (\S+) s; (\S+) s after the earliest lease expired"
)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "max": round(max(values), 3),
        "p95": round(percentile(values, 95), 3),
        "p50": round(statistics.median(values), 3),
    }


# --------------------------------------------------------------------------- the cluster


@dataclass
class Node:
    server: ServerProcess
    name: str = ""  # instance name (host:port), from /health
    state: str = "down"  # up | paused | down
    restart_at: float = 0.0
    counters: dict[int, dict[str, float]] = field(default_factory=dict)  # per incarnation

    @property
    def alive(self) -> bool:
        """Its process runs (a signal to an exited one would fail or hit nothing)."""
        proc = self.server.proc
        return proc is not None and proc.poll() is None


class Cluster:
    """The servers, what state each is in, and the actions on them (thread-safe)."""

    def __init__(
        self, store_url: str, count: int, env: dict[str, str], log_dir: Path, faults: str
    ) -> None:
        self.store_url = store_url
        self.nodes = [
            Node(ServerProcess(store_url, log_dir, env=env, faults=faults)) for _ in range(count)
        ]
        self.lock = threading.Lock()
        self.actions: Counter[str] = Counter()
        self.started: list[subprocess.Popen[bytes]] = []  # every process: all stopped at the end
        # Times the store itself was down (QuestDB restarts): no reap can happen then, so
        # the bound is checked on the reaps whose lease window does not overlap one.
        self.outages: list[tuple[datetime, datetime]] = []

    def start(self, node: Node) -> None:
        """(Re)start ``node``: only once its previous process has exited and its port is
        free — a server that starts while the old one still holds the port exits at once
        — or on a new free port if the old one stays held. A start that fails leaves no
        process behind."""
        old = node.server.proc
        if old is not None and old.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                old.send_signal(signal.SIGCONT)  # a frozen process cannot die of SIGKILL
                old.kill()
            old.wait(STOP_WAIT_S)
        if not wait_port_free(node.server.port, PORT_WAIT_S):
            node.server.port = free_port()
            node.server.url = f"http://127.0.0.1:{node.server.port}"
            log(f"port still held: {node.name or 'instance'} moves to {node.server.url}")
        try:
            node.server.start()
            health = httpx.get(f"{node.server.url}/health", timeout=10).json()
            node.name = str(health["instance"])
        except BaseException:
            stop_process(node.server.proc)
            raise
        finally:
            if node.server.proc is not None:
                with self.lock:
                    self.started.append(node.server.proc)
        with self.lock:
            node.state = "up"

    def up(self) -> list[Node]:
        with self.lock:
            return [n for n in self.nodes if n.state == "up"]

    def client(self) -> tuple[Node, httpx.Client] | None:
        nodes = self.up()
        if not nodes:
            return None
        node = random.choice(nodes)
        return node, httpx.Client(base_url=node.server.url, timeout=15.0)

    def take_down(self, node: Node) -> bool:
        """Mark ``node`` going down if at least one other stays up."""
        with self.lock:
            if node.state != "up" or sum(n.state == "up" for n in self.nodes) < 2:
                return False
            node.state = "down"
            return True

    def stop_all(self) -> None:
        """Stop every process this run started, whatever state it was left in."""
        with self.lock:
            procs = list(self.started)
        for proc in procs:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGCONT (a frozen process handles no signal but SIGKILL), SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
    try:
        proc.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(STOP_WAIT_S)


def wait_port_free(port: int, timeout_s: float) -> bool:
    """True once nothing listens on ``port`` (polled: the kernel gives no event for it).
    With SO_REUSEADDR, as the server binds: connections of the old process left in
    TIME_WAIT do not keep it from binding, only a listener does."""
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


# --------------------------------------------------------------------------- load and chaos


@dataclass
class Ledger:
    acknowledged: dict[str, bool] = field(default_factory=dict)  # id -> resumable
    errors: Counter[str] = field(default_factory=Counter)
    stops: Counter[str] = field(default_factory=Counter)
    lookups_404: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def workload(cluster: Cluster, ledger: Ledger, args: argparse.Namespace, end: float) -> None:
    """Keep about ``--population`` sessions active: start when below, stop when at it."""
    while time.monotonic() < end:
        time.sleep(random.uniform(0.1, 0.4))
        picked = cluster.client()
        if picked is None:
            continue
        _, c = picked
        try:
            with c:
                active = c.get("/api/sessions", params={"status": ACTIVE, "limit": 500})
                if active.status_code != 200:  # e.g. 503 while QuestDB restarts
                    ledger.errors[f"list_{active.status_code}"] += 1
                    continue
                ids = [s["id"] for s in active.json()["sessions"]]
                if len(ids) < args.population:
                    _start_one(c, ledger, args)
                else:
                    _stop_one(c, ledger, random.choice(ids))
                _lookup_one(c, ledger)
        except Exception as exc:  # the load goes on whatever one request met
            ledger.errors[type(exc).__name__] += 1


def _start_one(c: httpx.Client, ledger: Ledger, args: argparse.Namespace) -> None:
    resumable = random.random() < args.resume_share
    body: dict[str, Any] = {
        "kind": "collect",
        "symbols": random.sample(SYMBOLS, random.randint(1, 3)),
        "rate_per_s": random.choice([20, 100, 300]),
        "duration": random.choice([None, None, None, "5s", "20s"]),
        "on_owner_loss": "resume" if resumable else "fail",
    }
    response = c.post("/api/sessions", json=body)
    if response.status_code == 201:
        with ledger.lock:
            ledger.acknowledged[response.json()["id"]] = resumable
    else:
        ledger.errors[f"start_{response.status_code}"] += 1


def _stop_one(c: httpx.Client, ledger: Ledger, session_id: str) -> None:
    wait = random.random() < 0.3
    params = {"wait": "true", "timeout": "10"} if wait else {}
    response = c.post(f"/api/sessions/{session_id}/stop", params=params)
    ledger.stops[f"{'wait_' if wait else ''}{response.status_code}"] += 1


def _lookup_one(c: httpx.Client, ledger: Ledger) -> None:
    with ledger.lock:
        if not ledger.acknowledged:
            return
        session_id = random.choice(list(ledger.acknowledged))
    if c.get(f"/api/sessions/{session_id}").status_code == 404:
        with ledger.lock:
            ledger.lookups_404 += 1


def chaos(cluster: Cluster, args: argparse.Namespace, end: float, bound_s: float) -> None:
    """Every few seconds: SIGKILL, SIGTERM or SIGSTOP one instance; restart the downed ones.

    An action that fails (a process that died by itself, a restart that does not come
    up) is logged and counted (``action_errors``), and the loop goes on."""
    questdb_at = time.monotonic() + (end - time.monotonic()) / 2 if args.questdb_root else None
    next_action = time.monotonic() + random.uniform(*args.every_s)
    while time.monotonic() < end:
        time.sleep(0.2)
        now = time.monotonic()
        for node in cluster.nodes:
            if node.state == "up" and not node.alive:  # died by itself: restart it
                with cluster.lock:
                    node.state = "down"
                node.restart_at = now + 1.0
                cluster.actions["died_by_itself"] += 1
                log(
                    f"{node.name} exited by itself ({node.server.proc and node.server.proc.poll()})"
                )
            if node.state == "down" and node.restart_at and now >= node.restart_at:
                node.restart_at = 0.0
                try:
                    cluster.start(node)
                    cluster.actions["restart"] += 1
                    log(f"restarted {node.name}")
                except Exception as exc:
                    node.restart_at = time.monotonic() + 2.0
                    cluster.actions["action_errors"] += 1
                    log(f"restart of {node.server.url} failed, retrying: {exc!r:.300}")
        if questdb_at is not None and now >= questdb_at:
            questdb_at = None
            try:
                restart_questdb(Path(args.questdb_root).expanduser(), cluster)
            except Exception as exc:
                cluster.actions["action_errors"] += 1
                log(f"QuestDB restart failed: {exc!r:.300}")
        if now < next_action:
            continue
        next_action = now + random.uniform(*args.every_s)
        node = random.choice(cluster.nodes)
        action = random.choices(["sigkill", "sigterm", "sigstop"], weights=[5, 3, 2])[0]
        if not node.alive or not cluster.take_down(node):
            continue
        log(f"{action} {node.name}")
        cluster.actions[action] += 1
        try:
            act(node, cluster, action, bound_s)
        except Exception as exc:
            cluster.actions["action_errors"] += 1
            log(f"{action} {node.name} failed: {exc!r:.300}")
            with cluster.lock:
                node.state = "down"
            node.restart_at = time.monotonic() + 1.0


def act(node: Node, cluster: Cluster, action: str, bound_s: float) -> None:
    if action == "sigkill":
        node.server.kill()
    elif action == "sigterm":
        try:
            node.server.terminate()
        except subprocess.TimeoutExpired:  # did not stop in time: it dies anyway
            node.server.kill()
            cluster.actions["sigterm_timeout"] += 1
    else:
        pause(node, cluster, seconds=bound_s + random.uniform(0.5, 2.0))
        return
    node.restart_at = time.monotonic() + random.uniform(1.0, 5.0)


def pause(node: Node, cluster: Cluster, seconds: float) -> None:
    """SIGSTOP for ``seconds`` (past the lease: its sessions are reaped), then SIGCONT.

    On SQLite, only at a moment it does not hold the write lock: a process frozen
    inside a write transaction blocks every writer of the file (SQLite's nature).
    """
    if not node.server.freeze(50):
        with cluster.lock:
            node.state = "up"
        return
    with cluster.lock:
        node.state = "paused"
    time.sleep(seconds)
    node.server.signal(signal.SIGCONT)
    with cluster.lock:
        node.state = "up"
    log(f"sigcont {node.name}")


def restart_questdb(root: Path, cluster: Cluster) -> None:
    """Restart the managed QuestDB server of ``root`` (ticktape.questdb_server) as it ran:
    same ports, heap and ``server.conf`` (its idle timeout too)."""
    from ticktape import questdb_server as qdb

    if not qdb.status(root).get("running"):
        log(f"no managed QuestDB runs in {root}: QuestDB restart skipped")
        return
    config = qdb.running_config(root)
    log(f"restarting QuestDB in {root}")
    down = utcnow()
    qdb.stop(root)
    qdb.start(config)
    cluster.outages.append((down, utcnow()))
    cluster.actions["questdb_restart"] += 1
    log("QuestDB is back")


@dataclass
class Watch:
    """Zombie observation: an instance running more sessions than the store says it owns."""

    episodes: int = 0
    samples: int = 0
    since: dict[str, float] = field(default_factory=dict)
    counted: set[str] = field(default_factory=set)


def watcher(cluster: Cluster, watch: Watch, end: float, bound_s: float) -> None:
    while time.monotonic() < end:
        time.sleep(1.0)
        picked = cluster.client()
        if picked is None:
            continue
        try:
            # Runners are read before and after the listing and the smaller count is
            # used: a session started or ended while the listing was read is not an
            # excess, a runner that outlives its ownership is in both reads.
            nodes = cluster.up()
            before = {n.name: scrape(n).get("ticktape_local_runners", 0.0) for n in nodes}
            with picked[1] as c:
                active = c.get("/api/sessions", params={"status": ACTIVE, "limit": 500})
                owners = [str(s["owner"]) for s in active.json()["sessions"]]
            for node in nodes:
                runners = min(before[node.name], scrape(node).get("ticktape_local_runners", 0.0))
                owned = sum(o.startswith(f"{node.name}/") for o in owners)
                excess = runners > owned
                watch.samples += 1
                key = f"{node.name}#{node.server.starts}"
                if not excess:
                    watch.since.pop(key, None)
                    continue
                first = watch.since.setdefault(key, time.monotonic())
                if time.monotonic() - first > bound_s + 1.0 and key not in watch.counted:
                    watch.episodes += 1
                    watch.counted.add(key)
                    log(f"ZOMBIE? {node.name} runs more than it owns for {bound_s + 1:.1f}s")
        except Exception:  # an instance that went down meanwhile: sample again
            continue


def scrape(node: Node) -> dict[str, float]:
    """The counters of ``node``'s current incarnation (kept per incarnation for the totals)."""
    text = httpx.get(f"{node.server.url}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in (*COUNTERS, "ticktape_local_runners") or name.startswith(PHASES):
            values[name] = float(value)
    node.counters[node.server.starts] = values
    return values


def pass_timings(log_dir: Path, cluster: Cluster) -> dict[str, Any]:
    """The reconciler's pass timings: each pass that found orphans logs one line with
    its phases (exact figures); every pass's scan is in the metrics' histogram (count,
    mean, and the bucket bound below which 95 % fell), summed over every incarnation."""
    phases: dict[str, list[float]] = {
        "scan": [], "visibility": [], "seal_commit": [], "total": [], "after_expiry": [],
    }  # fmt: skip
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if (m := _PASS.search(line)) is None:
                continue
            for key, text in zip(phases, m.groups()[2:], strict=True):
                if text != "nan":
                    phases[key].append(float(text))
    report: dict[str, Any] = {f"orphan_pass_{k}_s": summary(v) for k, v in phases.items()}
    sums: dict[str, float] = {}
    for node in cluster.nodes:
        for values in node.counters.values():  # each incarnation's last scrape
            for name, value in values.items():
                if name.startswith(PHASES):
                    sums[name] = sums.get(name, 0.0) + value
    for phase in ("scan", "seal", "commit"):
        count = sums.get(f'{PHASES}_count{{phase="{phase}"}}', 0.0)
        total = sums.get(f'{PHASES}_sum{{phase="{phase}"}}', 0.0)
        buckets = sorted(
            (float(name.split('le="')[1].split('"')[0]), n)
            for name, n in sums.items()
            if name.startswith(f"{PHASES}_bucket") and f'phase="{phase}"' in name
        )
        p95 = next((le for le, n in buckets if count and n >= 0.95 * count), None)
        report[f"all_{phase}_s"] = {
            "count": int(count),
            "mean": round(total / count, 4) if count else None,
            "p95_at_most": p95,
        }
    return report


_LOGGED_AT = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
# "table busy" lines closer than this belong to one stretch: a write that met it waits up
# to STORE_RETRY_MAX_S before its next attempt
BUSY_GAP_S = STORE_RETRY_MAX_S + 0.5


def log_busy(log_dir: Path) -> dict[str, Any]:
    """QuestDB's "table busy" answers in the servers' logs (retries of session-log
    writes), and the longest stretch of them across all instances: a stretch longer
    than a group commit's round trips means one writer held the log that long (an
    instance frozen inside a group commit held it for its whole pause before the
    managed server closed silent connections)."""
    stamps: list[datetime] = []
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "table busy" in line and (m := _LOGGED_AT.match(line)):
                stamps.append(datetime.fromisoformat(f"{m.group(1)}.{m.group(2)}"))
    stamps.sort()
    longest, start = 0.0, None
    for prev, at in zip([None, *stamps], stamps, strict=False):
        if prev is None or (at - prev).total_seconds() > BUSY_GAP_S:
            start = at
        assert start is not None
        longest = max(longest, (at - start).total_seconds())
    return {"lines": len(stamps), "longest_stretch_s": round(longest, 3)}


# --------------------------------------------------------------------------- verification


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def _recorded_exactly(
    store: Any, session: Any, events: list[Any], tail: Counter[str]
) -> str | None:
    """The oracle (tests/oracle.py) for one ended session; what is wrong, or None.

    A session whose owner crashed (reaped, claimed after its lease expired, or its
    runner stopped itself) may have lost its unflushed tail: that is allowed, and
    counted in ``tail`` — never a hole or a repeat before it.
    """
    crashed = False
    for i, e in enumerate(events):
        handed = i > 0 and events[i - 1].reason == "handed_over"
        if e.reason in ("owner_lost", "owner_changed") and not handed:
            crashed = True
        if e.reason == "zombie_stopped":
            crashed = True
            found = re.search(r"(\d+) buffered ticks not written", e.detail or "")
            tail["self_stopped_unwritten_ticks"] += int(found.group(1)) if found else 0
        if e.reason == "resumed" and e.detail:
            lost_s = json.loads(e.detail).get("lost_s")
            if lost_s:  # the feed's trades in the gap between the last stored and the resume
                rate = session.config.rate_per_s
                tail["resume_gap_trades_est"] += round(lost_s * rate) * len(session.symbols)
    if crashed and session.reason == "owner_lost":
        tail["sessions_reaped_after_a_crash"] += 1
    try:
        counts = check_recording(
            Recording.of(session),
            await read_stored(store, session.id),
            resumed=was_resumed(events),
            tail_lost=crashed,
        )
    except AssertionError as exc:
        return str(exc)[:300]
    if (session.stats.trades, session.stats.orderbook) != (counts.trades, counts.orderbook):
        return f"stats {session.stats} differ from the feed's ticks stored {counts}"
    return None


async def verify_store(
    url: str,
    acknowledged: set[str],
    lease_s: float,
    outages: list[tuple[datetime, datetime]],
    *,
    check_data: bool = True,
) -> dict[str, Any]:
    store = open_store(url)
    await store.open()
    try:
        now = utcnow()
        expired = await store.sessions.find_expired(now - timedelta(seconds=0.5))
        sessions = []
        cursor = None
        while True:
            page = await store.sessions.list_sessions(
                SessionQuery(include_deleted=True, limit=500, cursor=cursor)
            )
            sessions.extend(page.sessions)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        invalid, mismatched, still_active = [], [], []
        oracle_failures: dict[str, str] = {}
        count_mismatch_events: list[str] = []
        tail = Counter[str]()
        fenced: dict[str, list[int]] = {}  # QuestDB: late rows of stale owners, kept out
        reaps: list[float] = []
        claims: list[float] = []
        handovers: list[float] = []
        across_outage: list[float] = []
        startup = zombie_notes = 0
        for s in sessions:
            events = await store.sessions.list_events(s.id)
            moves = [events[0].to_status] + [
                e.to_status for e in events[1:] if e.from_status != e.to_status
            ]
            if not is_valid_history(moves) or moves[-1] is not s.status:
                invalid.append(s.id)
            if s.is_terminal:
                problem = await _recorded_exactly(store, s, events, tail) if check_data else None
                if problem is not None:
                    mismatched.append(s.id)
                    oracle_failures[s.id] = problem
                if any(e.reason == "count_mismatch" for e in events):
                    count_mismatch_events.append(s.id)
                backend_ticks = store.inner.ticks  # QuestDB's tick store counts fenced rows
                fenced_rows = getattr(backend_ticks, "fenced", None)
                late = await fenced_rows(s.id) if fenced_rows is not None else None
                if late is not None and (late.trades or late.orderbook):
                    fenced[s.id] = [late.trades, late.orderbook]
            else:
                still_active.append(s.id)
            for i, e in enumerate(events):
                if e.reason == "zombie_stopped":
                    zombie_notes += 1
                if e.reason not in ("owner_lost", "owner_changed") or not e.detail:
                    continue
                if "restarted" in e.detail:
                    startup += 1
                elif i > 0 and events[i - 1].reason == "handed_over":
                    handovers.append((e.at - events[i - 1].at).total_seconds())
                elif (found := _EXPIRED_AT.search(e.detail)) and found.group(1) != "never":
                    last_renewal = _at(found.group(1)) - timedelta(seconds=lease_s)
                    delay = (e.at - last_renewal).total_seconds()
                    if any(start <= e.at and last_renewal <= end for start, end in outages):
                        across_outage.append(delay)
                    else:
                        (claims if e.reason == "owner_changed" else reaps).append(delay)
        return {
            "sessions_in_store": len(sessions),
            "orphans_left": sorted(s.id for s in expired),
            "still_active": still_active,
            "invalid_histories": invalid,
            "stats_mismatches": mismatched,
            "oracle_failures": oracle_failures,
            "count_mismatch_events": count_mismatch_events,
            "crash_lost_tail": dict(tail),
            "late_rows_fenced": fenced,
            "reaps": reaps,
            "claims": claims,
            "handover_claims": handovers,
            "across_outage": across_outage,
            "startup_reaps": startup,
            "zombie_notes": zombie_notes,
            "unknown_acknowledged": sorted(acknowledged - {s.id for s in sessions}),
        }
    finally:
        await store.close()


def stop_everything(cluster: Cluster) -> Counter[str]:
    outcome: Counter[str] = Counter()
    picked = cluster.client()
    assert picked is not None
    with picked[1] as c:
        for _ in range(5):
            active = c.get("/api/sessions", params={"status": ACTIVE, "limit": 500}).json()
            if not active["sessions"]:
                break
            for s in active["sessions"]:
                r = c.post(f"/api/sessions/{s['id']}/stop", params={"wait": "true", "timeout": 30})
                outcome[str(r.status_code)] += 1
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="", help="store URL (default: a temporary SQLite file)")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--instances", type=int, default=3, choices=[2, 3])
    parser.add_argument("--heartbeat-s", type=float, default=0.5)
    parser.add_argument("--lease-s", type=float, default=2.0)
    parser.add_argument("--population", type=int, default=10, help="active sessions to keep")
    parser.add_argument("--resume-share", type=float, default=0.3)
    parser.add_argument(
        "--faults", default=DEFAULT_FAULTS, help="store faults injected into every server's runtime"
    )
    parser.add_argument("--questdb-root", default="", help="restart this managed QuestDB once")
    parser.add_argument(
        "--every-s", type=float, nargs=2, default=(6.0, 14.0), metavar=("MIN", "MAX")
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log-dir", default="", help="server logs (default: a temporary dir)")
    parser.add_argument(
        "--log-level", default="warning", help="the servers' (info: each seal group's split)"
    )
    args = parser.parse_args()
    if args.seed is not None:
        random.seed(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="ticktape-chaos-")
    log_dir = Path(args.log_dir or tmp.name)
    log_dir.mkdir(parents=True, exist_ok=True)
    url = args.store or f"sqlite:///{tmp.name}/chaos.db"
    bound_s = args.lease_s + args.heartbeat_s
    env = {
        "TICKTAPE_HEARTBEAT_S": str(args.heartbeat_s),
        "TICKTAPE_LEASE_S": str(args.lease_s),
        "TICKTAPE_LOG_LEVEL": args.log_level,
        # sessions are created as fast as the workers go, from one client address
        "TICKTAPE_CREATE_RATE_PER_MIN": "100000000",
        "TICKTAPE_MAX_RUNNING_PER_STORE": "100000000",
        "TICKTAPE_MAX_RUNNING_PER_INSTANCE": "100000000",
    }
    cluster = Cluster(url, args.instances, env, log_dir, args.faults)

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM: the finally below stops every server

    signal.signal(signal.SIGTERM, terminated)
    ledger, watch = Ledger(), Watch()
    log(
        f"chaos on {redact_url(url)}: {args.instances} instances, {args.minutes} min, "
        f"heartbeat {args.heartbeat_s}s, lease {args.lease_s}s, faults {args.faults or 'none'}"
    )
    try:
        for node in cluster.nodes:
            cluster.start(node)
        end = time.monotonic() + args.minutes * 60
        threads = [
            threading.Thread(target=workload, args=(cluster, ledger, args, end), daemon=True),
            threading.Thread(target=workload, args=(cluster, ledger, args, end), daemon=True),
            threading.Thread(target=chaos, args=(cluster, args, end, bound_s), daemon=True),
            threading.Thread(target=watcher, args=(cluster, watch, end, bound_s), daemon=True),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log("chaos over: every instance up again, then settling for lease + heartbeat")
        for node in cluster.nodes:
            if node.state != "up" or not node.alive:
                for attempt in range(3):
                    try:
                        cluster.start(node)
                        break
                    except RuntimeError as exc:
                        log(f"final restart of {node.server.url} failed: {exc!r:.300}")
                        if attempt == 2:
                            raise
        time.sleep(bound_s + 2.0)  # an orphan left now is one the reconcilers did not reap
        settled = asyncio.run(
            verify_store(url, set(), args.lease_s, cluster.outages, check_data=False)
        )
        orphans_first = settled["orphans_left"]
        found = 0
        picked = cluster.client()
        assert picked is not None
        with picked[1] as c:
            for sid in ledger.acknowledged:
                r = c.get(f"/api/sessions/{sid}")
                found += r.status_code == 200 and r.json()["id"] == sid
        final_stops = stop_everything(cluster)
        left_running = {n.name: scrape(n).get("ticktape_local_runners", 0.0) for n in cluster.up()}
        checked = asyncio.run(
            verify_store(url, set(ledger.acknowledged), args.lease_s, cluster.outages)
        )
    finally:
        cluster.stop_all()
    totals: Counter[str] = Counter()
    for node in cluster.nodes:
        for values in node.counters.values():
            for name in COUNTERS:
                totals[name.removeprefix("ticktape_").removesuffix("_total")] += int(
                    values.get(name, 0)
                )
    reaps = checked["reaps"] + checked["claims"]
    zombies = watch.episodes + sum(1 for v in left_running.values() if v)
    report = {
        "benchmark": "chaos",
        "store": redact_url(url),
        "minutes": args.minutes,
        "instances": args.instances,
        "heartbeat_s": args.heartbeat_s,
        "lease_s": args.lease_s,
        "bound_s": bound_s,
        "faults": args.faults,
        "actions": dict(cluster.actions),
        "sessions_acknowledged": len(ledger.acknowledged),
        "sessions_found": found,
        "sessions_in_store": checked["sessions_in_store"],
        "lookups_404_during_run": ledger.lookups_404,
        "orphans_left": len(orphans_first) + len(checked["orphans_left"]),
        "zombies_observed_after_bound": zombies,
        "zombie_samples": watch.samples,
        "zombie_stopped_notes": checked["zombie_notes"],
        "invalid_transitions": len(checked["invalid_histories"]),
        "stats_mismatches": len(checked["stats_mismatches"]),
        "oracle_failures": dict(list(checked["oracle_failures"].items())[:5]),
        "count_mismatch_events": len(checked["count_mismatch_events"]),
        "crash_lost_tail": checked["crash_lost_tail"],
        "sessions_with_late_rows_fenced": checked["late_rows_fenced"],
        "still_active_after_final_stop": len(checked["still_active"]),
        "orphan_reap_s": summary(checked["reaps"]),
        "orphan_claim_s": summary(checked["claims"]),
        "orphan_reap_or_claim_s": summary(reaps),
        "handover_claim_s": summary(checked["handover_claims"]),
        "reap_across_store_outage_s": summary(checked["across_outage"]),
        "store_outages_s": [round((b - a).total_seconds(), 3) for a, b in cluster.outages],
        "startup_reaps": checked["startup_reaps"],
        "counters": dict(totals),
        **pass_timings(log_dir, cluster),
        "session_log_busy": log_busy(log_dir),
        "http_errors": dict(ledger.errors),
        "stops": dict(ledger.stops),
        "final_stops": dict(final_stops),
    }
    report["ok"] = (
        report["sessions_found"] == report["sessions_acknowledged"]
        and not checked["unknown_acknowledged"]
        and report["lookups_404_during_run"] == 0
        and report["orphans_left"] == 0
        and report["zombies_observed_after_bound"] == 0
        and report["invalid_transitions"] == 0
        and report["stats_mismatches"] == 0
        and report["count_mismatch_events"] == 0
        and report["still_active_after_final_stop"] == 0
        and (not reaps or max(reaps) <= bound_s)
    )
    print()
    for key in (
        "actions", "sessions_acknowledged", "sessions_found", "orphans_left",
        "zombies_observed_after_bound", "invalid_transitions", "stats_mismatches",
        "count_mismatch_events", "crash_lost_tail",
        "orphan_reap_s", "orphan_claim_s", "handover_claim_s", "reap_across_store_outage_s",
        "store_outages_s", "counters", "orphan_pass_scan_s", "orphan_pass_visibility_s",
        "orphan_pass_seal_commit_s", "orphan_pass_total_s", "orphan_pass_after_expiry_s",
        "all_scan_s", "all_seal_s", "all_commit_s", "session_log_busy",
    ):  # fmt: skip
        print(f"{key:>30}: {report[key]}")
    print(f"{'verdict':>30}: {'OK' if report['ok'] else 'FAILED'} (bound {bound_s:g}s)")
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
