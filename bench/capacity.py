"""Capacity: reads with a long history (``history`` mode) and a ramp of running sessions
(``ramp`` mode), per store.

For each store it starts a ``ticktape serve`` subprocess on an empty store, starts
``--running`` sessions through the API (sim feed, 1 symbol, the sim's default
rate), and measures over real HTTP the p95 of ``GET /api/sessions/{id}`` (of a
running session) and ``GET /api/sessions?status=running``. Then it stores
``--history`` finished sessions (created and failed: on SQLite through the store
contract, ``--seed-concurrency`` at a time; on QuestDB the same log rows appended
``--seed-batch`` sessions a transaction by ``QuestDBSessionStore.append_history``,
or through the contract with ``--seed contract``) and measures the same reads
again, at once and after ``--quiet-s`` seconds with nothing written (the target,
"within 2x of the empty store", is judged on the latter: a store with a long history,
not one just written in bulk). With ``--code LABEL=SRC`` each code runs the same on
tables of its own, one after the other. Prints one line per store and phase and,
last, one JSON line with all figures.

    .venv/bin/python bench/capacity.py --stores sqlite,questdb --questdb-url URL \\
        --history 100000

``--mode ramp`` starts ``--instances`` ``ticktape serve`` processes on one store at
the default timing (heartbeat 2 s, lease 10 s) and adds ``--step`` sessions (sim, 1
symbol, default rate: trades and order books), spread over the instances through the
API (``--clients`` at a time), then holds each level ``--hold-s`` seconds (the last,
``--max``, ``--final-hold-s`` if given: a 10-minute hold at the top without 10 minutes
per level), checking every 2 s each instance's ``/metrics``: lease-renewal failures and
live runners (their sum must equal the level: a failed session, ``owner_lost`` or any
other, has none); and every ``--list-every-s`` (10 s), at the end of the hold and as soon
as runners are missing, the failed sessions (with their reasons) and every running
session's lease (the full listing, which costs the first instance CPU per session and
QuestDB a scan of the log): the oldest renewal's age (how long ago the oldest running
session's lease was renewed: ``lease_s`` minus what is left of its lease) and the heartbeat lag
(that age minus the heartbeat interval: how late the renewal round is; until stop 11
the age itself was called the lag, which counted the interval as lateness), each instance's RSS and
CPU, the store's write rate (ticks stored per second, all instances) beside what the
feeds produced, and the servers' CPU-seconds per session-second and per stored tick
(robust on a shared, noisy machine: what one free core would hold follows), and this
benchmark's own CPU (``bench_cpu_pct``), which shares the cores. It stops
at the first level that breaks a limit — a failed session or renewal failure, start
p95 > 100 ms, heartbeat lag > lease/4 — or at ``--max``, and says which.
Then it SIGTERMs every instance at once with all its sessions running, as a deploy
does, and reports how long each took to exit and how many runners its log says were
cancelled past the grace period (``shutdown``).

    .venv/bin/python bench/capacity.py --mode ramp --stores sqlite --instances 1 \
        --step 100 --max 1000 --hold-s 60
    .venv/bin/python bench/capacity.py --mode ramp --stores questdb --questdb-url URL \
        --instances 3 --step 300 --max 3000 --hold-s 60

``--code LABEL=SRC`` (repeatable) also ramps servers that run another tree's
``ticktape`` (PYTHONPATH=SRC, e.g. main's ``git archive``): one ramp per code on fresh
servers and tables of the same store, alternated ``--rounds`` times.

Before each ramp it prints the store server's state (``settle``: WAL transactions its
tables' writers have still to apply, the JVM's CPU with ``--questdb-pid``); with
``--settle-s S`` it first waits, at most S seconds, until that WAL is applied and the JVM
is idle, and prints how long it waited: a condition of the measurement, stated (a ramp
right after another run shares the cores with the server still applying its rows). Each
level also reports its starts' p95 per tenth of the starts (``start_p95_by_tenth_ms``)
and the cores during the starts (``machine_starts``: load, this run's CPU, the other
processes' CPU and the hypervisor's steal — the VM's cores given to other guests — which
on a shared machine weigh on the start p95 as much as the code).

``--mem-every-s S`` has each server write a memory sample every S seconds (RSS, CPython's
arenas and live blocks, glibc malloc's heaps, what is in use and free in them, its mapped
blocks, the rows the tick buffers hold) to ``DIR/mem-<code>/<pid>.jsonl``
(``bench/memdiag``): whether RSS grows with live memory or with the allocators' holdings.

The issue asks each level held 10 minutes (``--hold-s 600``); shorter holds are
marked as such in the JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from codes import add_code_option, code_tag, code_trees, env_for, with_prefix
from lifecycle import Connection, machine_busy_s, percentile, store_url_for
from ticktape.domain import DataType, Session, SessionStatus, utcnow
from ticktape.store import open_store
from ticktape.testing import ServerProcess, draft_session, store_finished

START = {"kind": "collect", "symbols": ["BTC_USDT"]}  # the sim's default rate


async def timed_gets(url: str, paths: list[str], requests: int) -> dict[str, float]:
    parsed = urllib.parse.urlsplit(url)
    conn = Connection(parsed.hostname or "127.0.0.1", parsed.port or 80)
    latencies: list[float] = []
    for i in range(requests):
        t0 = time.perf_counter()
        status, body = await conn.request("GET", paths[i % len(paths)])
        latencies.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise SystemExit(f"GET {paths[i % len(paths)]}: {status} {body[:200]!r}")
    if conn.writer is not None:
        conn.writer.close()
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
    }


async def start_sessions(url: str, count: int) -> list[str]:
    parsed = urllib.parse.urlsplit(url)
    conn = Connection(parsed.hostname or "127.0.0.1", parsed.port or 80)
    ids = []
    for _ in range(count):
        status, body = await conn.request("POST", "/api/sessions", json.dumps(START).encode())
        if status != 201:
            raise SystemExit(f"start: {status} {body[:200]!r}")
        ids.append(json.loads(body)["id"])
    if conn.writer is not None:
        conn.writer.close()
    return ids


async def seed_history(store_url: str, count: int, concurrency: int) -> float:
    """Store ``count`` finished sessions (created, then failed); returns sessions/s."""
    store = open_store(store_url)
    await store.open()
    started = time.perf_counter()
    try:
        drafts = (_seed_session(utcnow()) for _ in range(count))
        await store_finished(store, drafts, concurrency=concurrency, actor="bench")
    finally:
        await store.close()
    return count / (time.perf_counter() - started)


def _seed_session(now: datetime) -> Session:
    # owned by no live instance but leased: no reconciler reaps it first
    return draft_session(
        data_types=(DataType.TRADES,),
        created_at=now,
        owner="bench/seed",
        lease_expires_at=now + timedelta(hours=1),
    )


async def seed_history_bulk(store_url: str, count: int, batch: int) -> float:
    """QuestDB: the same rows as :func:`seed_history` (created, then failed), ``batch``
    sessions per transaction through ``QuestDBSessionStore.append_history`` instead of
    one compare-and-set each. Returns sessions/s."""
    from ticktape.errors import StoreBusy
    from ticktape.store.questdb import QuestDBStore

    store = QuestDBStore(store_url)
    await store.open()
    started = time.perf_counter()
    try:
        done = 0
        while done < count:
            sessions = [_seed_session(utcnow()) for _ in range(min(batch, count - done))]
            for attempt in range(100):
                try:
                    await store.sessions.append_history(
                        sessions,
                        to_status=SessionStatus.FAILED,
                        reason="start_failed",
                        actor="bench",
                    )
                    break
                except StoreBusy:  # the server is appending to the log right now
                    if attempt == 99:
                        raise
                    await asyncio.sleep(0.01)
            done += len(sessions)
    finally:
        await store.close()
    return count / (time.perf_counter() - started)


async def reads(url: str, ids: list[str], requests: int) -> dict[str, Any]:
    return {
        "get_session": await timed_gets(url, [f"/api/sessions/{i}" for i in ids], requests),
        "list_running": await timed_gets(url, ["/api/sessions?status=running"], requests),
    }


# History mode: the target is judged on reads taken once nothing has been written for
# this long: the longest window a QuestDB server's reads keep of the log's newest rows
# (the reconciler's, 10 s: _scan.LEASE_SCAN_OVERLAP_S) and a little. Reads taken at once
# after the seeding are printed too; they also pay for the seeding's last seconds.
QUIET_S = 12.0
LEASE_S = 10.0
HEARTBEAT_S = 2.0
SAMPLE_S = 2.0
# The full listing of the running sessions serialises every session on the first
# instance (at 1,000 sessions every 2 s it was about 8 % of that instance's CPU) and
# costs QuestDB a scan of the session log, as does the listing of failed sessions:
# they run this often (``--list-every-s``), the instances' /metrics every SAMPLE_S.
LIST_EVERY_S = 10.0
PROBE_EVERY_S = 0.05  # between two requests of the event-loop probe (``_Probe``)
# what the probe asks for: no such route (``GET /api/strategies``, tried first, builds
# every strategy's JSON schema per request: 2 % of an instance's CPU at 20 requests/s)
PROBE_PATH = "/api/loop-probe"
# a ramp ends with every instance SIGTERMed at once; one still running this long after is
# reported (exit_s null) and killed
SHUTDOWN_WAIT_S = 120.0
MEMDIAG = Path(__file__).resolve().parent / "memdiag"  # --mem-every-s
# --settle-s: before each ramp, wait until every WAL table's writer has applied what its
# sequencer holds and the JVM (--questdb-pid) used under this share of a core over one
# window; the wait is bounded by --settle-s and printed, with the state it found
SETTLE_POLL_S = 1.0
SETTLE_IDLE_CPU_PCT = 15.0
RAMP_ENV = {
    "TICKTAPE_LOG_LEVEL": "warning",
    "TICKTAPE_HEARTBEAT_S": str(HEARTBEAT_S),
    "TICKTAPE_LEASE_S": str(LEASE_S),
    "TICKTAPE_CREATE_RATE_PER_MIN": "100000000",
    "TICKTAPE_MAX_RUNNING_PER_STORE": "100000000",
    "TICKTAPE_MAX_RUNNING_PER_INSTANCE": "100000000",
}


def _proc(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds user+system) of a process, from /proc."""
    rss_kb = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = float(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = float(fields[11]) + float(fields[12])  # utime, stime (fields 14, 15)
    return rss_kb / 1024, ticks / os.sysconf("SC_CLK_TCK")


# The JVM's threads by group, from their names (/proc/<pid>/task/*/stat, 15 characters):
# the JIT compilers, the garbage collector, the VM thread (safepoints), QuestDB's worker
# pools by name (``shared-network_0`` -> ``shared-network``) and the rest as ``other``.
_JVM_GROUPS = (
    ("jit_c1", re.compile(r"C1 CompilerThre")),
    ("jit_c2", re.compile(r"C2 CompilerThre")),
    ("gc", re.compile(r"GC Thread|G1 |GC Conc|VM Periodic|ZGC|Shenandoah")),
    ("vm", re.compile(r"VM Thread")),
    ("main", re.compile(r"java$")),
)
_POOL_SUFFIX = re.compile(r"[_#-]?\d*$")


def _jvm_threads_s(pid: int | None) -> dict[str, float]:
    """CPU seconds (user+system) of the JVM's threads so far, summed by group (``_JVM_GROUPS``,
    else a QuestDB pool's name without its index, else ``other``): one read of each thread's
    stat; threads that ended took their CPU with them, so compare two samples."""
    groups: dict[str, float] = {}
    if not pid:
        return groups
    tick = os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:  # a thread that just ended
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            group = next((g for g, rx in _JVM_GROUPS if rx.match(name)), None)
            if group is None:
                pool = _POOL_SUFFIX.sub("", name)
                group = pool if re.fullmatch(r"[a-z][a-z-]+", pool) else "other"
            groups[group] = groups.get(group, 0.0) + (float(fields[11]) + float(fields[12])) / tick
    return groups


def _jvm_split(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each group used between two ``_jvm_threads_s`` samples, largest first."""
    used = {g: after[g] - before.get(g, 0.0) for g in after}
    return {g: round(s, 2) for g, s in sorted(used.items(), key=lambda kv: -kv[1]) if s >= 0.005}


def _switches(pid: int) -> tuple[int, float]:
    """(context switches of all the process's threads, ever; its kernel CPU seconds): the
    switches are the wake-ups (the loop's, and the hand-offs to and from the store's
    writer thread), robust on a loaded machine where wall-clock figures are not."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return total, float(fields[12]) / os.sysconf("SC_CLK_TCK")


def _wal_txns(store_url: str | None) -> int:
    """QuestDB: WAL transactions committed so far to the tick tables (each ILP request
    commits one per table it touches; the JVM's cost follows their number more than the
    rows they carry), or 0 for another store."""
    if not store_url or not store_url.startswith("questdb:"):
        return 0
    import psycopg

    from ticktape.store.questdb import QuestDBAddress

    address = QuestDBAddress.from_url(store_url)
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT sum(sequencerTxn) FROM wal_tables() WHERE name IN (%s, %s)",
            [f"{address.prefix}trades", f"{address.prefix}orderbook"],
        ).fetchall()
    return int(rows[0][0] or 0)


def _own_cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += _proc(pid)[1]
    return total


def _server_state(store_url: str | None, jvm_pid: int | None) -> dict[str, Any]:
    """What the store's server is doing now (QuestDB): WAL transactions its tables'
    writers have still to apply (sequencerTxn - writerTxn, all tables, suspended ones
    apart), and the JVM's CPU over the last SETTLE_POLL_S (--questdb-pid). A ramp that
    starts while the server applies a previous run's WAL shares its cores with that."""
    state: dict[str, Any] = {}
    if store_url and store_url.startswith("questdb:"):
        import psycopg

        from ticktape.store.questdb import QuestDBAddress

        address = QuestDBAddress.from_url(store_url)
        with psycopg.connect(address.conninfo, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT writerTxn, sequencerTxn, suspended FROM wal_tables()"
            ).fetchall()
        live = [r for r in rows if not r[2]]
        state["wal_pending_txns"] = int(sum(max(0, r[1] - r[0]) for r in live))
        state["wal_pending_tables"] = sum(1 for r in live if r[1] > r[0])
        state["wal_suspended_tables"] = len(rows) - len(live)
    if jvm_pid:
        cpu0 = _proc(jvm_pid)[1]
        time.sleep(SETTLE_POLL_S)
        state["jvm_cpu_pct"] = round(100 * (_proc(jvm_pid)[1] - cpu0) / SETTLE_POLL_S)
    return state


def _settle(store_url: str | None, jvm_pid: int | None, most_s: float) -> dict[str, Any]:
    """The server's state before a ramp (``_server_state``) and, with ``most_s`` > 0,
    the wait (bounded by ``most_s``) until its WAL is applied and the JVM is idle
    (under SETTLE_IDLE_CPU_PCT): ``before``, ``after``, ``waited_s`` and ``settled``."""
    t0 = time.monotonic()
    before = _server_state(store_url, jvm_pid)
    state = before
    while True:
        settled = (
            state.get("wal_pending_txns", 0) == 0
            and state.get("jvm_cpu_pct", 0) < SETTLE_IDLE_CPU_PCT
        )
        if settled or most_s <= 0 or time.monotonic() - t0 >= most_s:
            break
        if not jvm_pid:
            time.sleep(SETTLE_POLL_S)
        state = _server_state(store_url, jvm_pid)
    return {
        "before": before,
        "after": state,
        "waited_s": round(time.monotonic() - t0, 1),
        "settled": settled,
        "most_s": most_s,
    }


def _tenths(starts: list[float]) -> list[float]:
    """The start p95 (ms) of each tenth of a level's starts, in the order they ended
    (with one client, the order they were made): whether a slow level is slow from its
    first start (the servers' start-up) or grows slow as its sessions run."""
    n = len(starts)
    if n < 10:
        return []
    return [round(percentile(starts[k * n // 10 : (k + 1) * n // 10], 95), 1) for k in range(10)]


def _connect(url: str) -> Connection:
    """A new keep-alive connection: the server closes one left idle for 5 s, and a
    level's starts keep the sampling connections idle longer than that."""
    parsed = urllib.parse.urlsplit(url)
    return Connection(parsed.hostname or "127.0.0.1", parsed.port or 80)


async def _get(url: str, path: str) -> tuple[int, bytes]:
    conn = _connect(url)
    try:
        return await conn.request("GET", path)
    finally:
        if conn.writer is not None:
            conn.writer.close()


async def _metric(url: str, name: str) -> float:
    status, body = await _get(url, "/metrics")
    if status != 200:
        raise SystemExit(f"/metrics: {status}")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _running_lag(url: str) -> tuple[int, float]:
    """(running sessions, the oldest renewal's age in s) over every running session."""
    cursor, count, lag = None, 0, 0.0
    now = utcnow()
    while True:
        path = "/api/sessions?status=running&limit=500"
        if cursor:
            path += f"&cursor={urllib.parse.quote(cursor)}"
        status, body = await _get(url, path)
        if status != 200:
            raise SystemExit(f"list running: {status} {body[:200]!r}")
        page = json.loads(body)
        for s in page["sessions"]:
            count += 1
            if s["lease_expires_at"]:
                left = (datetime.fromisoformat(s["lease_expires_at"]) - now).total_seconds()
                lag = max(lag, LEASE_S - left)
        cursor = page["next_cursor"]
        if not cursor:
            return count, lag


async def _failed(url: str) -> int:
    status, body = await _get(url, "/api/sessions?status=failed&limit=500")
    if status != 200:
        raise SystemExit(f"list failed: {status}")
    failed = json.loads(body)["sessions"]
    if failed:  # say why, while the servers still run: the reasons, most common first
        reasons = Counter(str(s.get("reason")) for s in failed)
        print(f"failed sessions by reason: {dict(reasons.most_common(5))}", flush=True)
    return len(failed)


async def _metrics(url: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sums of some of an instance's metrics, from one ``/metrics`` request."""
    status, body = await _get(url, "/metrics")
    if status != 200:
        raise SystemExit(f"/metrics: {status}")
    totals = dict.fromkeys(names, 0.0)
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


_RENEW_FAILURES = "ticktape_lease_renew_failures_total"
_RUNNERS = "ticktape_local_runners"


async def _hold(
    urls: list[str], level: int, hold_s: float, list_every_s: float, t0: float
) -> tuple[float, int, float, int, int]:
    """Hold a level for ``hold_s`` from ``t0``. Every ``SAMPLE_S``, one ``/metrics`` of each
    instance: its renewal failures and its live runners — their sum must stay ``level``
    (a session that failed, for any reason, has no runner left); no store query. Every
    ``list_every_s``, at the end, and as soon as runners are missing: every running
    session's lease (the full listing, on the first instance) and the failed sessions.
    Stops early on a failure or a heartbeat lag past lease/4. Returns (oldest renewal
    age seen in s, failed, renewal failures, running at the last listing, listings)."""
    worst_age, failed, renew_failures, running, listed = 0.0, 0, 0.0, 0, 0
    next_list = t0 + list_every_s
    while True:
        now = time.monotonic()
        done = now - t0 >= hold_s
        sampled = [await _metrics(u, (_RENEW_FAILURES, _RUNNERS)) for u in urls]
        renew_failures = sum(m[_RENEW_FAILURES] for m in sampled)
        runners = round(sum(m[_RUNNERS] for m in sampled))
        if done or now >= next_list or runners < level:
            running, age = await _running_lag(urls[0])
            worst_age, listed = max(worst_age, age), listed + 1
            failed = await _failed(urls[0])
            next_list = time.monotonic() + list_every_s
        if runners < level and not failed and running < level:
            # not failed, not running either (stopping, or reaped but not yet failed)
            print(f"{level - running} of {level} sessions are not running", flush=True)
            failed = level - running
        if done or failed or renew_failures or worst_age - HEARTBEAT_S > LEASE_S / 4:
            return worst_age, failed, renew_failures, running, listed
        await asyncio.sleep(min(SAMPLE_S, max(0.0, t0 + hold_s - time.monotonic())))


def _polls(list_every_s: float) -> str:
    return (
        f"every {SAMPLE_S:g} s: each instance's /metrics (renewal failures, live runners: "
        f"their sum must equal the level); every {list_every_s:g} s, at the end of each hold "
        "and when runners are missing: GET /api/sessions?status=running (all pages: every "
        "running session's lease) and GET /api/sessions?status=failed"
    )


class _Probe:
    """A trivial request (``GET`` of ``PROBE_PATH``, a route that does not exist: the app
    answers 404 with no store, no session and no schema) to each instance in turn every
    ``PROBE_EVERY_S``, one at a time: its latency is how long a request waits for the
    instance's event loop (the driver's and the writer's turns, the other requests), the
    part of a start's latency that is not the store's."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.latencies: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conns = [_connect(u) for u in self.urls]
        try:
            k = 0
            while True:
                i = k % len(conns)
                k += 1
                t0 = time.perf_counter()
                try:
                    status, _ = await conns[i].request("GET", PROBE_PATH)
                except Exception:  # the server closed it (idle): a new one next time
                    conns[i] = _connect(self.urls[i])
                    continue
                if status == 404:
                    self.latencies.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(PROBE_EVERY_S)
        finally:
            for conn in conns:
                if conn.writer is not None:
                    conn.writer.close()

    def start(self) -> None:
        self.latencies = []
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> dict[str, float]:
        """Stop probing: the latencies' p50, p95 and max (ms) since :meth:`start`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._task
        got = sorted(self.latencies) or [0.0]
        return {
            "p50_ms": round(percentile(got, 50), 1),
            "p95_ms": round(percentile(got, 95), 1),
            "max_ms": round(got[-1], 1),
            "n": len(self.latencies),
        }


async def _add(
    urls: list[str], count: int, clients: int, offset: int
) -> tuple[list[float], list[str]]:
    """Start ``count`` sessions round-robin over ``urls``: each start's latency (ms), and
    the refusals (status and body), after which no more starts are tried."""
    latencies: list[float] = []
    refused: list[str] = []
    queue = list(range(offset, offset + count))

    async def client(k: int) -> None:
        while queue and not refused:
            n = queue.pop()
            conn = _connect(urls[n % len(urls)])  # new each time: a slow level idles them
            t0 = time.perf_counter()
            status, body = await conn.request("POST", "/api/sessions", json.dumps(START).encode())
            latencies.append((time.perf_counter() - t0) * 1000)
            if conn.writer is not None:
                conn.writer.close()
            if status != 201:
                refused.append(f"{status} {body[:300]!r}")

    await asyncio.gather(*(client(k) for k in range(clients)))
    return latencies, refused


async def ramp(
    servers: list[ServerProcess],
    step: int,
    most: int,
    hold_s: float,
    clients: int,
    start_p95_limit_ms: float = 100.0,
    jvm_pid: int | None = None,
    final_hold_s: float | None = None,
    list_every_s: float = LIST_EVERY_S,
) -> dict[str, Any]:
    urls = [s.url for s in servers]
    pids = [s.proc.pid for s in servers if s.proc is not None]
    levels: list[dict[str, Any]] = []

    def table_busy() -> int:
        """QuestDB's "table busy" answers so far (--questdb-pid: lines of the JVM's log,
        its stdout as ``ticktape questdb start`` redirects it): the instances' group
        commits meeting on the session log's single writer; 0 without the pid."""
        try:
            with open(f"/proc/{jvm_pid}/fd/1", "rb") as log:
                return sum(line.count(b"table busy") for line in log)
        except (OSError, TypeError):
            return 0

    held = 0
    stopped_by = f"reached --max {most}"
    level = 0
    while level < most:
        add = min(step, most - level)
        probe = _Probe(urls)
        probe.start()
        busy0 = table_busy()
        own = [*pids, jvm_pid] if jvm_pid else list(pids)
        threads0 = _jvm_threads_s(jvm_pid)
        machine0, own0, bench_cpu0 = machine_busy_s(), _own_cpu_s(own), time.process_time()
        load0, began = os.getloadavg()[0], time.monotonic()
        starts, refused = await _add(urls, add, clients, level)
        starting_s = max(time.monotonic() - began, 0.001)
        own_s = _own_cpu_s(own) - own0 + time.process_time() - bench_cpu0
        busy1_s, steal1_s = machine_busy_s()
        threads1 = _jvm_threads_s(jvm_pid)
        # the cores during the starts: this run's (servers, JVM, bench) and the rest's
        machine = {
            "starting_s": round(starting_s, 1),
            "load_1m": [round(load0, 1), round(os.getloadavg()[0], 1)],
            "own_cpu_pct": round(100 * own_s / starting_s),
            "others_cpu_pct": round(100 * (busy1_s - machine0[0] - own_s) / starting_s),
            "steal_pct": round(100 * (steal1_s - machine0[1]) / starting_s),
        }
        busy1 = table_busy()
        probe_starts = await probe.stop()
        level += add
        start_p95 = percentile(starts, 95)
        if refused:  # the level never formed: say why, while the servers still run
            stopped_by = f"at {level} sessions: a start was refused: {refused[0]}"
            try:
                failed = await _failed(urls[0])
            except SystemExit:  # the listing refused too (the store is failing)
                failed = -1
            print(f"ramp {stopped_by} ({len(starts)} starts tried, {failed} failed)", flush=True)
            levels.append({"sessions": level, "start_refused": refused[0], "failed": failed})
            break
        before = [_proc(pid) for pid in pids]
        jvm0 = _proc(jvm_pid) if jvm_pid else (0.0, 0.0)
        threads2 = _jvm_threads_s(jvm_pid)
        cpu_t0 = time.monotonic()  # the CPU figures' window: from these samples to the next
        txn0 = _wal_txns(servers[0].store_url)
        switches0 = [_switches(pid) for pid in pids]
        ticks0 = sum([await _metric(u, "ticktape_ticks_written_total") for u in urls])
        fed0 = sum([await _metric(u, "ticktape_feed_rows_received_total") for u in urls])
        t0 = time.monotonic()
        # The oldest renewal's age includes the heartbeat interval itself (a renewal
        # due every 2 s is up to 2 s old when on time); the heartbeat's *lag* is how
        # far past that it is: age - interval. Both are reported.
        bench0 = time.process_time()
        last = level >= most
        hold = final_hold_s if last and final_hold_s is not None else hold_s
        probe.start()
        worst_age, failed, renew_failures, running, listed = await _hold(
            urls, level, hold, list_every_s, t0
        )
        probe_hold = await probe.stop()
        busy2 = table_busy()
        worst_lag = max(0.0, worst_age - HEARTBEAT_S)
        elapsed = time.monotonic() - t0
        bench_s = time.process_time() - bench0
        ticks1 = sum([await _metric(u, "ticktape_ticks_written_total") for u in urls])
        fed1 = sum([await _metric(u, "ticktape_feed_rows_received_total") for u in urls])
        after = [_proc(pid) for pid in pids]
        jvm1 = _proc(jvm_pid) if jvm_pid else (0.0, 0.0)
        threads3 = _jvm_threads_s(jvm_pid)
        # the hold plus the /metrics reads around it (seconds on loaded instances): the
        # CPU percentages divide by this window, not by the hold alone (until stop 23
        # they did, and read high: 3 instances and the JVM summed over 200 % on 2 cores)
        cpu_window = max(time.monotonic() - cpu_t0, 0.001)
        txn1 = _wal_txns(servers[0].store_url)
        switches1 = [_switches(pid) for pid in pids]
        cpu_s = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
        sys_s = sum(a[1] - b[1] for a, b in zip(switches1, switches0, strict=True))
        switched = sum(a[0] - b[0] for a, b in zip(switches1, switches0, strict=True))
        stored = ticks1 - ticks0
        row = {
            "sessions": level,
            "running": running,
            "held_s": round(elapsed, 1),
            "start_p95_ms": round(start_p95, 1),
            "start_p50_ms": round(percentile(starts, 50), 1),
            "start_p95_by_tenth_ms": _tenths(starts),
            "machine_starts": machine,
            # a trivial request's latency (``_Probe``) while the level's sessions start,
            # and while it is held: the waits for the instances' event loops
            "probe_starts": probe_starts,
            "probe_hold": probe_hold,
            "renewal_age_max_s": round(worst_age, 2),
            "heartbeat_lag_max_s": round(max(0.0, worst_age - HEARTBEAT_S), 2),
            "failed": failed,
            "renew_failures": renew_failures,
            "running_lists": listed,  # full listings of the running sessions during the hold
            "ticks_per_s": round(stored / max(elapsed, 0.001)),
            "fed_per_s": round((fed1 - fed0) / max(elapsed, 0.001)),  # what the feeds produced
            # CPU of the server processes (all instances), robust on a shared machine:
            # per second of one running session, and per stored tick
            "cpu_ms_per_session_s": round(1000 * cpu_s / max(level * elapsed, 0.001), 3),
            "cpu_us_per_tick": round(1e6 * cpu_s / max(stored, 1), 1),
            # per tick the feeds produced: the same figure when the store keeps up; when it
            # does not, CPU per stored tick counts the feeding of what waits in buffers
            "cpu_us_per_fed_tick": round(1e6 * cpu_s / max(fed1 - fed0, 1), 1),
            # wake-ups: context switches of the servers' threads per second, and the
            # kernel's share of their CPU (futex hand-offs between the loop and the writer)
            "switches_per_s": round(switched / max(elapsed, 0.001)),
            "sys_share": round(sys_s / max(cpu_s, 0.001), 3),
            "rss_start_mib": [round(b[0]) for b in before],
            # fed but not stored yet, at the end of the hold (all instances): what the
            # sessions' buffers hold, the first suspect when RSS grows
            "backlog_rows": round(fed1 - ticks1),
            "rss_mib": [round(a[0]) for a in after],
            "rss_growth_mib": [round(a[0] - b[0]) for a, b in zip(after, before, strict=True)],
            "cpu_pct": [
                round(100 * (a[1] - b[1]) / cpu_window) for a, b in zip(after, before, strict=True)
            ],
            # this benchmark's own CPU (its polling and sampling) on the same cores
            "bench_cpu_pct": round(100 * bench_s / max(elapsed, 0.001), 1),
        }
        if txn1:
            row["wal_txn_per_s"] = round((txn1 - txn0) / max(elapsed, 0.001), 1)
            row["ticks_per_wal_txn"] = round(stored / max(txn1 - txn0, 1))
        if jvm_pid:
            # the QuestDB server's share (--questdb-pid): the instances' figures above
            # leave it out, and on one machine both draw on the same cores
            jvm_s = jvm1[1] - jvm0[1]
            row["jvm_cpu_pct"] = round(100 * jvm_s / cpu_window)
            row["jvm_cpu_us_per_tick"] = round(1e6 * jvm_s / max(stored, 1), 1)
            row["total_cpu_us_per_tick"] = round(1e6 * (cpu_s + jvm_s) / max(stored, 1), 1)
            row["jvm_rss_mib"] = round(jvm1[0])
            # where the JVM's CPU went, by thread group (JIT compilers, GC, QuestDB's
            # pools): seconds during the starts, microseconds per stored tick in the hold
            row["jvm_threads_starts_s"] = _jvm_split(threads0, threads1)
            row["jvm_threads_hold_us_per_tick"] = {
                g: round(1e6 * v / max(stored, 1), 2)
                for g, v in _jvm_split(threads2, threads3).items()
            }
            # per start: load-independent enough to compare codes on a shared machine
            row["table_busy_starts"] = busy1 - busy0
            row["table_busy_per_start"] = round((busy1 - busy0) / max(add, 1), 3)
            row["table_busy_hold"] = busy2 - busy1
        levels.append(row)
        print(f"ramp {json.dumps(row)}", flush=True)
        broke = [
            why
            for why, bad in (
                (f"{failed} sessions failed", failed > 0),
                (f"{renew_failures:g} lease-renewal failures", renew_failures > 0),
                (
                    f"start p95 {start_p95:.0f} ms > {start_p95_limit_ms:g} ms",
                    start_p95 > start_p95_limit_ms,
                ),
                (f"heartbeat lag {worst_lag:.1f} s > lease/4", worst_lag > LEASE_S / 4),
            )
            if bad
        ]
        if broke:
            stopped_by = f"at {level} sessions: " + "; ".join(broke)
            break
        held = level
    return {
        "held": held,
        "stopped_by": stopped_by,
        "hold_s": hold_s,
        "final_hold_s": final_hold_s,
        "start_p95_limit_ms": start_p95_limit_ms,
        "polls": _polls(list_every_s),
        "levels": levels,
    }


def _ramp_once(
    args: argparse.Namespace, name: str, tmp: str, src: str | None, label: str = "this"
) -> dict[str, Any]:
    """One ramp on fresh servers (``src``: serve another tree's ``ticktape``)."""
    store_url = store_url_for(name, Path(tmp), args.questdb_url)
    if name == "sqlite":
        store_url = f"sqlite:///{tmp}/bench-ramp-{uuid.uuid4().hex[:8]}.db"
    elif name == "questdb":
        # tables of their own: a previous run's sessions, their servers gone, would
        # be reaped as owner_lost by this run's instances and counted as its failures
        store_url = with_prefix(store_url, f"ramp{uuid.uuid4().hex[:8]}_")
    env = env_for(src, {**RAMP_ENV, "TICKTAPE_LOG_LEVEL": args.log_level})
    if args.shutdown_grace_s is not None:
        env["TICKTAPE_SHUTDOWN_GRACE_S"] = str(args.shutdown_grace_s)
    if args.mem_every_s > 0:  # bench/memdiag's sitecustomize samples each server
        paths = [env.get("PYTHONPATH") or os.environ.get("PYTHONPATH"), str(MEMDIAG)]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env["BENCH_MEM_DIR"] = str(Path(tmp) / f"mem-{label}")
        env["BENCH_MEM_EVERY_S"] = str(args.mem_every_s)
    servers = [ServerProcess(store_url, Path(tmp), env=env) for _ in range(args.instances)]
    # the server's state as the ramp begins (and, with --settle-s, the wait for it to be
    # idle): a previous run's WAL still being applied shares the cores with this ramp
    settle = _settle(store_url, args.questdb_pid, args.settle_s)
    print(f"settle {json.dumps(settle)}", flush=True)
    try:
        for server in servers:
            server.start()
        got = asyncio.run(
            ramp(
                servers,
                args.step,
                args.max,
                args.hold_s,
                args.clients,
                args.start_p95_limit_ms,
                args.questdb_pid,
                args.final_hold_s,
                args.list_every_s,
            )
        )
        got["settle"] = settle
        got["shutdown"] = _shutdown(servers)
        print(f"shutdown {json.dumps(got['shutdown'])}", flush=True)
        return got
    finally:
        for server in servers:
            server.stop()


def _shutdown(servers: list[ServerProcess]) -> dict[str, Any]:
    """SIGTERM every instance at once, as a deploy does, with all its sessions running:
    how long each takes to exit and what its log says meanwhile — runners cancelled
    past the grace period (``did not stop within``) and other errors."""
    offsets = [s.log_path.stat().st_size if s.log_path.exists() else 0 for s in servers]
    began = time.monotonic()
    for server in servers:
        server.signal(signal.SIGTERM)
    exits: list[float | None] = []
    for server in servers:
        assert server.proc is not None
        try:
            server.proc.wait(max(0.0, began + SHUTDOWN_WAIT_S - time.monotonic()))
            exits.append(round(time.monotonic() - began, 2))
        except subprocess.TimeoutExpired:
            exits.append(None)  # still running: the finally's stop() kills it
    cancelled, errors = 0, 0
    for server, offset in zip(servers, offsets, strict=True):
        with server.log_path.open("rb") as log:
            log.seek(offset)
            for line in log.read().decode(errors="replace").splitlines():
                cancelled += "did not stop within" in line
                errors += " ERROR " in line
    return {"exit_s": exits, "runners_cancelled": cancelled, "error_lines": errors}


def main_ramp(args: argparse.Namespace) -> None:
    codes = code_trees(args.code)
    results: dict[str, Any] = {}
    kept = contextlib.nullcontext(args.dir) if args.dir else None
    with kept or tempfile.TemporaryDirectory() as tmp:
        if args.dir:
            Path(tmp).mkdir(parents=True, exist_ok=True)
            print(f"store and server logs kept in {tmp}", flush=True)
        for name in args.stores.split(","):
            # with --code, the codes' ramps alternate, round after round, on one store
            for r in range(args.rounds):
                for label, src in codes:
                    got = _ramp_once(args, name, tmp, src, label)
                    print(
                        f"{name:8s} {label} round {r + 1}, {args.instances} instance(s): "
                        f"held {got['held']} sessions; stopped {got['stopped_by']}",
                        flush=True,
                    )
                    entry = {"instances": args.instances, "code": label, "round": r + 1, **got}
                    if len(codes) == 1 and args.rounds == 1:
                        results[name] = entry
                    else:
                        results.setdefault(name, []).append(entry)
    print(json.dumps({"benchmark": "capacity-ramp", "results": results}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("history", "ramp"), default="history")
    parser.add_argument("--instances", type=int, default=1, help="ramp: servers on the store")
    parser.add_argument("--step", type=int, default=100, help="ramp: sessions added per level")
    parser.add_argument("--max", type=int, default=1000, help="ramp: the last level")
    parser.add_argument("--hold-s", type=float, default=600.0, help="ramp: seconds per level")
    parser.add_argument(
        "--final-hold-s",
        type=float,
        default=None,
        help="ramp: seconds to hold the --max level (default: --hold-s), e.g. 600 there only",
    )
    parser.add_argument(
        "--list-every-s",
        type=float,
        default=LIST_EVERY_S,
        help="ramp: seconds between full listings of the running sessions (their leases)",
    )
    add_code_option(
        parser, "the servers (ramp: one store, --rounds times; history: each on its own tables)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="ramp: ramps per code")
    parser.add_argument(
        "--settle-s",
        type=float,
        default=0.0,
        help="ramp: before each ramp wait, at most this long, until the QuestDB server has "
        "applied every table's WAL and its JVM (--questdb-pid) is idle; printed with the "
        "wait (0: no wait, the state is still printed)",
    )
    parser.add_argument("--clients", type=int, default=1, help="ramp: concurrent starts")
    parser.add_argument(
        "--start-p95-limit-ms",
        type=float,
        default=100.0,
        help="ramp: a level whose start p95 is above this ends the ramp (the issue: 100)",
    )
    parser.add_argument("--stores", default="sqlite", help="comma list: sqlite,questdb")
    parser.add_argument("--questdb-url", default=None)
    parser.add_argument(
        "--questdb-pid",
        type=int,
        default=None,
        help="ramp: the QuestDB JVM's pid, to report its CPU per stored tick too",
    )
    parser.add_argument("--history", type=int, default=100_000, help="finished sessions")
    parser.add_argument("--running", type=int, default=10, help="running sessions")
    parser.add_argument("--requests", type=int, default=500, help="per read and phase")
    parser.add_argument("--seed-concurrency", type=int, default=64)
    parser.add_argument(
        "--seed",
        choices=("bulk", "contract"),
        default="bulk",
        help="history on QuestDB: the log rows in batches (bulk) or through the store contract",
    )
    parser.add_argument("--seed-batch", type=int, default=2000, help="bulk: sessions a commit")
    parser.add_argument(
        "--quiet-s",
        type=float,
        default=QUIET_S,
        help="history: after seeding, the reads are taken at once and again after this "
        "many seconds with nothing written (the target is judged on the latter)",
    )
    parser.add_argument(
        "--dir", default="", help="ramp: keep the store and server logs here (default: a temp dir)"
    )
    parser.add_argument(
        "--mem-every-s",
        type=float,
        default=0.0,
        help="ramp: every this many seconds each server writes a memory sample (RSS, "
        "CPython's and malloc's live and held memory, buffered rows) to "
        "DIR/mem-<code>/<pid>.jsonl (bench/memdiag); 0: none",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        help="ramp: the servers' log level (info: their shutdown's phases land in DIR's logs)",
    )
    parser.add_argument(
        "--shutdown-grace-s",
        type=float,
        default=None,
        help="ramp: the servers' TICKTAPE_SHUTDOWN_GRACE_S for the SIGTERM at the end "
        "(default: theirs, 20 s)",
    )
    args = parser.parse_args()
    if args.mode == "ramp":
        main_ramp(args)
        return
    main_history(args)


def _history_run(
    args: argparse.Namespace, name: str, store_url: str, src: str | None, workdir: Path
) -> dict[str, Any]:
    """One code's history run on its own tables: empty reads, the seeding, the reads at
    once and again after ``--quiet-s`` of a quiet log."""
    server = ServerProcess(
        store_url,
        workdir,
        env=env_for(
            src,
            {
                "TICKTAPE_LOG_LEVEL": "warning",
                "TICKTAPE_CREATE_RATE_PER_MIN": "100000000",
                "TICKTAPE_MAX_RUNNING_PER_STORE": "100000000",
                "TICKTAPE_MAX_RUNNING_PER_INSTANCE": "100000000",
            },
        ),
    )
    server.start()
    try:
        ids = asyncio.run(start_sessions(server.url, args.running))
        empty = asyncio.run(reads(server.url, ids, args.requests))
        print(f"  empty store      {json.dumps(empty)}", flush=True)
        if args.seed == "bulk" and name == "questdb":
            rate = asyncio.run(seed_history_bulk(store_url, args.history, args.seed_batch))
        else:
            rate = asyncio.run(seed_history(store_url, args.history, args.seed_concurrency))
        print(f"  seeded {args.history} finished sessions ({rate:.0f}/s)", flush=True)
        at_once = asyncio.run(reads(server.url, ids, args.requests))
        print(f"  at once          {json.dumps(at_once)}", flush=True)
        time.sleep(args.quiet_s)
        full = asyncio.run(reads(server.url, ids, args.requests))
        print(f"  after {args.quiet_s:g} s quiet {json.dumps(full)}", flush=True)
    finally:
        server.stop()

    def ratio(got: dict[str, Any]) -> dict[str, float]:
        return {
            read: round(got[read]["p95_ms"] / max(empty[read]["p95_ms"], 0.01), 2) for read in empty
        }

    print(
        f"  p95 ratio history/empty: after the quiet {json.dumps(ratio(full))} "
        f"(target <= 2); at once {json.dumps(ratio(at_once))}",
        flush=True,
    )
    return {
        "running": args.running,
        "history": args.history,
        "seed_per_s": round(rate, 1),
        "quiet_s": args.quiet_s,
        "empty": empty,
        "at_once": at_once,
        "with_history": full,
        "p95_ratio": ratio(full),
        "p95_ratio_at_once": ratio(at_once),
    }


def main_history(args: argparse.Namespace) -> None:
    """History mode: per store, each code (``--code``) in turn on tables of its own."""
    results: dict[str, dict[str, Any]] = {}
    codes = code_trees(args.code)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stores.split(","):
            for label, src in codes:
                print(f"{name} · code {label}", flush=True)
                tag = code_tag(label)
                if name == "sqlite":
                    store_url = f"sqlite:///{tmp}/bench-capacity-{tag}.db"
                else:
                    store_url = store_url_for(name, Path(tmp), args.questdb_url)
                    if len(codes) > 1:  # each code on tables of its own
                        store_url = with_prefix(store_url, f"cap{os.getpid()}_{tag}_")
                got = _history_run(args, name, store_url, src, Path(tmp))
                results[name if len(codes) == 1 else f"{name}/{label}"] = got
    print(json.dumps({"benchmark": "capacity-history", "results": results}))


if __name__ == "__main__":
    main()
