"""The bulk-reading WebSocket client (feeds/wire.py) against a real WebSocket server.

The server is the websockets library's; where a test needs bytes no conforming
server sends (a masked frame, a frame cut across writes), it writes them to the
server's transport itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from ticktape.feeds.wire import WireConnection, open_wire
from ticktape.testing import eventually

Run = Callable[[Coroutine[Any, Any, Any]], Any]
Handler = Callable[[ServerConnection], Awaitable[None]]


def frame(payload: bytes, opcode: int = 1, fin: bool = True, mask: bool = False) -> bytes:
    """A frame as RFC 6455 §5.2 lays it out (the mask key is zero: payload unchanged)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, m | n))
    elif n < 2**16:
        head = bytes((b0, m | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, m | 127)) + n.to_bytes(8, "big")
    return head + (b"\0\0\0\0" if mask else b"") + payload


@contextlib.asynccontextmanager
async def server(
    handler: Handler, *, process_request: Any = None, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    async with serve(
        handler,
        "127.0.0.1",
        0,
        process_request=process_request,
        compression=None,
        ping_interval=None,
        max_queue=None,
        ssl=ssl_context,
    ) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"{'wss' if ssl_context else 'ws'}://127.0.0.1:{port}/"


async def connect(url: str, high_water: int = 256, **kw: Any) -> WireConnection:
    return await open_wire(url, open_timeout=5.0, max_size=2**20, high_water=high_water, **kw)


async def read_all(conn: WireConnection) -> list[tuple[int, list[bytes]]]:
    """Every chunk until the connection ends."""
    out: list[tuple[int, list[bytes]]] = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            out.extend(await conn.recv_batches())
    return out


def test_a_chunk_of_frames_is_one_batch_with_one_receive_time(run: Run) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the client's "go"
        ws.transport.write(b"".join(frame(f"m{i}".encode()) for i in range(50)))
        await ws.close(4000, "done")

    async def main() -> None:
        async with server(handler) as url:
            conn = await connect(url)
            await conn.send("go")
            batches = await read_all(conn)
            messages = [m for _, ms in batches for m in ms]
            assert messages == [f"m{i}".encode() for i in range(50)]
            assert len(batches) < 50  # frames written together are read together
            assert all(recv > 0 for recv, _ in batches)
            assert (conn.close_code, conn.close_reason) == (4000, "done")

    run(main())


def test_frames_cut_across_writes_and_large_and_fragmented_messages_arrive_whole(
    run: Run,
) -> None:
    big = b"x" * 300_000
    stream = (
        frame(b"first")
        + frame(big, opcode=2)
        + frame(b"frag", fin=False)
        + frame(b"men", opcode=0, fin=False)
        + frame(b"ted", opcode=0)
        + frame(b"last")
    )

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        for i in range(0, len(stream), 7777):  # cuts inside headers and payloads alike
            ws.transport.write(stream[i : i + 7777])
            await ws.drain()
            await asyncio.sleep(0)
        await ws.send(["lib", "rary"])  # a fragmented message as the library sends one
        await ws.close()

    async def main() -> None:
        async with server(handler) as url:
            conn = await connect(url)
            await conn.send("go")
            messages = [m for _, ms in await read_all(conn) for m in ms]
            assert messages == [b"first", big, b"fragmented", b"last", b"library"]
            assert conn.close_code == 1000

    run(main())


def test_server_pings_are_answered_and_client_pings_get_their_pong(run: Run) -> None:
    answered: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        pong = await ws.ping(b"srv")
        answered.append(await asyncio.wait_for(pong, 5))
        await ws.send("after the ping")
        await ws.wait_closed()

    async def main() -> None:
        async with server(handler) as url:
            conn = await connect(url)
            got = await conn.recv_batches()
            assert [m for _, ms in got for m in ms] == [b"after the ping"]
            assert len(answered) == 1
            rtt = await asyncio.wait_for(await conn.ping(), 5)
            assert rtt >= 0
            await asyncio.wait_for(conn.close(), 5)
            assert conn.close_code is not None

    run(main())


def test_a_refused_handshake_names_the_http_status(run: Run) -> None:
    def refuse(_: ServerConnection, request: Request) -> Response:
        return _.respond(404, "no such stream\n")

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("never upgraded")

    async def main() -> None:
        async with server(handler, process_request=refuse) as url:
            with pytest.raises(InvalidStatus, match="HTTP 404"):
                await connect(url + "nope")

    run(main())


def test_a_dead_port_is_an_os_error(run: Run) -> None:
    async def main() -> None:
        async with server(lambda ws: ws.wait_closed()) as url:
            pass  # closed again: nobody listens on its port now
        with pytest.raises(OSError):
            await connect(url)

    run(main())


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (frame(b"masked", mask=True), 1002),  # a server must not mask
        (frame(b"rsv", opcode=0x41), 1002),  # a reserved bit without an extension
        (frame(b"cont", opcode=0), 1002),  # a continuation of nothing
        (frame(b"x" * (2**20 + 1)), 1009),  # over max_size
    ],
    ids=["masked", "reserved-bit", "orphan-continuation", "too-big"],
)
def test_protocol_violations_close_the_connection(run: Run, raw: bytes, code: int) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.write(frame(b"before") + raw)
        await ws.wait_closed()

    async def main() -> None:
        async with server(handler) as url:
            conn = await connect(url)
            await conn.send("go")
            messages = [m for _, ms in await read_all(conn) for m in ms]
            assert messages == [b"before"]  # what came before the violation is kept
            assert conn.close_code == code

    run(main())


def test_a_lost_connection_is_code_1006_and_ends_the_reader(run: Run) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        ws.transport.abort()

    async def main() -> None:
        async with server(handler) as url:
            conn = await connect(url)
            messages = [m for _, ms in await read_all(conn) for m in ms]
            assert messages == [b"one"]
            assert conn.close_code == 1006
            with pytest.raises(ConnectionClosed):
                await conn.send("too late")

    run(main())


def test_a_reader_that_falls_behind_stops_reading_the_socket(run: Run) -> None:
    """Back-pressure: past ``high_water`` messages waiting, the client stops reading, the
    server's writes back up; once the reader takes them, everything arrives in order."""
    n = 20_000
    payload = b"y" * 1000
    held: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        held.append(ws)
        await ws.recv()
        ws.transport.write(b"".join(frame(payload + str(i).encode()) for i in range(n)))
        await ws.wait_closed()

    async def main() -> None:
        async with server(handler) as url:
            conn = await connect(url, high_water=10)
            await conn.send("go")

            async def backed_up() -> bool:  # 20 MB cannot all sit in the socket buffers
                return (
                    conn.reading_paused
                    and bool(held)
                    and held[0].transport.get_write_buffer_size() > 0
                )

            await eventually(backed_up, timeout_s=10, what="the server's writes backed up")
            # At most one received chunk (256 KiB: ~260 messages) beyond the bound waits here.
            assert 10 <= conn.queued <= 10 + 300
            got: list[bytes] = []
            while len(got) < n:
                got.extend(m for _, ms in await conn.recv_batches() for m in ms)
            assert got == [payload + str(i).encode() for i in range(n)]
            await asyncio.wait_for(conn.close(), 5)

    run(main())


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_wss_speaks_tls_and_checks_the_certificate(run: Run, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    async def handler(ws: ServerConnection) -> None:
        await ws.send(await ws.recv())
        await ws.wait_closed()

    async def main() -> None:
        async with server(handler, ssl_context=server_ctx) as url:
            assert url.startswith("wss://")
            with pytest.raises(ssl.SSLCertVerificationError):  # not in the system's trust store
                await connect(url)
            trusting = ssl.create_default_context(cafile=str(cert))
            conn = await connect(url, ssl_context=trusting)
            await conn.send("over tls")
            got = await conn.recv_batches()
            assert [m for _, ms in got for m in ms] == [b"over tls"]
            await asyncio.wait_for(conn.close(), 5)

    run(main())
