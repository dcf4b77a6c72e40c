"""The reconciler's per-pass read at many active sessions: ``scan_leases`` (this
stop: ids, owners and leases of the active sessions, full rows of the expired ones
only) against ``find_expired`` (the full rows of every active session, parsed).

Fills a store with ``--sessions`` running sessions owned by ``--instances`` live
instances (each covers its sessions with one instance lease), plus ``--expired``
orphans, after ``--finished`` ended sessions (a long history: on QuestDB appended in
bulk by ``append_history``; ``--pause-s`` between them, as in a store whose history is
older than its live sessions), then times each read ``--rounds`` times (``scan_leases`` twice
before timing: a backend that keeps what it read between scans is timed in its steady
state). Prints figures, a JSON line last.

    .venv/bin/python bench/reconcile_scan.py --store 'questdb://127.0.0.1:8812?ilp=http://127.0.0.1:9000&prefix=scan_' --sessions 1000
    .venv/bin/python bench/reconcile_scan.py --store 'questdb://...&prefix=scan_' --sessions 20 --finished 10000
    .venv/bin/python bench/reconcile_scan.py --store sqlite:///tmp/scan.db --sessions 3000
"""  # noqa: E501

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import timedelta

from ticktape.api.app import redact_url
from ticktape.domain import Session, SessionStatus, Stats, utcnow
from ticktape.store import Store, open_store
from ticktape.testing import draft_session, store_finished


def _session(owner: str, lease_s: float) -> Session:
    return draft_session(owner=owner, lease_expires_at=utcnow() + timedelta(seconds=lease_s))


async def _finished(store: Store, count: int, batch: int = 1000) -> None:
    """``count`` ended sessions: bulk on QuestDB (``append_history``), one by one through
    the contract elsewhere (``store_finished``)."""
    append_history = getattr(store.inner.sessions, "append_history", None)
    done = 0
    while done < count:
        sessions = [_session("gone/scan", -5.0) for _ in range(min(batch, count - done))]
        if append_history is not None:
            await append_history(
                sessions, to_status=SessionStatus.FAILED, reason="start_failed", actor="bench"
            )
        else:
            await store_finished(store, sessions, actor="bench")
        done += len(sessions)


async def main(args: argparse.Namespace) -> dict[str, object]:
    store = open_store(args.store)
    await store.open()
    try:
        owners = [f"bench-{i}/scan" for i in range(args.instances)]
        live: dict[str, list[str]] = {o: [] for o in owners}
        sem = asyncio.Semaphore(16)

        async def create(owner: str, lease_s: float) -> str:
            async with sem:
                s = await store.sessions.create_session(_session(owner, lease_s), actor="bench")
                return s.id

        started = time.perf_counter()
        await _finished(store, args.finished)
        await asyncio.sleep(args.pause_s)  # the history is older than the live sessions
        ids = await asyncio.gather(
            *(create(owners[i % len(owners)], 5.0) for i in range(args.sessions))
        )
        for i, sid in enumerate(ids):
            live[owners[i % len(owners)]].append(sid)
        await asyncio.gather(*(create("gone/scan", -5.0) for _ in range(args.expired)))
        filled_s = time.perf_counter() - started
        for owner, sids in live.items():  # one instance lease covers each owner's sessions
            await store.sessions.renew_instance(
                owner,
                lease_expires_at=utcnow() + timedelta(hours=1),
                progress={sid: Stats() for sid in sids},
            )
        for _ in range(2):
            await store.sessions.scan_leases(utcnow())
        figures: dict[str, object] = {}
        times: dict[str, list[float]] = {"scan_leases": [], "find_expired": []}
        for _ in range(args.rounds):  # alternated, so load and caches fall on both alike
            for name, took in times.items():
                t0 = time.perf_counter()
                found = await getattr(store.sessions, name)(utcnow())
                took.append(time.perf_counter() - t0)
                expired = found.expired if name == "scan_leases" else found
                assert len(expired) == args.expired, (name, len(expired))
        for name, took in times.items():
            figures[name] = {
                "p50_ms": round(statistics.median(took) * 1000, 2),
                "min_ms": round(min(took) * 1000, 2),
                "max_ms": round(max(took) * 1000, 2),
            }
            print(f"{name:>13}: {figures[name]}  ({args.rounds} rounds, {args.expired} expired)")
        return {
            "benchmark": "reconcile_scan",
            "store": redact_url(args.store),
            "active_sessions": args.sessions,
            "expired": args.expired,
            "finished": args.finished,
            "pause_s": args.pause_s,
            "instances": args.instances,
            "fill_s": round(filled_s, 1),
            **figures,
        }
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--expired", type=int, default=3)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--finished", type=int, default=0, help="ended sessions in the history")
    parser.add_argument(
        "--pause-s", type=float, default=0.0, help="wait after the history, before the rest"
    )
    parser.add_argument("--rounds", type=int, default=20)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
