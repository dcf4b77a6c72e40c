"""What a heartbeat and a keyed start cost with a long history: ``renew_instance`` of
one instance's running sessions, ``create_session`` with a new idempotency key, and
with a key already used (the replayed request), timed after ``--finished`` ended
sessions (with keys; on QuestDB appended in bulk by ``append_history``; ``--pause-s``
after them and again after the running sessions, as in a store whose history is older
than what runs and whose sessions run for longer than a few heartbeats).

Runs the store code on ``PYTHONPATH``: to compare two trees, run it once with each
(``PYTHONPATH=/tmp/before/src``), on fresh table prefixes. Prints figures, a JSON
line last.

    .venv/bin/python bench/history_reads.py \\
        --store 'questdb://127.0.0.1:8812?ilp=http://127.0.0.1:9000&prefix=hist_' \\
        --finished 100000 --sessions 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from ticktape.api.app import redact_url
from ticktape.domain import SessionStatus, Stats, utcnow
from ticktape.store import Store, open_store
from ticktape.testing import draft_session

OWNER = "bench-1/history"


async def _finished(store: Store, count: int, batch: int = 1000) -> None:
    """``count`` ended sessions, each with an idempotency key."""
    append_history = getattr(store.inner.sessions, "append_history", None)
    done = 0
    while done < count:
        sessions = [
            draft_session(owner="gone/history", idempotency_key=uuid.uuid4().hex)
            for _ in range(min(batch, count - done))
        ]
        if append_history is not None:
            await append_history(
                sessions, to_status=SessionStatus.FAILED, reason="start_failed", actor="bench"
            )
        else:
            for s in sessions:
                created = await store.sessions.create_session(s, actor="bench")
                await store.sessions.transition(
                    created.id,
                    expected_version=created.version,
                    to_status=SessionStatus.FAILED,
                    actor="bench",
                    reason="start_failed",
                    lease_expires_at=None,
                )
        done += len(sessions)


async def _timed(rounds: int, call: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    took = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await call()
        took.append((time.perf_counter() - t0) * 1000)
    return {
        "p50_ms": round(statistics.median(took), 2),
        "p95_ms": round(sorted(took)[int(0.95 * (len(took) - 1))], 2),
        "min_ms": round(min(took), 2),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    store = open_store(args.store)
    await store.open()
    try:
        started = time.perf_counter()
        await _finished(store, args.finished)
        await asyncio.sleep(args.pause_s)  # the history is older than the running sessions
        lease = utcnow() + timedelta(hours=1)
        running = [
            await store.sessions.create_session(
                draft_session(owner=OWNER, lease_expires_at=lease), actor="bench"
            )
            for _ in range(args.sessions)
        ]
        progress = {s.id: Stats() for s in running}
        filled_s = time.perf_counter() - started
        await asyncio.sleep(args.pause_s)  # ... and the running sessions older than a heartbeat
        replayed = await store.sessions.create_session(
            draft_session(owner=OWNER, lease_expires_at=lease, idempotency_key="replayed"),
            actor="bench",
        )

        async def renew() -> None:
            owned = await store.sessions.renew_instance(
                OWNER, lease_expires_at=lease, progress=progress
            )
            assert len(owned) == args.sessions + 1, len(owned)

        async def create_new_key() -> None:
            draft = draft_session(owner="gone/history", idempotency_key=uuid.uuid4().hex)
            assert (await store.sessions.create_session(draft, actor="bench")).id == draft.id

        async def create_replayed_key() -> None:
            draft = draft_session(owner=OWNER, lease_expires_at=lease, idempotency_key="replayed")
            assert (await store.sessions.create_session(draft, actor="bench")).id == replayed.id

        for _ in range(3):  # a store that keeps what it read is timed in its steady state
            await renew()
        figures = {
            "renew_instance": await _timed(args.rounds, renew),
            "create_new_key": await _timed(args.rounds, create_new_key),
            "create_replayed_key": await _timed(args.rounds, create_replayed_key),
        }
        for name, figure in figures.items():
            print(f"{name:>20}: {figure}  ({args.rounds} rounds)")
        return {
            "benchmark": "history_reads",
            "store": redact_url(args.store),
            "finished": args.finished,
            "sessions": args.sessions,
            "pause_s": args.pause_s,
            "fill_s": round(filled_s, 1),
            **figures,
        }
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--finished", type=int, default=0, help="ended sessions in the history")
    parser.add_argument("--sessions", type=int, default=1000, help="running, one owner")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument(
        "--pause-s", type=float, default=0.0, help="wait after the history, before the rest"
    )
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
