"""Live updates over the real server: SSE (``/api/sessions/stream``) and the original's ``/ws``.

Two ``ticktape serve`` processes share one store. Clients listen on instance A
while sessions are started and stopped through instance B: the updates come
from A's change feed reading the store, in order. A client that stops reading
is cut off rather than buffered for.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.acceptance.helpers import LIFTED_LIMITS
from ticktape.testing import ServerProcess

ENV = {"TICKTAPE_HEARTBEAT_S": "0.5", "TICKTAPE_LEASE_S": "3", **LIFTED_LIMITS}
# The feed reads the store every 0.25 s, so an update reaches a client well within 1 s;
# the deadline adds slack for process scheduling on a loaded test machine.
DEADLINE_S = 2.0
ORDER = {
    "pending": 0,
    "starting": 0,
    "running": 1,
    "stopping": 2,
    "stopped": 3,
    "completed": 3,
    "failed": 3,
}


class Collector:
    """Messages a reader thread received, with arrival times, awaited by condition."""

    def __init__(self) -> None:
        self.items: list[tuple[float, dict[str, Any]]] = []
        self._cond = threading.Condition()

    def add(self, item: dict[str, Any]) -> None:
        with self._cond:
            self.items.append((time.monotonic(), item))
            self._cond.notify_all()

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float) -> float:
        """Arrival time of the first message matching ``predicate``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for at, item in self.items:
                    if predicate(item):
                        return at
                left = deadline - time.monotonic()
                assert left > 0, f"no matching message in {timeout_s}s: {self.items[-5:]}"
                self._cond.wait(left)


@pytest.fixture
def cluster(store_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    servers = [ServerProcess(store_url, tmp_path, env=ENV) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def _read_sse(response: httpx.Response, into: Collector) -> None:
    event = None
    try:
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                into.add({"event": event, "data": json.loads(line.removeprefix("data: "))})
    except httpx.HTTPError:
        pass  # the test closed the stream


def _read_ws(ws: ClientConnection, into: Collector) -> None:
    try:
        for raw in ws:
            into.add(json.loads(raw))
    except Exception:
        pass


def _statuses(items: list[dict[str, Any]]) -> list[str]:
    return [i["status"] for i in items]


def test_clients_of_one_instance_see_sessions_changed_through_another(
    cluster: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = cluster
    sse, ws_msgs = Collector(), Collector()
    with (
        httpx.Client(base_url=a.url, timeout=10.0) as ca,
        httpx.Client(base_url=b.url, timeout=30.0) as cb,
        ca.stream("GET", "/api/sessions/stream") as stream,
        connect(a.url.replace("http", "ws") + "/ws", open_timeout=10) as ws,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        threading.Thread(target=_read_sse, args=(stream, sse), daemon=True).start()
        sse.wait(lambda m: m["event"] == "ready", DEADLINE_S)
        connected = json.loads(ws.recv(timeout=10))
        assert connected["type"] == "status" and connected["status"] == "connected"
        ws.send(json.dumps({"type": "subscribe", "stream": "execution_status", "params": {}}))
        subscribed = json.loads(ws.recv(timeout=10))
        assert subscribed["type"] == "response" and subscribed["status"] == "subscribed"
        threading.Thread(target=_read_ws, args=(ws, ws_msgs), daemon=True).start()

        created = cb.post(
            "/api/sessions", json={"kind": "collect", "symbols": ["BTC_USDT"], "rate_per_s": 50}
        )
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        started_at = time.monotonic()
        seen_start = sse.wait(lambda m: m["data"].get("id") == sid, DEADLINE_S)
        ws_msgs.wait(lambda m: m.get("session_id") == sid, DEADLINE_S)
        sse.wait(lambda m: m["data"].get("id") == sid and m["data"]["status"] == "running", 10)

        stop = cb.post("/sessions/stop", json={"session_id": sid})  # answers once stopped
        assert stop.status_code == 200, stop.text
        stopped_at = time.monotonic()
        seen_stop = sse.wait(
            lambda m: m["data"].get("id") == sid and m["data"]["status"] == "stopped", DEADLINE_S
        )
        ws_msgs.wait(
            lambda m: m["type"] == "execution_result" and m["session_id"] == sid, DEADLINE_S
        )
        print(
            f"\nA saw B's start after {seen_start - started_at:.3f}s, "
            f"B's stop after {max(0.0, seen_stop - stopped_at):.3f}s"
        )

    events = [m["data"] for _, m in sse.items if m["event"] == "session" and m["data"]["id"] == sid]
    assert [e["version"] for e in events] == sorted(e["version"] for e in events)
    ranks = [ORDER[s] for s in _statuses(events)]
    assert ranks == sorted(ranks) and events[-1]["status"] == "stopped"
    assert events[-1]["stats"] == cb_stats(b, sid)

    mine = [m for _, m in ws_msgs.items if m.get("session_id") == sid]
    updates = [m["data"] for m in mine if m["type"] == "session_update"]
    assert [ORDER[s] for s in _statuses(updates)] == sorted(ORDER[s] for s in _statuses(updates))
    progress = [m for m in mine if m["type"] == "data"]
    assert progress and all(m["stream"] == "execution_status" for m in progress)
    assert isinstance(progress[-1]["data"]["records_collected"], int)
    result = [m for m in mine if m["type"] == "execution_result"]
    assert len(result) == 1 and mine[-1] is result[0]
    assert result[0]["data"]["status"] == "stopped"
    assert result[0]["data"]["records_collected"] == events[-1]["stats"]["records_collected"]


def cb_stats(server: ServerProcess, sid: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{server.url}/api/sessions/{sid}").json()["stats"]
    return stats


def test_ws_protocol_answers(cluster: tuple[ServerProcess, ServerProcess]) -> None:
    a, _ = cluster
    with connect(a.url.replace("http", "ws") + "/ws", open_timeout=10) as ws:
        json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"type": "heartbeat", "id": "h1"}))
        pong = json.loads(ws.recv(timeout=10))
        assert (pong["type"], pong["status"], pong["id"]) == ("status", "pong", "h1")
        ws.send(json.dumps({"type": "subscribe", "stream": "market_data"}))
        refused = json.loads(ws.recv(timeout=10))
        assert refused["type"] == "error" and refused["error_code"] == "stream_not_supported"
        ws.send(json.dumps({"type": "command", "action": "start_session"}))
        command = json.loads(ws.recv(timeout=10))
        assert command["error_code"] == "unknown_command"  # the original sent it over HTTP
        ws.send("not json")
        assert json.loads(ws.recv(timeout=10))["error_code"] == "invalid_json"


def test_a_client_that_stops_reading_is_cut_off(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path}/ticktape.db"
    server = ServerProcess(store_url, tmp_path, env={**ENV, "TICKTAPE_PUSH_QUEUE_MAX": "4"})
    server.start()
    try:
        with (
            socket.socket() as sock,
            httpx.Client(base_url=server.url, timeout=30.0) as c,
        ):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /api/sessions/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            rss_before = _rss_kib(server)
            body = {"kind": "collect", "symbols": ["BTC_USDT"], "rate_per_s": 200}
            ids = [c.post("/api/sessions", json=body).json()["id"] for _ in range(30)]
            # every heartbeat (0.5 s) changes 30 sessions' stats: the unread stream fills the
            # socket buffers, then the client's 4-update queue, and the server drops it
            deadline = time.monotonic() + 60.0
            while "push client dropped" not in server.logs():
                assert time.monotonic() < deadline, "the server kept a client that read nothing"
                time.sleep(0.1)  # polling the server's log: no event to await from here
            grown_kib = _rss_kib(server) - rss_before
            dropped = [
                line
                for line in c.get("/metrics").text.splitlines()
                if line.startswith("ticktape_push_clients_dropped_total ")
            ]
            assert dropped == ["ticktape_push_clients_dropped_total 1.0"], dropped
            for sid in ids:
                c.post(f"/api/sessions/{sid}/stop")
        assert grown_kib < 50_000, grown_kib  # nothing unbounded was kept for the reader
    finally:
        server.stop()


def _rss_kib(server: ServerProcess) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_graceful_shutdown_ends_open_streams(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path}/ticktape.db", tmp_path, env=ENV)
    server.start()
    try:
        sse = Collector()
        with (
            httpx.Client(base_url=server.url, timeout=10.0) as c,
            c.stream("GET", "/api/sessions/stream") as stream,
            connect(server.url.replace("http", "ws") + "/ws", open_timeout=10) as ws,
        ):
            reader = threading.Thread(target=_read_sse, args=(stream, sse), daemon=True)
            reader.start()
            sse.wait(lambda m: m["event"] == "ready", DEADLINE_S)
            json.loads(ws.recv(timeout=10))
            assert server.terminate() == 0  # not held open by the streams
            reader.join(10)
            assert not reader.is_alive(), "the event stream did not end"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code in {1001, 1012}  # going away; service restart
    finally:
        server.stop()
