"""``ticktape``: serve the API, or act as its client.

Every client command talks HTTP to a server (``--url``, ``TICKTAPE_URL``), so
what the CLI shows is what the service says. Errors print one line —
``error: <message> (caused by: ...)`` — on stderr and exit 1; usage errors exit
2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
import uvicorn
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from ticktape.api.models import SessionOut
from ticktape.cli.client import TicktapeClient
from ticktape.cli.gc_cmd import gc
from ticktape.cli.questdb_cmd import questdb_app
from ticktape.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_STORE_URL,
    DEFAULT_URL,
    DEPRECATED_ENV,
    HEARTBEAT_INTERVAL_S,
    LEASE_S,
    REQUEST_SHUTDOWN_TIMEOUT_S,
    STOP_WAIT_TIMEOUT_S,
    Settings,
)
from ticktape.errors import TicktapeError
from ticktape.redact import redact_url
from ticktape.store import Store, check_reachable, open_store

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="ticktape",
    help="Sessions over crypto market data, with one source of truth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold the API token
)
start_app = typer.Typer(help="Start a session.", no_args_is_help=True)
app.add_typer(start_app, name="start")
app.add_typer(questdb_app, name="questdb", help="Run a local QuestDB server for ticktape.")
user_app = typer.Typer(help="Users who may sign in from a browser.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.command("gc")(gc)

PIPED_WIDTH = 160  # columns for tables when stdout is not a terminal (pipes, files)

out = Console(highlight=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)


class _Flags:
    debug = False


def one_line(exc: BaseException) -> str:
    """The message and its cause chain, on one line."""
    causes: list[str] = []
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while cause is not None and len(causes) < 5:
        text = str(cause).strip() or type(cause).__name__
        if text not in causes and text != str(exc):
            causes.append(text)
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    message = str(exc) or type(exc).__name__
    return f"{message} (caused by: {'; '.join(causes)})" if causes else message


def reported(func: Callable[P, R]) -> Callable[P, R]:
    """Run a command; a ticktape error becomes ``error: ...`` on stderr and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except TicktapeError as exc:
            if _Flags.debug:
                raise
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(1) from None

    return wrapper


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", envvar="TICKTAPE_DEBUG", help="Show tracebacks on errors.")
    ] = False,
) -> None:
    _Flags.debug = debug


# ---------------------------------------------------------------------------- options

Url = Annotated[str, typer.Option("--url", envvar="TICKTAPE_URL", help="Server to talk to.")]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="TICKTAPE_API_TOKEN",
        show_default=False,
        help="Bearer token, if the server requires one.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer.")]


def split_csv(values: list[str] | str | None) -> list[str]:
    items = [values] if isinstance(values, str) else (values or [])
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def print_json(data: BaseModel | list[Any]) -> None:
    if isinstance(data, BaseModel):
        payload: Any = data.model_dump(mode="json")
    else:
        payload = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    typer.echo(json.dumps(payload, indent=2))


def client_for(url: str, token: str | None) -> TicktapeClient:
    return TicktapeClient(url, token=token)


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------------- serve


@app.command()
@reported
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            envvar="TICKTAPE_HOST", show_default=DEFAULT_HOST, help="Interface to listen on."
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option(envvar="TICKTAPE_PORT", show_default=str(DEFAULT_PORT))
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            envvar="TICKTAPE_STORE",
            show_default=DEFAULT_STORE_URL,
            help="sqlite:///path.db, questdb://host:8812?ilp=http://host:9000 or memory://",
        ),
    ] = None,
    instance: Annotated[
        str | None,
        typer.Option(
            envvar="TICKTAPE_INSTANCE",
            show_default="<hostname>:<port>",
            help="Name of this instance; keep it stable across restarts.",
        ),
    ] = None,
    lease_s: Annotated[
        float | None,
        typer.Option(
            "--lease-s",
            envvar="TICKTAPE_LEASE_S",
            show_default=str(LEASE_S),
            help="Seconds an unrenewed lease stays valid.",
        ),
    ] = None,
    heartbeat_s: Annotated[
        float | None,
        typer.Option(
            "--heartbeat-s",
            envvar="TICKTAPE_HEARTBEAT_S",
            show_default=str(HEARTBEAT_INTERVAL_S),
            help="Seconds between lease renewals.",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            envvar="TICKTAPE_LOG_LEVEL",
            show_default="info",
            help="critical, error, warning, info or debug.",
        ),
    ] = None,
    store_wait_s: Annotated[
        float,
        typer.Option(
            "--store-wait-s",
            envvar="TICKTAPE_STORE_WAIT_S",
            help="Seconds to keep retrying an unreachable store at start-up (0: fail at once).",
        ),
    ] = 0.0,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            envvar="TICKTAPE_WORKERS",
            min=1,
            help="Server processes on this port and store, each a full instance "
            "(<instance>-w<i>); they cooperate through the store.",
        ),
    ] = 1,
) -> None:
    """Run the ticktape server (API, dashboard, runners)."""
    settings = Settings.from_env(
        host=host,
        port=port,
        store_url=store,
        instance_name=instance,
        lease_s=lease_s,
        heartbeat_interval_s=heartbeat_s,
        log_level=log_level.lower() if log_level else None,
    )
    if workers > 1:
        from ticktape.cli.workers import run_workers

        raise typer.Exit(run_workers(settings, workers, store_wait_s=store_wait_s))
    run_server(settings, store_wait_s=store_wait_s)


def run_server(
    settings: Settings,
    *,
    store_wait_s: float = 0.0,
    runtime_store: Callable[[Store], Store] | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """What ``ticktape serve`` runs once its settings are read (``runtime_store``: see
    :func:`ticktape.api.app.create_app`; ``ticktape.testing.faulty_server`` passes one).

    ``sockets``: serve on these, already listening (a worker of ``--workers``), instead
    of binding ``settings.host:port``."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for old in settings.deprecated_env:
        logging.getLogger("ticktape").warning(
            "%s is deprecated: set %s instead", old, DEPRECATED_ENV[old]
        )
    check_store(settings, store_wait_s)
    from ticktape.api import create_app  # the server, only when serving

    config = uvicorn.Config(
        create_app(settings, runtime_store=runtime_store),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        # SIGTERM: requests still open (a long stop?wait=true) get this long, then the
        # lifespan shutdown (bounded by SHUTDOWN_TIMEOUT_S) runs: the server always exits.
        timeout_graceful_shutdown=int(REQUEST_SHUTDOWN_TIMEOUT_S),
    )
    try:
        _AnnouncingServer(config, settings).run(sockets=sockets)
    except SystemExit as exc:  # uvicorn exits so on a failed start, after logging why
        if exc.code not in (0, None):
            typer.echo("error: the server did not start (see the log above)", err=True)
            raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl-C after its graceful shutdown has finished


def check_store(settings: Settings, store_wait_s: float) -> None:
    """A mistyped store URL, or an unreachable store, is a one-line error (or a wait),
    not a uvicorn traceback."""
    open_store(settings.store_url)

    def waiting(exc: Exception, left_s: float) -> None:
        typer.echo(f"waiting for the store ({left_s:.0f}s left): {exc}", err=True)

    asyncio.run(check_reachable(settings.store_url, wait_s=store_wait_s, on_retry=waiting))


class _AnnouncingServer(uvicorn.Server):
    """Prints where it listens once it really does (the port is bound, the store open)."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self._settings = settings

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so a server that
        # stopped every session cleanly would still die "of the signal" (exit -15).
        # A clean shutdown exits 0 instead.
        with super().capture_signals():
            yield
            self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Push streams never finish by themselves: end them so their connections close.
        from fastapi import FastAPI

        from ticktape.api.push import close_feed

        if isinstance(self.config.app, FastAPI):
            await close_feed(self.config.app)
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        s = self._settings
        if s.python_gc_tuning and not self.should_exit:
            from ticktape.api.heap import tune_collector

            tune_collector()  # the start-up heap is in place: freeze it (docs/operations.md)
        base = f"http://{s.host}:{s.port}"
        from ticktape.api.auth import load_users

        users = len(load_users(s.users_file))
        guards = [
            *(["bearer token"] if s.api_token else []),
            *([f"browser sign-in ({users} users)"] if users else []),
        ]
        scope = "every request but /health and /ready" if s.protect_reads else "changes"
        access = (
            f"{scope} need: {' or '.join(guards)}"
            if guards
            else "changes are OPEN to anyone who can reach this address "
            "(no TICKTAPE_API_TOKEN, no users)"
        )
        out.print(
            f"ticktape listening on [bold]{base}[/] — dashboard {base}/, API docs "
            f"{base}/docs\ninstance {s.instance}, store {redact_url(s.store_url)}\n{access}"
        )


# ---------------------------------------------------------------------------- user


@user_app.command("add")
@reported
def user_add(
    username: Annotated[str, typer.Argument(help="The name to sign in with.")],
    users_file: Annotated[
        Path,
        typer.Option(
            envvar="TICKTAPE_USERS_FILE",
            help="The users file `ticktape serve` reads (created if missing).",
        ),
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Add a user (or set a user's password); passwords are stored as Argon2id hashes."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    from ticktape.api.auth import add_user  # Argon2: loaded only for this command

    add_user(users_file, username, password)
    typer.echo(f"user {username.strip()!r} saved in {users_file}; restart the server to use it")


# ---------------------------------------------------------------------------- start

# options more than one kind of session takes
Duration = Annotated[str | None, typer.Option(help="e.g. 30s, 5m, 2h; default: until stopped.")]
Params = Annotated[
    list[str] | None, typer.Option("--param", "-p", help="Strategy parameter name=value.")
]


def _start(
    kind: str,
    symbols: list[str] | None,
    url: str,
    token: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Create a session of ``kind`` (``options`` as ``TicktapeClient.create_session`` takes
    them; None: the server's default) and print its id, or with ``--json`` the session."""
    with client_for(url, token) as client:
        session = client.create_session(kind, symbols, **options)
    if as_json:
        print_json(session)
    else:
        typer.echo(session.id)


def _csv_or_none(values: str | None) -> list[str] | None:
    """A comma-separated option, or None when it was not given (the server decides)."""
    return None if values is None else split_csv(values)


@start_app.command("collect")
@reported
def start_collect(
    symbols: Annotated[
        str,
        typer.Option(
            "--symbols",
            "-s",
            help="Comma-separated, in the exchange's form: BTC_USDT,ETH_USDT (sim, mexc) "
            "or BTCUSDT,ETHUSDT (binance).",
        ),
    ],
    exchange: Annotated[
        str | None,
        typer.Option(
            "--exchange",
            "-x",
            help="sim (default), binance (Binance USD-M futures) or mexc (MEXC futures).",
        ),
    ] = None,
    duration: Duration = None,
    data_types: Annotated[
        str | None, typer.Option("--data-types", help="trades,orderbook (default both).")
    ] = None,
    depth: Annotated[int | None, typer.Option("--depth", help="Order-book levels.")] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate", help="Simulated trades per second per symbol; 0 = as fast as possible."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the simulated exchange.")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key", help="Repeat the command safely: same key, same session."
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Start a collect session and print its id."""
    _start(
        "collect",
        split_csv(symbols),
        url,
        token,
        as_json,
        idempotency_key=idempotency_key,
        exchange=exchange,
        duration=duration,
        data_types=_csv_or_none(data_types),
        book_depth=depth,
        rate_per_s=rate,
        seed=seed,
    )


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """``["fast=10", "name=x"]`` → ``{"fast": 10, "name": "x"}``: a value is JSON if it
    parses as JSON, else a string."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--param {pair!r}: use name=value", param_hint="--param")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


@start_app.command("backtest")
@reported
def start_backtest(
    source: Annotated[str, typer.Option("--source", help="The finished session to replay.")],
    strategy: Annotated[
        str, typer.Option("--strategy", help="A registered strategy (ticktape strategies).")
    ],
    param: Params = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", "-s", help="A subset of the source's symbols.")
    ] = None,
    speed: Annotated[
        float | None, typer.Option(help="0 = as fast as possible (default), N = N x real time.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the strategy's random numbers.")] = None,
    initial_cash: Annotated[float | None, typer.Option("--initial-cash")] = None,
    latency_ms: Annotated[float | None, typer.Option("--latency-ms")] = None,
    on_owner_loss: Annotated[
        str | None, typer.Option("--on-owner-loss", help="fail (default) or resume.")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Start a backtest of a recorded session and print its id."""
    _start(
        "backtest",
        _csv_or_none(symbols),
        url,
        token,
        as_json,
        source_session=source,
        strategy=strategy,
        params=parse_params(param),
        speed=speed,
        seed=seed,
        initial_cash=initial_cash,
        latency_ms=latency_ms,
        on_owner_loss=on_owner_loss,
    )


@app.command("results")
@reported
def show_results(
    session_id: Annotated[str, typer.Argument(help="A backtest session's id.")],
    rows: Annotated[
        str | None,
        typer.Option("--rows", help="Print orders, fills or equity (JSON lines) instead."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Rows per page (with --rows).")] = 1000,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """A backtest's results: summary and hash, or every order, fill or equity point."""
    with client_for(url, token) as client:
        if rows is not None:
            if rows not in ("orders", "fills", "equity"):
                raise typer.BadParameter("choose orders, fills or equity", param_hint="--rows")
            cursor = None
            while True:
                page = client.result_rows(session_id, rows, cursor=cursor, limit=limit)
                for row in page.rows:
                    typer.echo(json.dumps(row, sort_keys=True))
                if page.next_cursor is None:
                    return
                cursor = page.next_cursor
        found = client.results(session_id)
    if as_json:
        print_json(found)
        return
    typer.echo(f"session  {found.session_id}")
    typer.echo(f"status   {found.status}")
    typer.echo(f"hash     {found.hash}")
    typer.echo(f"orders   {found.orders:,}   fills {found.fills:,}   equity {found.equity:,}")
    for key in sorted(found.summary):
        value = found.summary[key]
        shown = f"{value:,.6g}" if isinstance(value, float) else str(value)
        typer.echo(f"{key:<14} {shown}")


@start_app.command("paper")
@reported
def start_paper(
    symbols: Annotated[
        str, typer.Option("--symbols", "-s", help="Comma-separated, e.g. BTC_USDT,ETH_USDT.")
    ],
    strategy: Annotated[
        str, typer.Option("--strategy", help="A registered strategy (GET /api/strategies).")
    ],
    param: Params = None,
    duration: Duration = None,
    rate: Annotated[
        float | None, typer.Option("--rate", help="Simulated trades per second per symbol.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the feed and the strategy.")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Start a paper session (a strategy on the live feed, simulated fills) and print its id."""
    _start(
        "paper",
        split_csv(symbols),
        url,
        token,
        as_json,
        strategy=strategy,
        params=parse_params(param),
        duration=duration,
        rate_per_s=rate,
        seed=seed,
    )


# ---------------------------------------------------------------------------- read


def sessions_table(sessions: list[SessionOut]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("id", no_wrap=True, min_width=36)
    for name in ("kind", "status", "symbols"):
        table.add_column(name)
    table.add_column("trades", justify="right")
    table.add_column("books", justify="right")
    table.add_column("created (UTC)", no_wrap=True)
    for s in sessions:
        table.add_row(
            s.id,
            s.kind,
            s.status,
            ",".join(s.symbols),
            f"{s.stats.trades:,}",
            f"{s.stats.orderbook:,}",
            _when(s.created_at),
        )
    return table


@app.command("ls")
@reported
def list_sessions(
    status: Annotated[
        list[str] | None, typer.Option(help="Filter by status (repeat or comma-separate).")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="collect, backtest or paper.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Sessions recording this symbol.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (1-500).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Continue a previous listing.")] = None,
    include_deleted: Annotated[bool, typer.Option("--all", help="Include deleted.")] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """List sessions, newest first."""
    with client_for(url, token) as client:
        page = client.list_sessions(
            statuses=split_csv(status),
            kind=kind,
            symbol=symbol,
            limit=limit,
            cursor=cursor,
            include_deleted=include_deleted,
        )
    if as_json:
        print_json(page)
        return
    if not page.sessions:
        out.print("no sessions")
        return
    out.print(sessions_table(page.sessions))
    if page.next_cursor:
        out.print(f"more: ticktape ls --cursor {page.next_cursor}", markup=False)


@app.command()
@reported
def show(
    session_id: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Show one session."""
    with client_for(url, token) as client:
        s = client.get_session(session_id)
    if as_json:
        print_json(s)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    cfg = s.config
    rows = [
        ("id", s.id),
        ("kind", s.kind),
        ("status", s.status),
        ("reason", s.reason or ""),
        ("symbols", ", ".join(s.symbols)),
        ("exchange", s.exchange),
        ("data types", ", ".join(s.data_types)),
        ("duration", "until stopped" if cfg.duration_s is None else f"{cfg.duration_s:g}s"),
        ("rate", f"{cfg.rate_per_s:g}/s per symbol"),
        ("book depth", str(cfg.book_depth)),
        ("trades", f"{s.stats.trades:,}"),
        ("order books", f"{s.stats.orderbook:,}"),
        ("errors", str(s.stats.errors)),
        ("created", _when(s.created_at)),
        ("started", _when(s.started_at)),
        ("ended", _when(s.ended_at)),
        ("owner", s.owner or ""),
        ("version", str(s.version)),
    ]
    if s.deleted:
        rows.append(("deleted", "yes"))
    for name, value in rows:
        grid.add_row(name, value)
    out.print(grid, markup=False)


@app.command()
@reported
def events(
    session_id: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Show a session's history of transitions."""
    with client_for(url, token) as client:
        history = client.events(session_id)
    if as_json:
        print_json(history)
        return
    table = Table(show_edge=False, pad_edge=False)
    for name in ("#", "at (UTC)", "from", "to", "actor", "reason", "detail"):
        table.add_column(name)
    for e in history:
        table.add_row(
            str(e.seq),
            e.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            e.from_status or "",
            e.to_status,
            e.actor,
            e.reason,
            e.detail or "",
        )
    out.print(table)


@app.command("export")
@reported
def export_cmd(
    session_id: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or parquet.")] = "csv",
    data: Annotated[str, typer.Option("--data", help="trades or orderbook.")] = "trades",
    symbol: Annotated[str | None, typer.Option(help="Only this symbol.")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Export a session's trades or order books to a CSV or Parquet file (streamed)."""
    partial = output.with_name(output.name + ".part")
    with (
        client_for(url, token) as client,
        Progress(
            TextColumn("exporting"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("export", total=None)
        try:
            with partial.open("wb") as target:
                written = client.export(
                    session_id,
                    target,
                    fmt=fmt,
                    data=data,
                    symbol=symbol,
                    progress=lambda n: bar.advance(task, n),
                )
        except BaseException:
            partial.unlink(missing_ok=True)  # never leave half a file under the real name
            raise
    partial.replace(output)
    out.print(f"{output}: {written:,} bytes", markup=False)


@app.command()
@reported
def quality(
    session_id: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Show a session's data quality per symbol and data type, and its gaps."""
    with client_for(url, token) as client:
        report = client.quality(session_id)
    if as_json:
        print_json(report)
        return
    table = Table(show_edge=False, pad_edge=False)
    for name in (
        "symbol",
        "data",
        "rows",
        "rate/s",
        "gaps",
        "gap s",
        "lost",
        "reconn.",
        "seq. breaks",
        "out of order",
        "dup. dropped",
        "latency p50/p99/max ms",
        "coverage %",
    ):
        table.add_column(name)

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    for q in report.streams:
        lat = q.latency
        table.add_row(
            q.symbol,
            q.data_type,
            f"{q.rows:,}",
            f"{q.rate_per_s:.1f}",
            str(q.gaps),
            f"{q.gap_total_s:.3f}",
            str(q.lost),
            str(q.reconnects),
            str(q.sequence_breaks),
            str(q.out_of_order),
            str(q.duplicates_dropped),
            f"{ms(lat.p50_ms)}/{ms(lat.p99_ms)}/{ms(lat.max_ms)}",
            f"{q.coverage_pct:.2f}",
        )
    out.print(table)
    if report.malformed:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in report.malformed_by_kind.items())
        out.print(f"malformed messages: {report.malformed} ({kinds})", markup=False)
    gaps = [g for q in report.streams for g in q.gap_rows]
    if gaps:
        rows = Table(show_edge=False, pad_edge=False, title="gaps")
        for name in ("symbol", "data", "start (UTC)", "duration s", "cause", "lost", "detail"):
            rows.add_column(name)
        for g in sorted(gaps, key=lambda g: g.start):
            rows.add_row(
                g.symbol,
                g.data_type,
                g.start.strftime("%Y-%m-%d %H:%M:%S.%f"),
                f"{g.duration_s:.3f}",
                g.cause,
                "?" if g.lost is None else str(g.lost),
                g.detail,
            )
        out.print(rows)


@app.command()
@reported
def watch(session_id: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Follow a session live until it ends (Ctrl-C leaves; the session goes on)."""
    from ticktape.cli.demo import watch_session

    with client_for(url, token) as client, contextlib.suppress(KeyboardInterrupt):
        watch_session(client, session_id, out)


# ---------------------------------------------------------------------------- change


@app.command()
@reported
def stop(
    session_id: str,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Return once the session has stopped.")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = STOP_WAIT_TIMEOUT_S,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Stop a session."""
    with client_for(url, token) as client:
        s = client.stop_session(session_id, wait=wait, timeout_s=timeout)
    if as_json:
        print_json(s)
    else:
        out.print(
            f"{s.id}: {s.status} ({s.stats.trades:,} trades, {s.stats.orderbook:,} order books)",
            markup=False,
        )


@app.command()
@reported
def delete(
    session_id: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Delete a finished session (it is hidden from listings; its data stays)."""
    with client_for(url, token) as client:
        s = client.delete_session(session_id)
    if as_json:
        print_json(s)
    else:
        out.print(f"{s.id}: deleted", markup=False)


@app.command()
@reported
def demo(
    store: Annotated[
        str, typer.Option(help="Store for the demo.")
    ] = "sqlite:///./ticktape-demo.db",
    duration: Annotated[str, typer.Option(help="How long to collect.")] = "5s",
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols.")] = "BTC_USDT,ETH_USDT",
    rate: Annotated[float | None, typer.Option(help="Trades per second per symbol.")] = None,
) -> None:
    """Run a server in this process, record a short session, and show the result."""
    from ticktape.cli.demo import run_demo  # the server, only for the demo

    try:
        run_demo(
            out, store_url=store, duration=duration, symbols=split_csv(symbols), rate_per_s=rate
        )
    except KeyboardInterrupt:
        typer.echo("demo interrupted", err=True)
        raise typer.Exit(130) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
