"""What the tick tables' ``session_id`` INDEX costs the writes: QuestDB's CPU per stored row.

Each round writes the same ticks twice, into tables of their own (a fresh prefix each):
once with ``session_id`` indexed (``ALTER TABLE … ADD INDEX`` before the first write) and
once as this tree makes them (no index), the order alternating round after round.
``--sessions`` running sessions, ``--blocks`` blocks of simulated ticks each
(``write_sessions``, as an instance's writer sends them), until QuestDB applied them all
(the index is built when the WAL is applied). Measured: the QuestDB process's CPU seconds
(``--questdb-pid``, /proc) and wall seconds from the first send to visible, per million
rows stored. Last line: JSON.

    flock /work/bench.lock .venv/bin/python bench/tick_index_cost.py \\
        --store 'questdb://127.0.0.1:8812?ilp=http://127.0.0.1:9000' --questdb-pid PID
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from shutdown import drop_tables

LAYOUTS = ("indexed", "plain")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one(url: str, layout: str, sessions: int, blocks: int, pid: int) -> dict[str, Any]:
    import psycopg

    from ticktape.domain import SessionStatus, utcnow
    from ticktape.feeds.sim import SimExchange
    from ticktape.store import open_store
    from ticktape.store.questdb import QuestDBAddress
    from ticktape.testing import draft_session
    from ticktape.ticks import BookBatch

    address = QuestDBAddress.from_url(url)
    store = open_store(url)
    await store.open()
    try:
        if layout == "indexed":
            with psycopg.connect(address.conninfo, autocommit=True) as conn:
                for table in ("trades", "orderbook"):
                    name = f"{address.prefix}{table}"
                    conn.execute(f"ALTER TABLE {name} ALTER COLUMN session_id ADD INDEX")
                for _ in range(600):
                    # literals: table_columns() takes no bind parameter
                    rows = conn.execute(
                        " UNION ALL ".join(
                            f"SELECT count() FROM table_columns('{address.prefix}{t}') "
                            "WHERE indexed"
                            for t in ("trades", "orderbook")
                        )
                    ).fetchall()
                    if all(int(r[0]) == 1 for r in rows):
                        break
                    await asyncio.sleep(0.05)
        ids = []
        for _ in range(sessions):
            created = await store.sessions.create_session(draft_session(owner="w"), actor="b")
            running = await store.sessions.transition(
                created.id,
                expected_version=created.version,
                to_status=SessionStatus.RUNNING,
                actor="w",
                reason="started",
                lease_expires_at=utcnow() + timedelta(seconds=600),
            )
            ids.append(running.id)
        feeds = [SimExchange(sid, ("BTC_USDT", "ETH_USDT"), rate_per_s=100) for sid in ids]
        work = [[f.next_block() for f in feeds] for _ in range(blocks)]
        rows = sum(
            len(b) * (b.depth if isinstance(b, BookBatch) else 1)
            for step in work
            for block in step
            for b in block
        )
        cpu0, wall0 = cpu_s(pid), time.perf_counter()
        for step in work:
            await store.ticks.write_sessions(step, owner="w")
        await store.ticks.wait_visible(120)
        cpu, wall = cpu_s(pid) - cpu0, time.perf_counter() - wall0
        return {
            "layout": layout,
            "rows": rows,
            "questdb_cpu_s_per_m_rows": round(cpu / rows * 1e6, 3),
            "wall_s_per_m_rows": round(wall / rows * 1e6, 3),
            "load": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="questdb://… (a prefix is added)")
    parser.add_argument("--questdb-pid", type=int, required=True)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {layout: [] for layout in LAYOUTS}
    for n in range(args.rounds):
        order = LAYOUTS if n % 2 == 0 else LAYOUTS[::-1]
        for layout in order:
            url = f"{args.store}&prefix=ix{os.getpid()}{n}{layout[0]}_"
            try:
                result = asyncio.run(one(url, layout, args.sessions, args.blocks, args.questdb_pid))
            finally:
                drop_tables(url)
            print(json.dumps(result), flush=True)
            results[layout].append(result)
    summary = {
        layout: {
            key: round(statistics.median(r[key] for r in runs), 3)
            for key in ("questdb_cpu_s_per_m_rows", "wall_s_per_m_rows")
        }
        for layout, runs in results.items()
    }
    print(f"medians: {summary}")
    print(json.dumps({"runs": results, "medians": summary}))


if __name__ == "__main__":
    main()
