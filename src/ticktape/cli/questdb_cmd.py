"""``ticktape questdb start|stop|status|fetch``: a local QuestDB for the QuestDB store.

The server runs detached in its root directory (``--root``); ``stop`` and ``status``
find it from that root alone, so they work from any shell. ``start`` prints the store
URL to pass as ``--store``. Errors print ``error: <message>`` on stderr and exit 1.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from ticktape import questdb_server as qs
from ticktape.config import QUESTDB_PG_IDLE_TIMEOUT_S
from ticktape.errors import TicktapeError

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_ROOT = Path(".ticktape/questdb")

questdb_app = typer.Typer(
    help="Run a local QuestDB server (the QuestDB store's database).",
    no_args_is_help=True,
    add_completion=False,
)

Root = Annotated[
    Path,
    typer.Option("--root", envvar="TICKTAPE_QUESTDB_ROOT", help="Server directory (data, log)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _reported(func: Callable[P, R]) -> Callable[P, R]:
    """A ticktape error becomes one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except TicktapeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _port(flag: str, env: str, what: str) -> Any:  # typer.OptionInfo
    return typer.Option(flag, envvar=f"TICKTAPE_QUESTDB_{env}", min=1, max=65535, help=what)


@questdb_app.command()
@_reported
def start(
    root: Root = DEFAULT_ROOT,
    http_port: Annotated[int, _port("--http-port", "HTTP_PORT", "REST + ILP/HTTP.")] = 9000,
    pg_port: Annotated[int, _port("--pg-port", "PG_PORT", "PostgreSQL wire.")] = 8812,
    ilp_port: Annotated[int, _port("--ilp-port", "ILP_PORT", "ILP/TCP.")] = 9009,
    http_min_port: Annotated[
        int, _port("--http-min-port", "HTTP_MIN_PORT", "Health check.")
    ] = 9003,
    heap: Annotated[
        str, typer.Option("--heap", envvar="TICKTAPE_QUESTDB_HEAP", help="JVM -Xmx.")
    ] = "512m",
    pg_idle_timeout: Annotated[
        float,
        typer.Option(
            "--pg-idle-timeout-s",
            envvar="TICKTAPE_QUESTDB_PG_IDLE_TIMEOUT_S",
            min=0.1,
            help="Close a PG-wire connection silent this long (rolls back its transaction: "
            "a frozen instance frees the session log).",
        ),
    ] = QUESTDB_PG_IDLE_TIMEOUT_S,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait until healthy.")
    ] = 60.0,
) -> None:
    """Start QuestDB (fetching the pinned jar if needed) and print its store URL."""
    config = qs.QuestDBServerConfig(
        root=root,
        http_port=http_port,
        pg_port=pg_port,
        ilp_tcp_port=ilp_port,
        http_min_port=http_min_port,
        heap=heap,
        pg_idle_timeout_s=pg_idle_timeout,
    )
    handle = qs.start(config, wait_timeout_s=timeout)
    log = root / qs.LOG_FILE
    typer.echo(f"QuestDB {config.version} running (pid {handle.pid}), log: {log}", err=True)
    typer.echo(handle.store_url)


@questdb_app.command()
@_reported
def stop(
    root: Root = DEFAULT_ROOT,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds before SIGKILL.")] = 30.0,
) -> None:
    """Stop the server of --root (SIGTERM, then SIGKILL); fine if none runs."""
    typer.echo("stopped" if qs.stop(root, timeout_s=timeout) else "not running")


@questdb_app.command()
@_reported
def status(root: Root = DEFAULT_ROOT, as_json: AsJson = False) -> None:
    """Whether the server of --root runs and answers; exit code 1 when it does not run."""
    info = qs.status(root)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    elif info["running"]:
        health = "healthy" if info["healthy"] else "NOT answering"
        typer.echo(f"running (pid {info['pid']}, {health}): {info.get('store_url', '?')}")
    else:
        typer.echo(f"not running ({info['root']})")
    if not info["running"]:
        raise typer.Exit(1)


@questdb_app.command()
@_reported
def fetch(
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", envvar="TICKTAPE_QUESTDB_CACHE", help="Jar cache."),
    ] = None,
) -> None:
    """Download the pinned QuestDB jar into the cache (e.g. to warm up CI) and print its path."""
    config = qs.QuestDBServerConfig(
        root=DEFAULT_ROOT, cache_dir=cache_dir or qs.default_cache_dir()
    )
    typer.echo(qs.ensure_jar(config))
