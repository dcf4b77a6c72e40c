"""Whether a session the store acknowledged as created is visible to the next read at once.

Starts its own QuestDB (``--workers`` network workers; root ``--root``, deleted at the end),
then for ``--seconds``: ``--creators`` tasks each creating sessions one after another
(``create_session``, as ``SessionService.create`` does), and ``--checkers`` tasks each reading
the newest 1,500 sessions created so far (all of them acknowledged before the read began) the
way a grouped tick write's ownership check does (``_writers``: ``LATEST ON ts PARTITION BY
id`` over their ids). A session missing from that read is "unknown" to the write: its runner
stops itself and the session is reaped (docs/benchmarks.md, seal21). For the first few misses
it also reads the missing session alone and counts its rows (``count() WHERE id = …``).
Prints the misses, the reads, the sessions created and those first few cases. Last line: JSON.

    .venv/bin/python bench/log_visibility.py --root /tmp/x-qdb --workers 2 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any


async def measure(url: str, seconds: float, creators: int, checkers: int) -> dict[str, Any]:
    from ticktape.store import open_store
    from ticktape.testing import draft_session

    store = open_store(url)
    await store.open()
    ticks = store.inner.ticks
    created: list[str] = []
    out: dict[str, Any] = {"missed": 0, "reads": 0, "cases": []}
    until = time.monotonic() + seconds

    async def creator() -> None:
        while time.monotonic() < until:
            created.append((await store.sessions.create_session(draft_session(), actor="b")).id)

    async def checker() -> None:
        while time.monotonic() < until:
            ids = created[-1500:]
            if not ids:
                await asyncio.sleep(0.01)
                continue
            found = await ticks._writers(ids)
            out["reads"] += 1
            missing = [sid for sid in ids if sid not in found]
            out["missed"] += len(missing)
            if missing and len(out["cases"]) < 6:
                sid = missing[0]
                alone = sid in await ticks._writers([sid])
                rows = await ticks._scalar_rows(
                    "SELECT count() FROM tt_session_log WHERE id = %s", [sid], "count rows"
                )
                out["cases"].append(
                    {
                        "created_before_newest": len(ids) - 1 - ids.index(sid),
                        "found_alone": alone,
                        "rows": int(rows[0][0]),
                    }
                )

    await asyncio.gather(
        *(creator() for _ in range(creators)), *(checker() for _ in range(checkers))
    )
    await store.close()
    out["created"] = len(created)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--workers", type=int, default=2, help="network workers")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--creators", type=int, default=100)
    parser.add_argument("--checkers", type=int, default=3)
    args = parser.parse_args()

    from ticktape import questdb_server as qs

    root = Path(args.root)
    config = qs.QuestDBServerConfig.with_free_ports(root, network_workers=args.workers)
    server = qs.start(config)
    try:
        result = asyncio.run(measure(server.store_url, args.seconds, args.creators, args.checkers))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    result["workers"] = args.workers
    print(json.dumps(result))


if __name__ == "__main__":
    main()
