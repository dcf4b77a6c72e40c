"""Browser sign-in: users file, login, signed cookie, CSRF on every change, throttling."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from ticktape.api import create_app
from ticktape.api.auth import COOKIE_NAME, LOGIN_FAILURES_ALLOWED, add_user, load_users
from ticktape.cli.main import app as cli
from ticktape.config import Settings

from .conftest_api import BASE_URL, Run, SyncAsgiTransport, make_harness

START = {"kind": "collect", "symbols": ["BTC_USDT"]}
ORIGINAL_START = {"session_type": "collect", "symbols": ["BTC_USDT"]}


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.json"
    add_user(path, "alice", "correct horse")
    return path


def _client(
    run: Run[Any], users_file: Path | None, token: str | None = None, protect_reads: bool = False
) -> httpx.Client:
    harness = make_harness(run)
    settings = Settings(
        store_url="memory://",
        users_file=users_file,
        secret_key="test-key",
        api_token=token,
        allowed_hosts=("ticktape.test",),  # BASE_URL's name
        protect_reads=protect_reads,
    )
    app = create_app(settings, service=harness.service)
    return httpx.Client(transport=SyncAsgiTransport(app, run), base_url=BASE_URL)


@pytest.fixture
def http(run: Run[Any], users_file: Path) -> Iterator[httpx.Client]:
    with _client(run, users_file, token="s3cret") as c:
        yield c


def login(http: httpx.Client, password: str = "correct horse") -> httpx.Response:
    return http.post("/api/v1/auth/login", json={"username": "alice", "password": password})


def test_users_file_keeps_argon2_hashes_only(users_file: Path) -> None:
    text = users_file.read_text()
    assert "correct horse" not in text
    assert load_users(users_file)["alice"].startswith("$argon2id$")
    assert users_file.stat().st_mode & 0o077 == 0


def test_login_sets_an_httponly_samesite_cookie_and_changes_need_csrf(http: httpx.Client) -> None:
    assert http.post("/api/sessions", json=START).status_code == 401  # nobody signed in
    answer = login(http)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["user"]["username"] == "alice" and data["csrf_token"]
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie

    # every mutating route of both API families refuses a cookie without its CSRF token
    refused = [
        http.post("/api/sessions", json=START),
        http.post("/sessions/start", json=ORIGINAL_START),
        http.post("/sessions/stop", json={"session_id": "x"}),
        http.post("/api/sessions/x/stop"),
        http.delete("/api/sessions/x"),
        http.delete("/api/data-collection/sessions/x"),
    ]
    for response in refused:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "csrf_failed"

    token = http.get("/csrf-token").json()["data"]
    assert token["expires_in"] == 3600
    headers = {"X-CSRF-Token": token["token"]}
    created = http.post("/api/sessions", json=START, headers=headers)
    assert created.status_code == 201, created.text
    started = http.post("/sessions/start", json=ORIGINAL_START, headers=headers)
    assert started.status_code == 200, started.text
    assert (
        http.post("/api/sessions", json=START, headers={"X-CSRF-Token": "forged.x"}).status_code
        == 403
    )


def test_a_csrf_token_of_another_sign_in_or_anonymous_is_refused(
    run: Run[Any], users_file: Path
) -> None:
    with _client(run, users_file) as mallory, _client(run, users_file) as victim:
        anonymous = mallory.get("/csrf-token").json()["data"]["token"]
        assert login(mallory).status_code == 200
        theirs = mallory.get("/csrf-token").json()["data"]["token"]
        assert login(victim).status_code == 200
        for token in (anonymous, theirs):
            response = victim.post("/api/sessions", json=START, headers={"X-CSRF-Token": token})
            assert response.status_code == 403


def test_bearer_token_keeps_working_and_logout_ends_the_sign_in(http: httpx.Client) -> None:
    bearer = {"Authorization": "Bearer s3cret"}
    assert http.post("/api/sessions", json=START, headers=bearer).status_code == 201
    assert (
        http.post("/api/sessions", json=START, headers={"Authorization": "Bearer no"}).status_code
        == 401
    )
    assert login(http).status_code == 200
    out = http.post("/api/v1/auth/logout")
    assert out.status_code == 200 and f"{COOKIE_NAME}=" in out.headers["set-cookie"]
    assert COOKIE_NAME not in http.cookies
    token = http.get("/csrf-token").json()["data"]["token"]
    assert (
        http.post("/api/sessions", json=START, headers={"X-CSRF-Token": token}).status_code == 401
    )
    assert http.post("/api/v1/auth/refresh").status_code == 401


def test_wrong_passwords_are_throttled(http: httpx.Client) -> None:
    for _ in range(LOGIN_FAILURES_ALLOWED):
        wrong = login(http, "guess")
        assert wrong.status_code == 401 and wrong.json()["error_code"] == "unauthorized"
    throttled = login(http)  # even the right password waits now
    assert throttled.status_code == 429
    assert throttled.json()["error_code"] == "too_many_attempts"
    assert int(throttled.headers["retry-after"]) > 0
    unknown = http.post("/api/v1/auth/login", json={"username": "bob", "password": "x"})
    assert unknown.status_code in (401, 429)  # the same client address is throttled too


def test_a_forged_or_tampered_cookie_is_not_a_sign_in(http: httpx.Client) -> None:
    assert login(http).status_code == 200
    value = http.cookies[COOKIE_NAME]
    body, mac = value.split(".")
    http.cookies.set(COOKIE_NAME, body[:-2] + "AA." + mac)
    token = http.get("/csrf-token").json()["data"]["token"]
    assert (
        http.post("/api/sessions", json=START, headers={"X-CSRF-Token": token}).status_code == 401
    )


def test_without_users_or_token_changes_stay_open_and_login_says_why(run: Run[Any]) -> None:
    with _client(run, None) as open_http:
        assert open_http.post("/api/sessions", json=START).status_code == 201
        refused = open_http.post("/api/v1/auth/login", json={"username": "a", "password": "b"})
        assert refused.status_code == 422
        assert refused.json()["error_code"] == "sign_in_not_configured"


def test_protected_reads_accept_a_sign_in_and_sign_in_stays_reachable(
    run: Run[Any], users_file: Path
) -> None:
    with _client(run, users_file, token="s3cret", protect_reads=True) as http:
        refused = http.get("/api/sessions")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        original = http.get("/api/data-collection/sessions")  # the original's error shape
        assert original.status_code == 401 and original.json()["error_code"] == "unauthorized"
        assert login(http).status_code == 200  # the sign-in routes are open
        assert http.get("/api/sessions").status_code == 200  # a read needs no CSRF token
        assert http.get("/health").status_code == 200
        token = http.get("/csrf-token").json()["data"]["token"]
        created = http.post("/api/sessions", json=START, headers={"X-CSRF-Token": token})
        assert created.status_code == 201, created.text


def test_cli_user_add(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    result = CliRunner().invoke(
        cli, ["user", "add", "carol", "--users-file", str(path), "--password-stdin"], input="pw1\n"
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads(path.read_text())["users"]) == {"carol"}
    result = CliRunner().invoke(
        cli, ["user", "add", " ", "--users-file", str(path), "--password-stdin"], input="pw\n"
    )
    assert result.exit_code == 1 and "user name" in result.output
