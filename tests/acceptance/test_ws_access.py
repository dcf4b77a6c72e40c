"""``/ws`` behind the request guard, and the original protocol's ``auth`` and ``command``
messages, against a real ``ticktape serve`` (docs/compat.md, docs/security.md).

Handshakes are written by hand on a socket where the test needs a header a
WebSocket client library sets itself (``Host``); the rest uses a real client.
"""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.acceptance.helpers import LIFTED_LIMITS
from ticktape.testing import ServerProcess

TOKEN = "ws-test-token"
ENV = {"TICKTAPE_HEARTBEAT_S": "0.5", "TICKTAPE_LEASE_S": "3", **LIFTED_LIMITS}


def _handshake(port: int, **headers: str) -> tuple[int, bytes]:
    """Status code and body of a raw WebSocket handshake to ``/ws``."""
    sent = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    request = "GET /ws HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in sent.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        if int(head.split()[1]) != 101:
            while chunk := sock.recv(4096):
                body += chunk
    return int(head.split()[1]), body


@pytest.fixture
def protected(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        f"sqlite:///{tmp_path}/ticktape.db",
        tmp_path,
        env={**ENV, "TICKTAPE_API_TOKEN": TOKEN, "TICKTAPE_PROTECT_READS": "1"},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        f"sqlite:///{tmp_path}/ticktape.db", tmp_path, env={**ENV, "TICKTAPE_API_TOKEN": TOKEN}
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_ws_handshakes_pass_the_request_guard(protected: ServerProcess) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, body = _handshake(protected.port)
    assert status == 401, body  # protected reads: a handshake is a read
    assert json.loads(body)["error"]["code"] == "unauthorized"
    status, body = _handshake(protected.port, Host="rebound.example", **bearer)
    assert status == 400 and json.loads(body)["error"]["code"] == "host_not_allowed"
    status, body = _handshake(protected.port, Origin="http://evil.example", **bearer)
    assert status == 403 and json.loads(body)["error"]["code"] == "origin_not_allowed"
    assert _handshake(protected.port, Origin="http://localhost:3000", **bearer)[0] == 101
    assert _handshake(protected.port, **bearer)[0] == 101
    with pytest.raises(InvalidStatus):
        connect(protected.url.replace("http", "ws") + "/ws", open_timeout=10).close()
    with connect(
        protected.url.replace("http", "ws") + "/ws", open_timeout=10, additional_headers=bearer
    ) as ws:
        assert json.loads(ws.recv(timeout=10))["status"] == "connected"


_IDS = itertools.count(1)


def _ask(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    """Send ``message`` with an id; its answer (updates pushed meanwhile are skipped)."""
    request_id = f"req_{next(_IDS)}"
    ws.send(json.dumps({**message, "id": request_id}))
    while True:
        answer: dict[str, Any] = json.loads(ws.recv(timeout=20))
        if answer.get("id") == request_id:
            return answer


def test_ws_auth_and_commands(token_server: ServerProcess) -> None:
    url = token_server.url.replace("http", "ws") + "/ws"
    start = {"type": "command", "action": "start_data_collection"}
    params = {"symbols": ["BTC_USDT"], "duration": "continuous"}
    with connect(url, open_timeout=10) as ws:
        json.loads(ws.recv(timeout=10))
        refused = _ask(ws, {**start, "params": params})
        assert refused["type"] == "error" and refused["error_code"] == "authentication_required"
        wrong = _ask(ws, {"type": "auth", "token": "guess"})
        assert wrong["type"] == "error" and wrong["error_code"] == "invalid_token"
        assert _ask(ws, {**start, "params": params})["error_code"] == "authentication_required"
        good = _ask(ws, {"type": "auth", "token": TOKEN})
        assert (good["type"], good["status"]) == ("response", "authenticated")

        started = _ask(ws, {**start, "params": params})
        assert (started["type"], started["status"], started["command"]) == (
            "response",
            "success",
            "start_data_collection",
        )
        session_id = started["data"]["session_id"]
        assert started["data"]["symbols"] == ["BTC_USDT"]
        status = _ask(ws, {"type": "command", "action": "get_status"})
        assert status["status"] == "success" and status["data"]["session_id"] == session_id

        live = _ask(
            ws,
            {
                "type": "command",
                "action": "start_live_trading",
                "params": {"symbols": ["BTC_USDT"], "mode": "live"},
            },
        )
        assert live["type"] == "error" and "paper" in live["error_message"]
        empty = _ask(ws, {**start, "params": {"symbols": []}})
        assert empty["type"] == "error" and empty["error_code"] == "validation_error"
        unknown = _ask(ws, {"type": "command", "action": "add_indicator", "params": {}})
        assert unknown["error_code"] == "unknown_command"

        stopped = _ask(ws, {"type": "command", "action": "stop_execution"})
        assert stopped["status"] == "success", stopped
        assert stopped["data"]["session_id"] == session_id
        assert stopped["data"]["session_status"] in {"stopping", "stopped"}
        again = _ask(ws, {"type": "command", "action": "stop_execution"})
        assert again["type"] == "error" and again["error_code"] == "session_not_found"

    # The bearer token on the handshake authenticates the connection for commands too.
    with connect(
        url, open_timeout=10, additional_headers={"Authorization": f"Bearer {TOKEN}"}
    ) as ws:
        json.loads(ws.recv(timeout=10))
        started = _ask(ws, {**start, "params": params})
        assert started["status"] == "success", started
        assert _ask(ws, {"type": "command", "action": "stop_execution"})["status"] == "success"
