"""The ``ticktape`` CLI against the API (in-memory store, requests on the test's loop)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from ticktape.cli import main as cli
from ticktape.cli.client import ApiError, ServerUnreachable, TicktapeClient
from ticktape.errors import TicktapeError
from ticktape.testing import record_source, sim_blocks

from .conftest_api import BASE_URL, ApiHarness, Run, SyncAsgiTransport, make_harness

URL = ["--url", BASE_URL]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _wire(monkeypatch: pytest.MonkeyPatch, harness: ApiHarness) -> None:
    """Make every CLI command talk to ``harness``'s app."""

    def client_for(url: str, token: str | None) -> TicktapeClient:
        http = httpx.Client(transport=SyncAsgiTransport(harness.app, harness.run))
        return TicktapeClient(url, token=token, http=http)

    monkeypatch.setattr(cli, "client_for", client_for)


@pytest.fixture
def api(run: Run[Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiHarness]:
    harness = make_harness(run)
    _wire(monkeypatch, harness)
    yield harness
    harness.close()


def invoke(runner: CliRunner, *args: str, **kwargs: Any) -> Any:
    return runner.invoke(cli.app, list(args), **kwargs)


# --------------------------------------------------------------------------- start


def test_start_collect_prints_only_the_session_id(api: ApiHarness, runner: CliRunner) -> None:
    result = invoke(
        runner,
        "start",
        "collect",
        "--symbols",
        "BTC_USDT, ETH_USDT",
        "--duration",
        "30s",
        "--data-types",
        "trades",
        "--depth",
        "5",
        "--rate",
        "7",
        "--seed",
        "3",
        *URL,
    )
    assert result.exit_code == 0, result.output
    session_id = result.stdout.strip()
    assert api.runtime.launched == [session_id]
    stored = api.http.get(f"/api/sessions/{session_id}").json()
    assert stored["symbols"] == ["BTC_USDT", "ETH_USDT"]
    assert stored["data_types"] == ["trades"]
    assert stored["config"] == {
        "duration_s": 30.0,
        "book_depth": 5,
        "seed": 3,
        "rate_per_s": 7.0,
        "book_every": 5,
        "on_owner_loss": "fail",
        "ignored": {},
        "strategy_run": None,
    }


def test_start_collect_json_and_idempotency_key(api: ApiHarness, runner: CliRunner) -> None:
    args = ("start", "collect", "-s", "BTC_USDT", "--idempotency-key", "k1", "--json", *URL)
    first = json.loads(invoke(runner, *args).stdout)
    again = json.loads(invoke(runner, *args).stdout)
    assert first["id"] == again["id"] and first["status"] == "pending"
    assert api.runtime.launched == [first["id"]]


@pytest.mark.parametrize(
    "args",
    [
        ("paper", "--symbols", "BTC_USDT", "--strategy", "no_such"),
        ("backtest", "--source", "no-such-session", "--strategy", "sma_cross"),
    ],
    ids=["paper", "backtest"],
)
def test_start_strategy_kinds_show_the_servers_message(
    api: ApiHarness, runner: CliRunner, args: tuple[str, ...]
) -> None:
    result = invoke(runner, "start", *args, *URL)
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: ")
    assert ("no_such" in result.stderr) or ("'no-such-session' not found" in result.stderr)
    assert "Traceback" not in result.output
    assert api.runtime.launched == []


def test_start_paper_creates_a_paper_session(api: ApiHarness, runner: CliRunner) -> None:
    result = invoke(
        runner,
        "start",
        "paper",
        "-s",
        "BTC_USDT",
        "--strategy",
        "sma_cross",
        "-p",
        "fast=3",
        "-p",
        "slow=9",
        "--duration",
        "5s",
        *URL,
    )
    assert result.exit_code == 0, result.output
    session = api.http.get(f"/api/sessions/{result.stdout.strip()}").json()
    assert session["kind"] == "paper" and session["config"]["duration_s"] == 5.0
    assert session["config"]["strategy_run"]["params"] == {"fast": 3, "slow": 9}


def test_start_backtest_passes_every_option(api: ApiHarness, runner: CliRunner) -> None:
    source = api.run(record_source(api.store, sim_blocks(500))).id
    result = invoke(
        runner,
        "start",
        "backtest",
        "--source",
        source,
        "--strategy",
        "sma_cross",
        "-p",
        "fast=4",
        "--param",
        "slow=12",
        "--symbols",
        "ETH_USDT",
        "--speed",
        "0",
        "--seed",
        "5",
        "--initial-cash",
        "2500",
        "--latency-ms",
        "7",
        "--on-owner-loss",
        "resume",
        "--json",
        *URL,
    )
    assert result.exit_code == 0, result.output
    session = json.loads(result.stdout)
    assert api.runtime.launched == [session["id"]]
    assert session["kind"] == "backtest" and session["symbols"] == ["ETH_USDT"]
    assert session["config"]["on_owner_loss"] == "resume"
    run = session["config"]["strategy_run"]
    assert run["source_session"] == source and run["strategy"] == "sma_cross"
    assert run["params"] == {"fast": 4, "slow": 12} and run["seed"] == 5
    assert (run["speed"], run["initial_cash"], run["latency_ms"]) == (0.0, 2500.0, 7.0)


def test_start_with_a_bad_symbol_is_a_one_line_error(api: ApiHarness, runner: CliRunner) -> None:
    result = invoke(runner, "start", "collect", "--symbols", "btc", *URL)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid symbol 'btc'")
    assert result.stderr.count("\n") == 1


def test_usage_errors_exit_2(api: ApiHarness, runner: CliRunner) -> None:
    assert invoke(runner, "start", "collect", *URL).exit_code == 2  # --symbols missing
    assert invoke(runner, "stop").exit_code == 2
    assert invoke(runner, "ls", "--limit", "many").exit_code == 2


# --------------------------------------------------------------------------- read


def test_ls_table_filters_and_json(api: ApiHarness, runner: CliRunner) -> None:
    assert "no sessions" in invoke(runner, "ls", *URL).stdout
    pending = api.create(symbols=["BTC_USDT"])
    stopped = api.stopped(symbols=["ETH_USDT"])
    table = invoke(runner, "ls", *URL)
    assert table.exit_code == 0
    assert pending["id"] in table.stdout and stopped["id"] in table.stdout
    assert "pending" in table.stdout and "stopped" in table.stdout
    only = invoke(runner, "ls", "--status", "stopped", *URL).stdout
    assert stopped["id"] in only and pending["id"] not in only
    page = json.loads(invoke(runner, "ls", "--limit", "1", "--json", *URL).stdout)
    assert [s["id"] for s in page["sessions"]] == [stopped["id"]]
    assert page["next_cursor"]
    assert "more: ticktape ls --cursor" in invoke(runner, "ls", "--limit", "1", *URL).stdout
    bad = invoke(runner, "ls", "--status", "bogus", *URL)
    assert bad.exit_code == 1 and "unknown status 'bogus'" in bad.stderr


def test_show_and_events(api: ApiHarness, runner: CliRunner) -> None:
    session = api.stopped()
    shown = invoke(runner, "show", session["id"], *URL)
    assert shown.exit_code == 0
    assert session["id"] in shown.stdout and "stopped" in shown.stdout
    assert json.loads(invoke(runner, "show", session["id"], "--json", *URL).stdout) == session
    history = invoke(runner, "events", session["id"], *URL)
    assert history.exit_code == 0
    for word in ("pending", "stopping", "stopped", "user_stop"):
        assert word in history.stdout
    as_json = json.loads(invoke(runner, "events", session["id"], "--json", *URL).stdout)
    assert [e["seq"] for e in as_json] == [1, 2, 3]


def test_unknown_ids_are_one_line_errors(api: ApiHarness, runner: CliRunner) -> None:
    for command in ("show", "events", "stop", "delete", "watch"):
        result = invoke(runner, command, "nope", *URL)
        assert result.exit_code == 1, command
        assert result.stderr == "error: session 'nope' not found\n"


def test_watch_follows_until_terminal(
    run: Run[Any], monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    harness = make_harness(run)
    _wire(monkeypatch, harness)
    monkeypatch.setattr("ticktape.cli.demo.WATCH_POLL_S", 0.01)
    session = harness.create()
    assert invoke(runner, "stop", session["id"], "--no-wait", *URL).exit_code == 0
    result = invoke(runner, "watch", session["id"], *URL)
    assert result.exit_code == 0, result.output
    assert "stopped" in result.stdout and session["id"] in result.stdout


# --------------------------------------------------------------------------- change


def test_stop_waits_by_default(api: ApiHarness, runner: CliRunner) -> None:
    session = api.create()
    result = invoke(runner, "stop", session["id"], *URL)
    assert result.exit_code == 0
    assert result.stdout.startswith(f"{session['id']}: stopped")


def test_stop_no_wait_and_timeout(
    run: Run[Any], monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    harness = make_harness(run, finish_stops=False)
    _wire(monkeypatch, harness)
    session = harness.create()
    result = invoke(runner, "stop", session["id"], "--no-wait", *URL)
    assert result.exit_code == 0 and ": stopping" in result.stdout
    timed_out = invoke(runner, "stop", session["id"], "--timeout", "0.1", *URL)
    assert timed_out.exit_code == 1
    assert "is still 'stopping' after 0.1s" in timed_out.stderr


def test_delete(api: ApiHarness, runner: CliRunner) -> None:
    active = api.create()
    refused = invoke(runner, "delete", active["id"], *URL)
    assert refused.exit_code == 1 and "stop it before deleting" in refused.stderr
    done = api.stopped()
    result = invoke(runner, "delete", done["id"], *URL)
    assert result.exit_code == 0 and f"{done['id']}: deleted" in result.stdout


def test_token_from_flag_or_environment(
    run: Run[Any], monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    harness = make_harness(run, token="s3cret")
    _wire(monkeypatch, harness)
    refused = invoke(runner, "start", "collect", "-s", "BTC_USDT", *URL)
    assert refused.exit_code == 1 and "Authorization: Bearer" in refused.stderr
    with_flag = invoke(runner, "start", "collect", "-s", "BTC_USDT", "--token", "s3cret", *URL)
    assert with_flag.exit_code == 0
    with_env = invoke(
        runner, "start", "collect", "-s", "BTC_USDT", *URL, env={"TICKTAPE_API_TOKEN": "s3cret"}
    )
    assert with_env.exit_code == 0
    assert len(harness.runtime.launched) == 2


# --------------------------------------------------------------------------- failures


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_server_says_what_to_do(runner: CliRunner) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = invoke(runner, "ls", "--url", url)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: cannot reach ticktape at {url}: is `ticktape serve` running? (caused by: "
    )
    assert result.stderr.count("\n") == 1


def test_url_from_the_environment(runner: CliRunner) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = invoke(runner, "ls", env={"TICKTAPE_URL": url})
    assert f"cannot reach ticktape at {url}" in result.stderr


def test_debug_shows_the_exception(api: ApiHarness, runner: CliRunner) -> None:
    result = invoke(runner, "--debug", "show", "nope", *URL)
    assert result.exit_code == 1
    assert isinstance(result.exception, ApiError)
    assert result.exception.code == "session_not_found"
    assert result.exception.status_code == 404


def test_one_line_joins_the_cause_chain() -> None:
    try:
        try:
            try:
                raise OSError("disk full")
            except OSError as low:
                raise RuntimeError("write failed") from low
        except RuntimeError as mid:
            raise TicktapeError("could not save") from mid
    except TicktapeError as exc:
        assert cli.one_line(exc) == "could not save (caused by: write failed; disk full)"
    assert cli.one_line(ServerUnreachable("down")) == "down"


def test_serve_help_shows_every_environment_variable(runner: CliRunner) -> None:
    result = invoke(runner, "serve", "--help", env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0
    for name in (
        "TICKTAPE_HOST",
        "TICKTAPE_PORT",
        "TICKTAPE_STORE",
        "TICKTAPE_INSTANCE",
        "TICKTAPE_LEASE_S",
        "TICKTAPE_HEARTBEAT_S",
        "TICKTAPE_LOG_LEVEL",
    ):
        assert name in result.stdout, name


def test_serve_refuses_a_lease_shorter_than_the_heartbeat(runner: CliRunner) -> None:
    result = invoke(runner, "serve", "--lease-s", "1", "--heartbeat-s", "2")
    assert result.exit_code != 0
    assert "must be longer than the heartbeat" in result.output


def test_demo_runs_end_to_end_on_the_memory_store(runner: CliRunner) -> None:
    result = invoke(
        runner,
        "demo",
        "--store",
        "memory://",
        "--duration",
        "0.5s",
        "--symbols",
        "BTC_USDT",
        "--rate",
        "200",
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "session stopped (user_stop)" in out
    assert "✓ trades: stats" in out and "✓ order books: stats" in out
    assert "next steps" in out and "ticktape serve" in out
    assert out.rstrip().endswith("demo server stopped.")


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_mistyped_store_url_is_a_one_line_error(runner: CliRunner, command: str) -> None:
    result = invoke(runner, command, "--store", "bogus://")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown store URL 'bogus://'")
    assert result.stderr.count("\n") == 1
