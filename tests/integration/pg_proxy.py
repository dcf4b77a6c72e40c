"""A TCP proxy in front of a QuestDB's PG-wire port that can close new connections
during their handshake, as a loaded server does when a handshake outlasts its
``pg.net.connection.timeout``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ticktape.store.questdb import QuestDBAddress


class HandshakeCloser:
    """Forwards every connection to ``address``'s PG-wire port, except the next
    :attr:`doomed` new ones: each is closed when the server first answers it (libpq's
    first round trip: its SSL request), so the client sees the server close it."""

    def __init__(self, address: QuestDBAddress) -> None:
        self.address = address
        self.doomed = 0
        self.closed = 0  # connections closed so far
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()  # closed when serving ends
        self._handlers: set[asyncio.Future[Any]] = set()  # awaited when serving ends

    def url(self) -> str:
        """A store URL whose PG wire goes through this proxy (ILP straight to the server)."""
        a = self.address
        return f"questdb://{a.host}:{self.port}?ilp={a.ilp_url}&prefix={a.prefix}"

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        server_r, server_w = await asyncio.open_connection(self.address.host, self.address.pg_port)
        self._writers.update((client_w, server_w))
        if self.doomed > 0:
            self.doomed -= 1
            server_w.write(await client_r.read(65536))
            await server_r.read(65536)
            self.closed += 1
            for w in (client_w, server_w):
                w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[HandshakeCloser]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for writer in self._writers:
                writer.close()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
