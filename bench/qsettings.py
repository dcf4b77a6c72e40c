"""The managed QuestDB's settings against its CPU per tick: main's server and candidates.

Starts one managed server per variant (``base``: ``QuestDBServerConfig``'s settings as they
are; each ``--variant NAME=ITEM,ITEM...`` the same plus its items: ``key=value`` a
``server.conf`` line, ``-X...`` a JVM option), then round after round drives each in turn
(A B A B: the order alternates so a loaded machine disturbs them alike) with the grouped
ILP/HTTP load of ``bench/ticksend.py ingest``: ``--senders`` instances' senders, each
``--sessions`` sessions of the sim's default rate, one request per ``--send-every-s`` (with
``--check-owners`` each after the store's ownership query for its sessions, over PG wire),
into the product's WAL tables under a fresh prefix, dropped after. Per run it prints the
JVM's CPU per stored tick, its CPU seconds over the whole run (warm-up included) by thread
group (``bench/capacity.py``'s split: ``jit_c2``, ``shared-network``, ``shared-write``,
...), its WAL apply lag, and the visibility wait: ``--probes-per-s`` times a second, from
this process (the ingest runs in a child, so its senders do not hold this one's GIL), the
store's ``wait_visible`` (every transaction committed to the WAL tables so far applied,
polled from 1 ms doubling to 100 ms), timed. A run on a fresh JVM (round 1) pays its
warm-up; the JIT's share shows it. Last line: JSON.

    flock /work/bench.lock .venv/bin/python bench/qsettings.py --rounds 3 \\
        --variant 'c1=-XX:TieredStopAtLevel=1' --variant 'net1=shared.network.worker.count=1'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from capacity import _jvm_split, _jvm_threads_s
from ticksend import _run_child
from ticktape.questdb_server import QuestDBServerConfig, ServerHandle, free_ports, start

VISIBILITY_POLL_S = 0.001  # the store's first poll, doubling to 0.1 s


def parse_variant(text: str) -> tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]]:
    """``NAME=ITEM,ITEM``: server.conf lines (``key=value``) and JVM options (``-...``)."""
    name, _, items = text.partition("=")
    props: list[tuple[str, str]] = []
    jvm: list[str] = []
    for item in filter(None, (i.strip() for i in items.split(","))):
        if item.startswith("-"):
            jvm.append(item)
        else:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"variant {name}: {item!r} is neither key=value nor -option")
            props.append((key, value))
    return name, tuple(props), tuple(jvm)


def serve(root: Path, props: tuple[tuple[str, str], ...], jvm: tuple[str, ...]) -> ServerHandle:
    http, pg, ilp, http_min = free_ports(4)
    config = QuestDBServerConfig(
        root=root,
        http_port=http,
        pg_port=pg,
        ilp_tcp_port=ilp,
        http_min_port=http_min,
        # the sender's ownership-check connection is silent while it builds a send
        pg_idle_timeout_s=300.0,
        extra_properties=props,
        extra_jvm_options=jvm,
    )
    return start(config)


def _visible_once(conn: Any) -> float:
    """One ``wait_visible``: seconds until every WAL table applied what it had committed."""
    query = "SELECT name, writerTxn, sequencerTxn FROM wal_tables()"
    t0 = time.perf_counter()
    targets = {n: s for n, _, s in conn.execute(query).fetchall()}
    delay = VISIBILITY_POLL_S
    while True:
        state = {n: w for n, w, _ in conn.execute(query).fetchall()}
        if all(state.get(n, t) >= t for n, t in targets.items()):
            return time.perf_counter() - t0
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def probe_visibility(conninfo: str, every_s: float, seconds: float) -> list[float]:
    """``wait_visible`` timed every ``every_s`` for ``seconds`` (milliseconds)."""
    import psycopg

    waits: list[float] = []
    end = time.monotonic() + seconds
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while time.monotonic() < end:
            time.sleep(every_s)
            waits.append(1000 * _visible_once(conn))
    return waits


def one_run(server: ServerHandle, args: argparse.Namespace) -> dict[str, Any]:
    """One ingest (a child process: its sender threads do not hold this process's GIL
    against the visibility probe, which runs here) with the probe beside it."""
    argv = [
        "ingest",
        *("--questdb-url", server.store_url, "--questdb-pid", str(server.pid)),
        *("--senders", str(args.senders), "--sessions", str(args.sessions)),
        *("--seconds", str(args.seconds), "--idle-s", "0.5"),
        *("--send-every-s", str(args.send_every_s), "--warm-up-s", str(args.warm_up_s)),
        *(["--check-owners"] if args.check_owners else []),
    ]
    result: list[dict[str, Any]] = []
    threads0 = _jvm_threads_s(server.pid)
    child = threading.Thread(target=lambda: result.append(_run_child(None, argv)))
    child.start()
    try:
        time.sleep(args.warm_up_s)  # probe while the ingest is measured
        waits = probe_visibility(server.pg_conninfo, 1 / args.probes_per_s, args.seconds)
    finally:
        child.join()
    if not result:
        raise SystemExit("the ingest child failed")
    got = result[0]
    split = _jvm_split(threads0, _jvm_threads_s(server.pid))  # warm-up and drop included
    waits.sort()
    return {
        "ticks_per_s": got["ticks_per_s"],
        "jvm_us_per_tick": got["jvm_cpu_us_per_tick"],
        "jvm_cpu_pct": got["jvm_cpu_pct"],
        "wal_txn_per_s": got["wal_txn_per_s"],
        "wal_lag_txn_max": got["wal_lag_txn_max"],
        "visible_ms_p50": round(statistics.median(waits), 1) if waits else None,
        "visible_ms_p95": round(waits[int(0.95 * (len(waits) - 1))], 1) if waits else None,
        "visible_probes": len(waits),
        "jit_s": round(split.get("jit_c1", 0.0) + split.get("jit_c2", 0.0), 2),
        "threads_s": split,
        "pg_after_idle_ms": got["pg_after_idle_ms"],
        "errors": got["errors"],
        "load": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=ITEM,ITEM")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--senders", type=int, default=3, help="instances' grouped senders")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions per sender")
    parser.add_argument("--send-every-s", type=float, default=0.5, help="a sender's spacing")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured per run")
    parser.add_argument("--warm-up-s", type=float, default=5.0, help="before measuring")
    parser.add_argument(
        "--check-owners",
        action="store_true",
        help="before each send, the store's ownership query for its sessions (PG wire)",
    )
    parser.add_argument("--probes-per-s", type=float, default=4.0, help="wait_visible timed")
    args = parser.parse_args()
    variants = [("base", (), ())] + [parse_variant(v) for v in args.variant]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
    servers: dict[str, ServerHandle] = {}
    with tempfile.TemporaryDirectory(prefix="qsettings-") as tmp:
        try:
            for name, props, jvm in variants:
                servers[name] = serve(Path(tmp) / name, props, jvm)
            for r in range(args.rounds):
                order = variants if r % 2 == 0 else variants[::-1]
                for name, _, _ in order:
                    got = one_run(servers[name], args)
                    results[name].append(got)
                    print(f"round {r + 1} {name:10s} {json.dumps(got)}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    medians = {
        name: {
            k: statistics.median(g[k] for g in got if g[k] is not None)
            for k in ("jvm_us_per_tick", "visible_ms_p50", "visible_ms_p95", "ticks_per_s")
        }
        for name, got in results.items()
        if got
    }
    base = medians["base"]["jvm_us_per_tick"]
    for name, m in medians.items():
        print(f"{name:10s} median {m}; JVM us/tick {m['jvm_us_per_tick'] / base:.2f}x of base")
    print(json.dumps({"benchmark": "qsettings", "medians": medians, "rounds": results}))


if __name__ == "__main__":
    main()
