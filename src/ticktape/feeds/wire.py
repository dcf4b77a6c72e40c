"""A WebSocket client connection that reads frames in bulk (the feeds' hot path).

The websockets library's high-level client hands over one message at a time
through a future and a queue, parsing each frame in a generator. An exchange
feed receives tens of thousands of small messages a second, so this connection
does the opening handshake and writes its frames with the library's sans-I/O
:class:`~websockets.client.ClientProtocol` (request, response checks, masking:
the same errors and messages as the library's ``connect``), but reads frames
itself (RFC 6455 §5): every complete frame of a received chunk is parsed in one
pass and the connector gets the chunk's messages as one list, with one receive
time for the chunk — the moment the bytes came off the socket.

What the connection still does as the library's client did:

- server pings are answered with a pong at once; :meth:`WireConnection.ping`
  sends one and returns a future resolved by its pong;
- a close frame from the server is answered and ends the connection
  (``close_code``/``close_reason``); a lost TCP connection is code 1006;
- a protocol violation (a masked frame, reserved bits, a message over
  ``max_size``, a broken fragmentation) closes the connection with 1002/1009;
- back-pressure: once ``high_water`` messages wait for the reader, the socket is
  no longer read (TCP pushes back on the exchange) until the reader has taken
  them;
- ``wss://`` over TLS (the system's trust store, the host name checked).

Text messages are handed over as UTF-8 ``bytes`` (the JSON parser takes bytes and
rejects invalid UTF-8 itself: such a message is counted as malformed rather than
closing the connection with 1007); binary messages as ``bytes`` too. Compression
(permessage-deflate) is not negotiated.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections import deque
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.frames import Close
from websockets.http11 import USER_AGENT, Response
from websockets.uri import parse_uri

HEAD_LIMIT = 64 * 1024  # an opening-handshake response larger than this is refused
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009


class _Violation(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class WireConnection(asyncio.Protocol):
    """One client connection (use :func:`open_wire`)."""

    def __init__(self, protocol: ClientProtocol, max_size: int, high_water: int) -> None:
        self._protocol = protocol
        self._max_size = max_size
        self._high_water = high_water
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set on connect
        self._loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[None] = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        # A handshake that failed after its opener gave up (a timeout) is not an error to log.
        self._opened.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._open = False
        self._head = b""  # the handshake response so far
        self._passthrough = False  # a failing handshake: the library reads the whole response
        self._parts: list[bytes] = []  # received bytes not parsed yet (an incomplete frame)
        self._have = 0
        self._need = 0  # bytes the incomplete frame needs before parsing is worth it
        self._fragments: list[bytes] | None = None  # a fragmented message in progress
        self._fragment_size = 0
        self._batches: deque[tuple[int, list[bytes]]] = deque()
        self._queued = 0  # messages in ``_batches``
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._pings: dict[bytes, tuple[float, asyncio.Future[float]]] = {}
        self._close_payload = b""
        self._rcvd: Close | None = None
        self._sent: Close | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        request = self._protocol.connect()
        request.headers["User-Agent"] = USER_AGENT
        self._protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        recv_us = time.time_ns() // 1_000
        if not self._open:
            self._handshake(data, recv_us)
        elif self.close_code is None:
            self._frames(data, recv_us)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._open and not self._opened.done():
            self._protocol.receive_eof()
            self._check_handshake()
            if not self._opened.done():
                why = InvalidMessage("connection closed during the opening handshake")
                self._opened.set_exception(why)
        if self.close_code is None:
            self.close_code = CLOSE_ABNORMAL
        for _, waiter in self._pings.values():
            if not waiter.done():
                waiter.cancel()
        self._pings.clear()
        if not self._lost.done():
            self._lost.set_result(None)
        self._wake()

    # ------------------------------------------------------------------ handshake

    def _handshake(self, data: bytes, recv_us: int) -> None:
        if self._passthrough:
            self._protocol.receive_data(data)
            self._check_handshake()
            return
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > HEAD_LIMIT:
                self._fail_handshake(InvalidMessage("opening handshake response too long"))
            self._head = head
            return
        end += 4
        if not head.startswith(b"HTTP/1.1 101"):
            self._passthrough = True  # not an upgrade: the library reads (and reports) it whole
            self._protocol.receive_data(head)
            self._check_handshake()
            return
        self._head = b""
        self._protocol.receive_data(head[:end])
        self._check_handshake()
        if self._open and len(head) > end:
            self._frames(head[end:], recv_us)

    def _check_handshake(self) -> None:
        for event in self._protocol.events_received():
            if isinstance(event, Response) and not self._opened.done():
                exc = self._protocol.handshake_exc
                if exc is not None:
                    self._fail_handshake(exc)
                else:
                    self._open = True
                    self._opened.set_result(None)
        if self._protocol.handshake_exc is not None and not self._opened.done():
            self._fail_handshake(self._protocol.handshake_exc)

    def _fail_handshake(self, exc: Exception) -> None:
        if not self._opened.done():
            self._opened.set_exception(exc)
        self.transport.abort()

    # ------------------------------------------------------------------ frames in

    def _frames(self, data: bytes, recv_us: int) -> None:
        """Parse every complete frame of what was received; keep the incomplete rest."""
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return  # a large frame still arriving: join once it is whole
            data = b"".join(self._parts)
            self._parts = []
        messages: list[bytes] = []
        n = len(data)
        try:
            pos, need = self._parse(data, messages)
        except _Violation as exc:
            self._deliver(messages, recv_us)
            self._protocol_error(exc.code, exc.reason)
            return
        if pos < 0:  # a close frame ended the connection
            self._deliver(messages, recv_us)
            self._on_close(self._close_payload)
            return
        if pos < n:
            rest = data[pos:]
            self._parts = [rest]
            self._have = len(rest)
            self._need = need
        self._deliver(messages, recv_us)

    def _parse(self, data: bytes, messages: list[bytes]) -> tuple[int, int]:
        """Complete frames of ``data`` into ``messages``: where parsing stopped and what the
        incomplete frame there needs in all (0: its header is incomplete); -1 after a close."""
        n = len(data)
        pos = 0
        need = 0
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            if b1 & 0x80 or b0 & 0x70:
                raise _Violation(CLOSE_PROTOCOL_ERROR, "masked frame or reserved bits set")
            if length > self._max_size:
                raise _Violation(CLOSE_TOO_BIG, f"frame of {length} bytes")
            end = pos + head + length
            if end > n:
                need = end - pos
                break
            payload = data[pos + head : end]
            pos = end
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode in (OP_TEXT, OP_BINARY):
                if self._fragments is not None:
                    raise _Violation(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
                if fin:
                    messages.append(payload)
                else:
                    self._fragments = [payload]
                    self._fragment_size = length
            elif opcode == OP_CONT:
                if self._fragments is None:
                    raise _Violation(CLOSE_PROTOCOL_ERROR, "continuation of nothing")
                self._fragments.append(payload)
                self._fragment_size += length
                if self._fragment_size > self._max_size:
                    raise _Violation(CLOSE_TOO_BIG, f"message of {self._fragment_size} bytes")
                if fin:
                    messages.append(b"".join(self._fragments))
                    self._fragments = None
            elif opcode == OP_PING:
                self._control(fin, length)
                if self._sent is None:
                    self._protocol.send_pong(payload)
                    self._flush()
            elif opcode == OP_PONG:
                self._control(fin, length)
                found = self._pings.pop(payload, None)
                if found is not None and not found[1].done():
                    found[1].set_result(time.monotonic() - found[0])
            elif opcode == OP_CLOSE:
                self._close_payload = payload
                return -1, 0
            else:
                raise _Violation(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        return pos, need

    @staticmethod
    def _control(fin: int, length: int) -> None:
        if not fin or length > 125:
            raise _Violation(CLOSE_PROTOCOL_ERROR, "fragmented or oversized control frame")

    def _deliver(self, messages: list[bytes], recv_us: int) -> None:
        if not messages:
            return
        self._batches.append((recv_us, messages))
        self._queued += len(messages)
        if self._queued >= self._high_water and not self._paused:
            self._paused = True
            self.transport.pause_reading()  # TCP pushes back on the exchange
        self._wake()

    def _on_close(self, payload: bytes) -> None:
        if len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            reason = payload[2:].decode("utf-8", "replace")
        else:
            code, reason = CLOSE_NO_STATUS, ""
        self._rcvd = Close(code, reason)
        self.close_code, self.close_reason = code, reason
        if self._sent is None:  # answer the close, then the TCP connection ends
            self._send_close(1000 if code == CLOSE_NO_STATUS else code, "")
        self.transport.close()
        self._wake()

    def _protocol_error(self, code: int, reason: str) -> None:
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        self._send_close(code, reason)
        self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ frames out

    def _flush(self) -> None:
        for chunk in self._protocol.data_to_send():
            if chunk and not self.transport.is_closing():
                self.transport.write(chunk)

    def _send_close(self, code: int, reason: str) -> None:
        if self._sent is not None or self.transport.is_closing():
            return
        self._sent = Close(code, reason)
        try:
            self._protocol.send_close(code, reason)
        except Exception:  # the library refuses a close in a state it does not expect
            return
        self._flush()

    def _closed_error(self) -> ConnectionClosed:
        both = self._rcvd is not None and self._sent is not None
        return ConnectionClosed(self._rcvd, self._sent, True if both else None)

    # ------------------------------------------------------------------ public face

    @property
    def queued(self) -> int:
        """Messages received and not yet taken by the reader."""
        return self._queued

    @property
    def reading_paused(self) -> bool:
        """The socket is not read (``high_water`` messages wait for the reader)."""
        return self._paused

    async def opened(self) -> None:
        await self._opened

    async def recv_batches(self) -> list[tuple[int, list[bytes]]]:
        """Every (receive time in µs, messages) chunk waiting; waits for one.

        Raises :class:`ConnectionClosed` once the connection ended and nothing waits.
        """
        while not self._batches:
            if self.close_code is not None:
                raise self._closed_error()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        out = list(self._batches)
        self._batches.clear()
        self._queued = 0
        if self._paused and self.close_code is None:
            self._paused = False
            self.transport.resume_reading()
        return out

    async def send(self, message: str | bytes) -> None:
        if self.close_code is not None or self._sent is not None or self.transport.is_closing():
            raise self._closed_error()
        if isinstance(message, str):
            self._protocol.send_text(message.encode())
        else:
            self._protocol.send_binary(message)
        self._flush()

    async def ping(self) -> asyncio.Future[float]:
        """Send a ping; the future resolves (seconds of round trip) when its pong arrives."""
        if self.close_code is not None or self._sent is not None or self.transport.is_closing():
            raise self._closed_error()
        payload = os.urandom(4)
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._pings[payload] = (time.monotonic(), waiter)
        self._protocol.send_ping(payload)
        self._flush()
        return waiter

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake: send a close frame, wait until the server ends the TCP
        connection (callers bound the wait and abort the transport)."""
        if self.close_code is None:
            self._send_close(code, reason)
        await asyncio.shield(self._lost)


async def open_wire(
    url: str,
    *,
    open_timeout: float,
    max_size: int,
    high_water: int,
    ssl_context: ssl.SSLContext | None = None,
) -> WireConnection:
    """Connect, do the opening handshake and return the open connection.

    Raises what the websockets library's ``connect`` raises: ``InvalidURI``,
    ``InvalidHandshake`` (``InvalidStatus`` naming the HTTP status, …),
    ``OSError`` and ``TimeoutError`` (after ``open_timeout`` seconds).
    """
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, max_size=max_size)
    loop = asyncio.get_running_loop()
    context = None
    if uri.secure:
        context = ssl_context if ssl_context is not None else ssl.create_default_context()
    async with asyncio.timeout(open_timeout):
        _, conn = await loop.create_connection(
            lambda: WireConnection(protocol, max_size, high_water),
            uri.host,
            uri.port,
            ssl=context,
            server_hostname=uri.host if context is not None else None,
        )
        try:
            await conn.opened()
        except BaseException:
            conn.transport.abort()
            raise
    return conn


__all__ = ["WireConnection", "open_wire"]
