"""``ticktape gc --older-than 30d [--dry-run]``: purge finished sessions past a retention.

Opens the store itself (``--store`` / ``TICKTAPE_STORE``, like ``serve``), so it runs
beside running servers: it only ever purges terminal sessions, one compare-and-set
each (``ticktape.retention``). Progress goes to stderr after each batch; the report to
stdout (``--json``: one JSON object). Errors: ``error: <message>`` on stderr, exit 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer

from ticktape.config import DEFAULT_STORE_URL, sqlite_path_from_url
from ticktape.errors import StoreUnavailable, TicktapeError


def gc(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Purge sessions that ended longer ago than this: 30d, 12h, 90m."
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be purged; change nothing.")
    ] = False,
    store: Annotated[
        str | None,
        typer.Option(
            envvar="TICKTAPE_STORE",
            show_default=DEFAULT_STORE_URL,
            help="sqlite:///path.db or questdb://host:8812?ilp=http://host:9000",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Purge finished sessions (stopped, completed, failed) that ended before a retention,
    with their history, ticks, gaps and results. Never touches a session that is not
    finished. On QuestDB, rows go with whole partitions (see docs/operations.md)."""
    try:
        report = asyncio.run(_run(store or DEFAULT_STORE_URL, older_than, dry_run, quiet))
    except TicktapeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _print(report, as_json)


async def _run(url: str, older_than: str, dry_run: bool, quiet: bool) -> Any:
    # the store and retention are loaded here, not when the CLI starts (ticktape --help)
    from ticktape.retention import GcProgress, collect_garbage, parse_retention
    from ticktape.store import open_store

    retention = parse_retention(older_than)
    if url.startswith("sqlite:") and not sqlite_path_from_url(url).exists():
        raise StoreUnavailable(f"no SQLite store at {sqlite_path_from_url(url)}")

    def progress(p: GcProgress) -> None:
        if not quiet:
            done = "found" if dry_run else f"found, {p.purged.sessions} purged"
            print(f"gc: {p.found} sessions {done}", file=sys.stderr, flush=True)

    opened = open_store(url, actor="gc")
    await opened.open()
    try:
        return await collect_garbage(opened, retention, dry_run=dry_run, progress=progress)
    finally:
        await opened.close()


def _print(report: Any, as_json: bool) -> None:
    from ticktape.retention import describe

    p = report.purged
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "dry_run": report.dry_run,
                    "cutoff": report.cutoff.isoformat(),
                    "found": len(report.sessions),
                    "found_trades": report.trades,
                    "found_orderbook": report.orderbook,
                    "sessions": [s.id for s in report.sessions],
                    "purged": {
                        "sessions": p.sessions,
                        "events": p.events,
                        "trades": p.trades,
                        "orderbook": p.orderbook,
                        "gaps": p.gaps,
                        "results": p.results,
                        "partitions": list(p.partitions),
                        "bytes": p.bytes,
                    },
                    "skipped": report.skipped,
                },
                indent=2,
            )
        )
        return
    cutoff = report.cutoff.isoformat(timespec="seconds")
    if report.dry_run:
        typer.echo(
            f"dry run: {len(report.sessions)} sessions ended before {cutoff} would be purged "
            f"({report.trades} trades, {report.orderbook} order-book snapshots by their stats); "
            "nothing was changed"
        )
        for s in report.sessions:
            ended = s.ended_at.isoformat(timespec="seconds") if s.ended_at else "-"
            typer.echo(
                f"  {s.id}  {s.kind.value:<8} {s.status.value:<9} ended {ended}  "
                f"trades {s.stats.trades}  orderbook {s.stats.orderbook}"
            )
        return
    typer.echo(f"purged {p.sessions} sessions ended before {cutoff}: {describe(p)}")
    if report.skipped:
        typer.echo(f"skipped {report.skipped} sessions (purged meanwhile by another run)")
