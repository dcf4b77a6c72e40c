"""A reaper's seals on QuestDB: ``--sessions`` orphans sealed together, checked.

Each child process opens tables of its own (a fresh prefix), writes ``--prefill-ticks``
trade rows and as many book rows of other sessions into today's partition (a seal's
queries scan it: on empty tables they cost nothing), starts ``--sessions`` collect
sessions and writes ``--blocks`` blocks of simulated ticks for each, all acknowledged;
then seals all of them at once, as a reconciler pass does (``TickStore.seal`` without
``acknowledged``: the last send is checked), ``--repeats`` times, and reports each
group's wall time. Nothing lands meanwhile, so what is measured is the cost of the
seal's reads, not of any retry.

``--code LABEL=SRC`` (repeatable) runs the same child from another tree's ``src``; the
codes alternate round after round (``--rounds``). Last line: JSON.

    .venv/bin/python bench/seal_group.py --store 'questdb://127.0.0.1:8812?ilp=http://127.0.0.1:9000' \\
        --sessions 20 --prefill-ticks 5000000 --rounds 3 --code before=/tmp/before/src
"""  # noqa: E501

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import timedelta
from typing import Any

from codes import add_code_option, run_rounds
from shutdown import drop_tables, prefill


async def measure(url: str, sessions: int, blocks: int, repeats: int) -> dict[str, Any]:
    from ticktape.domain import SessionStatus, utcnow
    from ticktape.feeds.sim import SimExchange
    from ticktape.store import open_store
    from ticktape.testing import draft_session

    store = open_store(url)
    await store.open()
    try:
        ids = []
        for _ in range(sessions):
            created = await store.sessions.create_session(draft_session(owner="lost"), actor="b")
            running = await store.sessions.transition(
                created.id,
                expected_version=created.version,
                to_status=SessionStatus.RUNNING,
                actor="lost",
                reason="started",
                lease_expires_at=utcnow() + timedelta(seconds=600),
            )
            ids.append(running.id)
        feeds = [SimExchange(sid, ("BTC_USDT", "ETH_USDT"), rate_per_s=100) for sid in ids]
        for _ in range(blocks):
            await store.ticks.write_sessions([f.next_block() for f in feeds], owner="lost")
        await store.ticks.wait_visible(60)
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            await asyncio.gather(*(store.ticks.seal(sid) for sid in ids))
            times.append(time.perf_counter() - began)
        return {
            "group_s": [round(t, 4) for t in times],
            "median_s": round(statistics.median(times), 4),
        }
    finally:
        await store.close()


async def create_tables(url: str) -> None:
    from ticktape.store import open_store

    store = open_store(url)
    await store.open()
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="questdb://… (a prefix is added)")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--prefill-ticks", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    add_code_option(parser, "the child (store, writes, seals)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.prefill_ticks:
            asyncio.run(create_tables(args.store))  # the prefill inserts into them
            prefill(args.store, args.prefill_ticks)
        result = asyncio.run(measure(args.store, args.sessions, args.blocks, args.repeats))
        print(json.dumps(result))
        return
    child = ["--sessions", str(args.sessions), "--blocks", str(args.blocks)]
    child += ["--prefill-ticks", str(args.prefill_ticks), "--repeats", str(args.repeats)]
    results = run_rounds(args, child, script=__file__, prefix="seal", drop_tables=drop_tables)
    summary = {
        label: round(statistics.median(m for r in runs for m in r["group_s"]), 4)
        for label, runs in results.items()
    }
    print(f"median seal group (s): {summary}")
    print(json.dumps({"runs": results, "median_group_s": summary}))


if __name__ == "__main__":
    main()
