"""``ticktape demo``: the whole product in one command, with nothing to install.

It starts a real server in this process (uvicorn on a background thread, on a
free port), then drives it only through the HTTP client — exactly what a user
would do by hand: start a collect session, watch it, stop it, check that the
stored rows match the session's counts.

:class:`ServerThread` and :func:`watch_session` are also used by ``ticktape watch``
and by tests.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from ticktape.api import create_app
from ticktape.api.models import SessionOut
from ticktape.cli.client import ServerUnreachable, TicktapeClient
from ticktape.config import Settings
from ticktape.domain import parse_duration
from ticktape.errors import TicktapeError
from ticktape.store import open_store
from ticktape.store.base import MAX_DATA_LIMIT

SERVER_START_TIMEOUT_S = 30.0
SERVER_STOP_TIMEOUT_S = 30.0
WATCH_POLL_S = 0.5
DEMO_HEARTBEAT_S = 0.5  # publish counts often so the progress display moves
DEMO_LEASE_S = 5.0
SAMPLE_TRADES = 5


class ServerThread:
    """Serve ``app`` with uvicorn on a background thread, on a port chosen by the OS."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", log_level: str = "warning") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, log_level=log_level, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="ticktape-server", daemon=True)

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise TicktapeError(f"the server on {self.url} did not start (see the log)")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Graceful: uvicorn runs the app's shutdown (sessions stop, store closes)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(SERVER_STOP_TIMEOUT_S)
        self._sock.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def progress_view(session: SessionOut, *, elapsed_s: float | None = None) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("session", session.id)
    grid.add_row(
        "status", f"[bold]{session.status}[/]" + (f"  ({session.reason})" if session.reason else "")
    )
    grid.add_row("symbols", ", ".join(session.symbols))
    grid.add_row("trades", f"{session.stats.trades:,}")
    grid.add_row("order books", f"{session.stats.orderbook:,}")
    grid.add_row("errors", str(session.stats.errors))
    if elapsed_s is not None:
        grid.add_row("elapsed", f"{elapsed_s:.1f}s")
    return grid


def watch_session(
    client: TicktapeClient, session_id: str, console: Console, *, until_s: float | None = None
) -> SessionOut:
    """Show the session live until it is terminal (or ``until_s`` seconds pass)."""
    started = time.monotonic()
    session = client.get_session(session_id)
    with Live(
        progress_view(session), console=console, refresh_per_second=8, transient=False
    ) as live:
        while not session.is_terminal:
            elapsed = time.monotonic() - started
            if until_s is not None and elapsed >= until_s:
                break
            time.sleep(WATCH_POLL_S)
            session = client.get_session(session_id)
            live.update(progress_view(session, elapsed_s=time.monotonic() - started))
    return session


def _wait_healthy(client: TicktapeClient) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        try:
            client.health()
            return
        except ServerUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def run_demo(
    console: Console,
    *,
    store_url: str,
    duration: str,
    symbols: list[str],
    rate_per_s: float | None = None,
) -> None:
    duration_s = parse_duration(duration) or 5.0
    open_store(store_url)  # a mistyped URL is a one-line error before any server starts
    settings = Settings(
        store_url=store_url,
        instance_name="demo",
        heartbeat_interval_s=DEMO_HEARTBEAT_S,
        lease_s=DEMO_LEASE_S,
    )
    console.rule("[bold]ticktape demo")
    console.print(f"store: {store_url}")
    with ServerThread(create_app(settings)) as server, TicktapeClient(server.url) as client:
        _wait_healthy(client)
        console.print(f"server: {server.url} (in this process)\n")
        session = client.create_session("collect", symbols, rate_per_s=rate_per_s)
        console.print(
            f"started collect session [bold]{session.id}[/] — "
            f"collecting for {duration_s:g}s, then stopping it"
        )
        watch_session(client, session.id, console, until_s=duration_s)
        session = client.stop_session(session.id, wait=True)
        console.print(
            f"\nsession {session.status} ({session.reason}): "
            f"{session.stats.trades:,} trades, "
            f"{session.stats.orderbook:,} order-book snapshots recorded"
        )
        _show_samples(console, client, session)
        _check_counts(console, client, session)
        _next_steps(console, store_url)
    console.print("[dim]demo server stopped.[/]")


def _show_samples(console: Console, client: TicktapeClient, session: SessionOut) -> None:
    sample = client.trades(session.id, limit=SAMPLE_TRADES)
    table = Table(title=f"first {sample.count} trades", title_justify="left")
    for name in ("time (UTC)", "symbol", "side", "price", "qty"):
        table.add_column(name, justify="right" if name in {"price", "qty"} else "left")
    for t in sample.trades:
        table.add_row(
            t.ts.strftime("%H:%M:%S.%f"), t.symbol, t.side, f"{t.price:,.2f}", f"{t.qty:g}"
        )
    console.print(table)


def _check_counts(console: Console, client: TicktapeClient, session: SessionOut) -> None:
    """Invariant 7, seen by a user: the session's counts equal the rows stored."""
    stored_trades = client.trades(session.id, limit=MAX_DATA_LIMIT).count
    stored_books = client.orderbook(session.id, limit=MAX_DATA_LIMIT).count
    for name, stat, stored in (
        ("trades", session.stats.trades, stored_trades),
        ("order books", session.stats.orderbook, stored_books),
    ):
        if stored >= MAX_DATA_LIMIT and stat >= MAX_DATA_LIMIT:
            console.print(
                f"[yellow]?[/] {name}: {stat:,} counted; the API returns at most "
                f"{MAX_DATA_LIMIT:,} rows per request, so not checked here"
            )
        elif stored == stat:
            console.print(f"[green]✓[/] {name}: stats {stat:,} = stored rows {stored:,}")
        else:
            raise TicktapeError(f"{name}: stats say {stat:,} but {stored:,} rows are stored")


def _next_steps(console: Console, store_url: str) -> None:
    steps = Table.grid(padding=(0, 2))
    steps.add_column(style="bold", no_wrap=True)
    steps.add_column()
    steps.add_row("run a server", f"ticktape serve --store {store_url}")
    steps.add_row("dashboard", "http://127.0.0.1:8765/  (API docs at /docs)")
    steps.add_row("start a session", "ticktape start collect --symbols BTC_USDT --duration 30s")
    steps.add_row("follow it", "ticktape watch <id>, ticktape ls, ticktape stop <id>")
    steps.add_row(
        "or over HTTP",
        "curl -X POST localhost:8765/api/sessions -H 'Content-Type: application/json' "
        '-d \'{"kind": "collect", "symbols": ["BTC_USDT"]}\'',
    )
    console.print(Panel(steps, title="next steps", title_align="left"))
