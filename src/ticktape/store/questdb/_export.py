"""Columnar reads from QuestDB: a query's result as Parquet over HTTP ``/exp``.

The PostgreSQL wire sends every value as text in a row of Python objects; a replay
window of 200,000 ticks (600,000 level rows for 3-level books) spent almost all its
time converting them. QuestDB's HTTP export endpoint answers the same SQL as a
Parquet file (``/exp?fmt=parquet``, QuestDB 9), which pyarrow decodes in C++ straight
into numpy arrays: no Python object per row.

``/exp`` takes no bind parameters, so callers inline their values: integers only
(formatted here), and strings through :func:`literal`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from ticktape.errors import StoreError, StoreUnavailable, clip


def literal(text: str) -> str:
    """``text`` as a QuestDB string literal (quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def inline(sql: str, params: list[object]) -> str:
    """``sql`` with each ``%s`` replaced by the next parameter, which must be an int."""
    parts = sql.split("%s")
    if len(parts) != len(params) + 1:
        raise ValueError(f"{len(parts) - 1} placeholders for {len(params)} parameters")
    out = [parts[0]]
    for value, rest in zip(params, parts[1:], strict=True):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"only int parameters can be inlined, not {type(value).__name__}")
        out.append(str(value))
        out.append(rest)
    return "".join(out)


class ParquetExport:
    """Runs read-only SQL on QuestDB's HTTP endpoint and returns the result as an Arrow table.

    One pooled HTTP client per store (opened lazily, closed by :meth:`close`). A server
    silent for ``timeout_s()`` (the store's timeout) fails the read as unavailable, and
    ``on_unavailable`` (the store's health, as for a PostgreSQL-wire read) hears of it."""

    def __init__(
        self,
        http_url: str,
        user: str,
        password: str,
        timeout_s: Callable[[], float],
        on_unavailable: Callable[[StoreUnavailable], None] | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(http_url)
        scheme = "https" if parts.scheme == "https" else "http"
        self.url = f"{scheme}://{parts.hostname}:{parts.port or 9000}/exp"
        self._auth = httpx.BasicAuth(user, password)
        self._timeout_s = timeout_s
        self._on_unavailable = on_unavailable
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def table(self, sql: str, what: str) -> pa.Table:
        """The rows of ``sql``, columns named by its aliases."""
        if self._client is None:
            timeout = httpx.Timeout(self._timeout_s(), connect=5.0)
            self._client = httpx.AsyncClient(auth=self._auth, timeout=timeout)
        try:
            resp = await self._client.get(self.url, params={"query": sql, "fmt": "parquet"})
        except httpx.TransportError as exc:
            error = StoreUnavailable(f"{what}: cannot reach QuestDB over HTTP ({exc!r})")
            if self._on_unavailable is not None:
                self._on_unavailable(error)
            raise error from exc
        if resp.status_code != 200:
            raise StoreError(f"{what}: QuestDB export failed ({_reason(resp)})")
        try:
            return pq.read_table(pa.BufferReader(resp.content))
        except (pa.ArrowException, OSError) as exc:
            raise StoreError(f"{what}: unreadable Parquet from QuestDB ({exc})") from exc


def _reason(resp: httpx.Response) -> str:
    try:
        body: Any = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}: {clip(resp.text)}"
    if isinstance(body, dict) and "error" in body:
        return f"HTTP {resp.status_code}: {clip(str(body['error']))}"
    return f"HTTP {resp.status_code}: {clip(resp.text)}"
