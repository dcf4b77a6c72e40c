"""Whether a session the store acknowledged as created is visible to the next read at once.

Starts its own QuestDB (``--workers`` network workers; root ``--root``, deleted at the end),
then for ``--seconds``: ``--creators`` tasks each creating sessions one after another
(``create_session``, as ``SessionService.create`` does), and ``--checkers`` tasks each reading
the newest 1,500 sessions created so far (all of them acknowledged before the read began) the
way a grouped tick write's ownership check does (``_writers``: ``LATEST ON ts PARTITION BY
id`` over their ids). A session missing from that read is "unknown" to the write: its runner
stops itself and the session is reaped (docs/benchmarks.md, seal21). For the first few misses
it also counts the missing session's rows by the ``id`` symbol and by its string value
(``cast(id AS string) = …``) and polls the symbol lookup until it finds the session.

The store reads again by string every id its symbol lookup missed (``LogLookups``, vis21):
``lookups_confirmed`` is how many of those it found (QuestDB's misses, each hidden from the
caller), ``missed`` what the caller still saw as unknown. Run against an older tree
(``PYTHONPATH=/tmp/x-before/src``) it has no ``LogLookups``: ``missed`` is QuestDB's misses.

Then, with the log of every session created, ``--gets`` sequential ``get_session`` calls of
known ids and as many of unknown ids (a 404: since vis21 the unknown id is read again by
string, a scan of the whole log) — their latency. Prints the figures; last line: JSON.

    .venv/bin/python bench/log_visibility.py --root /tmp/x-qdb --workers 2 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import time
import uuid
from pathlib import Path
from typing import Any


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2),
        "mean_ms": round(1000 * statistics.fmean(ordered), 2),
    }


async def measure(
    url: str, seconds: float, creators: int, checkers: int, gets: int
) -> dict[str, Any]:
    from ticktape.errors import SessionNotFound
    from ticktape.store import open_store
    from ticktape.testing import draft_session

    store = open_store(url)
    await store.open()
    ticks = store.inner.ticks
    lookups = getattr(store.inner, "log_lookups", None)
    created: list[str] = []
    out: dict[str, Any] = {"missed": 0, "reads": 0, "cases": []}
    read_s: list[float] = []
    until = time.monotonic() + seconds

    async def count(where: str, sid: str) -> int:
        rows = await ticks._scalar_rows(
            f"SELECT count() FROM tt_session_log WHERE {where} = %s", [sid], "count rows"
        )
        return int(rows[0][0])

    async def creator() -> None:
        while time.monotonic() < until:
            created.append((await store.sessions.create_session(draft_session(), actor="b")).id)

    async def checker() -> None:
        while time.monotonic() < until:
            ids = created[-1500:]
            if not ids:
                await asyncio.sleep(0.01)
                continue
            started = time.perf_counter()
            found = await ticks._writers(ids)
            read_s.append(time.perf_counter() - started)
            out["reads"] += 1
            missing = [sid for sid in ids if sid not in found]
            out["missed"] += len(missing)
            if missing and len(out["cases"]) < 6:
                sid = missing[0]
                case: dict[str, Any] = {
                    "created_before_newest": len(ids) - 1 - ids.index(sid),
                    "rows_by_symbol": await count("id", sid),
                    "rows_by_string": await count("cast(id AS string)", sid),
                }
                polled = time.monotonic()
                for _ in range(1000):  # the server's answer is polled: ~10 s at most
                    if await count("id", sid):
                        break
                    await asyncio.sleep(0.01)
                case["visible_by_symbol_after_s"] = round(time.monotonic() - polled, 3)
                out["cases"].append(case)

    await asyncio.gather(
        *(creator() for _ in range(creators)), *(checker() for _ in range(checkers))
    )
    out["created"] = len(created)
    out["writer_reads"] = _ms(read_s)
    if lookups is not None:
        out["lookups_rechecked"] = lookups.rechecked
        out["lookups_confirmed"] = lookups.confirmed
    if gets and created:
        for name, ids in (
            ("get_known", created[:: max(1, len(created) // gets)][:gets]),
            ("get_unknown", [uuid.uuid4().hex for _ in range(gets)]),
        ):
            spent: list[float] = []
            for sid in ids:
                started = time.perf_counter()
                with contextlib.suppress(SessionNotFound):
                    await store.sessions.get_session(sid)
                spent.append(time.perf_counter() - started)
            out[name] = _ms(spent)
    await store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--workers", type=int, default=2, help="network workers")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--creators", type=int, default=100)
    parser.add_argument("--checkers", type=int, default=3)
    parser.add_argument("--gets", type=int, default=100, help="timed gets, known and unknown")
    args = parser.parse_args()

    from ticktape import questdb_server as qs

    root = Path(args.root)
    config = qs.QuestDBServerConfig.with_free_ports(root, network_workers=args.workers)
    server = qs.start(config)
    try:
        result = asyncio.run(
            measure(server.store_url, args.seconds, args.creators, args.checkers, args.gets)
        )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    result["workers"] = args.workers
    with open("/proc/loadavg") as f:
        result["load"] = f.read().split()[:3]
    for key, value in result.items():
        if key != "cases":
            print(f"{key}: {value}")
    for case in result["cases"]:
        print("case:", case)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
