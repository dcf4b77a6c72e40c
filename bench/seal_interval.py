"""What an interval on the designated timestamp buys a seal's count query (QuestDB).

A seal counts its sessions' rows with ``session_id IN (…)`` and no bound on ``ts``:
``session_id`` has no index, so the query reads every row of every partition of the
tick table. This fills today's partition of fresh tick tables with ``--rows`` trades
(``bench/ticksend.py``'s server-side prefill: 3,000 sessions, midnight UTC to a minute
ago, 5 trades to 3 book levels), then times, alternated ``--rounds`` times, the seal's
count query for 1,000 of those sessions as it is and with ``AND ts >= since`` for each
``--window-min`` (since = now minus that many minutes): QuestDB then finds the
interval's first row by the timestamp (rows are in time order within a partition) and
reads only the rows after it. Prints the seconds per query, JSON last.

    flock /work/bench.lock .venv/bin/python bench/seal_interval.py --store URL \\
        --rows 80000000 --window-min 20 --window-min 120
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from codes import with_prefix

IDS = [f"p{n}" for n in range(1000)]  # sessions of the prefill (``'p' || (x % 3000)``)


def _timed(conn: Any, sql: str, params: list[object]) -> tuple[float, int]:
    began = time.perf_counter()
    rows = conn.execute(sql, params).fetchall()
    return time.perf_counter() - began, sum(int(r[2]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="questdb://…")
    parser.add_argument("--rows", type=int, default=80_000_000, help="trades prefilled")
    parser.add_argument("--window-min", type=float, action="append", default=[])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import psycopg

    from shutdown import _MAKE_TABLES, drop_tables
    from ticksend import _prefill
    from ticktape.store.questdb import QuestDBAddress

    url = with_prefix(args.store, f"qsi{os.getpid()}_")
    env = {**os.environ, "PYTHONPATH": os.path.abspath("src")}
    subprocess.run([sys.executable, "-c", _MAKE_TABLES, url], env=env, check=True)
    address = QuestDBAddress.from_url(url)
    windows = args.window_min or [20.0]
    out: dict[str, Any] = {"rows": args.rows, "load_avg_1m": round(os.getloadavg()[0], 2)}
    try:
        table = f"{address.prefix}trades"
        # ``rows`` trades (and 3/5 as many book rows beside them, as a store holds)
        tables = [table, f"{address.prefix}orderbook"]
        out["prefill"] = _prefill(address.conninfo, tables, args.rows * 8 // 5)
        marks = ", ".join("%s" for _ in IDS)
        base = (
            f"SELECT session_id, tenure, count(), max(batch_seq) FROM {table} "
            f"WHERE session_id IN ({marks})"
        )
        times: dict[str, list[float]] = {"full": []}
        counted: dict[str, int] = {}
        with psycopg.connect(address.conninfo, autocommit=True) as conn:
            total = conn.execute(f"SELECT count() FROM {table}").fetchone()
            out["table_rows"] = int(total[0]) if total else 0
            for round_ in range(args.rounds):
                took, n = _timed(conn, base, list(IDS))
                times["full"].append(took)
                counted["full"] = n
                for window in windows:
                    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=window)
                    key = f"ts >= now - {window:g} min"
                    took, n = _timed(conn, base + " AND ts >= %s", [*IDS, since])
                    times.setdefault(key, []).append(took)
                    counted[key] = n
                print(
                    f"round {round_ + 1}: "
                    + json.dumps({k: round(v[-1], 3) for k, v in times.items()}),
                    flush=True,
                )
        out["median_s"] = {k: round(statistics.median(v), 3) for k, v in times.items()}
        out["rows_counted"] = counted
        full = out["median_s"]["full"]
        out["ratio_to_full"] = {k: round(v / full, 3) for k, v in out["median_s"].items()}
    finally:
        drop_tables(url)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
