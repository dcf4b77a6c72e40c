"""A small synchronous client for the ticktape HTTP API.

Answers are parsed into the API's own response models, so the CLI (and any
script) gets typed objects. An error answered by the server is raised as
:class:`ApiError` carrying the server's ``code`` and ``message``; a server that
cannot be reached is :class:`ServerUnreachable`. Both are ticktape errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from ticktape.api.models import (
    BookListOut,
    EventListOut,
    EventOut,
    HealthOut,
    QualityOut,
    ResultRowsOut,
    ResultSummaryOut,
    SessionListOut,
    SessionOut,
    TradeListOut,
)
from ticktape.config import DEFAULT_URL, STOP_WAIT_TIMEOUT_S
from ticktape.errors import TicktapeError

DEFAULT_TIMEOUT_S = 10.0  # per request, except a waiting stop which gets its own bound
STOP_WAIT_MARGIN_S = 10.0  # extra client time over the server-side wait of a stop

M = TypeVar("M", bound=pydantic.BaseModel)


class ApiError(TicktapeError):
    """The server answered with an error; ``code`` and ``message`` are the server's."""

    def __init__(self, status_code: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, status_code=status_code, code=code, field=field)
        self.status_code = status_code
        self.code = code
        self.field = field


class ServerUnreachable(TicktapeError):
    """No answer from the server: not running, wrong URL, or too slow."""

    code = "unreachable"


class TicktapeClient:
    """``TicktapeClient("http://127.0.0.1:8765", token=...)``; use as a context manager.

    ``http`` lets a caller supply its own :class:`httpx.Client` (its base URL is
    then ignored in favour of ``url``).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._http = http if http is not None else httpx.Client(timeout=timeout_s)
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TicktapeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method,
                self.url + path,
                params=clean,
                json=json,
                headers={**self._headers, **(headers or {})},
                timeout=timeout_s or self._timeout_s,
            )
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(f"ticktape at {self.url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach ticktape at {self.url}: is `ticktape serve` running?"
            ) from exc
        if response.is_success:
            try:
                return response.json()
            except ValueError as exc:
                raise ApiError(
                    response.status_code,
                    "bad_response",
                    f"{method} {path}: the server's answer is not JSON",
                ) from exc
        raise _error_from(response)

    def _get_model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        data = self._request(method, path, **kwargs)
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ApiError(
                200, "bad_response", f"{method} {path}: unexpected answer from the server"
            ) from exc

    @staticmethod
    def _session_path(session_id: str, suffix: str = "") -> str:
        return f"/api/sessions/{quote(session_id, safe='')}{suffix}"

    # ------------------------------------------------------------------ API

    def health(self) -> HealthOut:
        return self._get_model(HealthOut, "GET", "/health")

    def create_session(
        self,
        kind: str,
        symbols: list[str] | None,
        *,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> SessionOut:
        """``options``: exchange, data_types, duration, book_depth, seed, rate_per_s, ...;
        for a backtest source_session, strategy, params, speed, ... (``symbols`` None:
        all of the source's)."""
        body = {
            "kind": kind,
            **({} if symbols is None else {"symbols": symbols}),
            **{k: v for k, v in options.items() if v is not None},
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._get_model(SessionOut, "POST", "/api/sessions", json=body, headers=headers)

    def get_session(self, session_id: str) -> SessionOut:
        return self._get_model(SessionOut, "GET", self._session_path(session_id))

    def list_sessions(
        self,
        *,
        statuses: Iterable[str] = (),
        kind: str | None = None,
        symbol: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        include_deleted: bool = False,
    ) -> SessionListOut:
        params: dict[str, Any] = {
            "status": list(statuses) or None,
            "kind": kind,
            "symbol": symbol,
            "limit": limit,
            "cursor": cursor,
            "include_deleted": "true" if include_deleted else None,
        }
        return self._get_model(SessionListOut, "GET", "/api/sessions", params=params)

    def stop_session(
        self, session_id: str, *, wait: bool = False, timeout_s: float = STOP_WAIT_TIMEOUT_S
    ) -> SessionOut:
        params = {"wait": "true" if wait else "false", "timeout": timeout_s}
        return self._get_model(
            SessionOut,
            "POST",
            self._session_path(session_id, "/stop"),
            params=params,
            timeout_s=(timeout_s + STOP_WAIT_MARGIN_S) if wait else None,
        )

    def delete_session(self, session_id: str) -> SessionOut:
        return self._get_model(SessionOut, "DELETE", self._session_path(session_id))

    def events(self, session_id: str) -> list[EventOut]:
        path = self._session_path(session_id, "/events")
        return self._get_model(EventListOut, "GET", path).events

    def export(
        self,
        session_id: str,
        target: BinaryIO,
        *,
        fmt: str = "csv",
        data: str = "trades",
        symbol: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream an export into ``target``; the bytes written (``progress`` gets each chunk's
        size as it arrives)."""
        params = {"format": fmt, "data": data, "symbol": symbol}
        url = self.url + self._session_path(session_id, "/export")
        written = 0
        try:
            with self._http.stream(
                "GET",
                url,
                params={k: v for k, v in params.items() if v is not None},
                headers={**self._headers, "Accept": "*/*"},
                timeout=self._timeout_s,
            ) as response:
                if not response.is_success:
                    response.read()
                    raise _error_from(response)
                for chunk in response.iter_bytes():
                    target.write(chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(f"ticktape at {self.url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                f"cannot reach ticktape at {self.url}: is `ticktape serve` running?"
            ) from exc
        return written

    def quality(self, session_id: str) -> QualityOut:
        return self._get_model(QualityOut, "GET", self._session_path(session_id, "/quality"))

    def trades(self, session_id: str, **window: Any) -> TradeListOut:
        """Stored trades (``symbol``, ``start``, ``end``, ``limit``: see :meth:`_ticks`)."""
        return self._ticks(TradeListOut, session_id, "/trades", **window)

    def orderbook(self, session_id: str, **window: Any) -> BookListOut:
        """Stored order-book snapshots (same window as :meth:`trades`)."""
        return self._ticks(BookListOut, session_id, "/orderbook", **window)

    def results(self, session_id: str) -> ResultSummaryOut:
        path = self._session_path(session_id, "/results")
        return self._get_model(ResultSummaryOut, "GET", path)

    def result_rows(
        self, session_id: str, table: str, *, cursor: str | None = None, limit: int | None = None
    ) -> ResultRowsOut:
        """One page of a backtest's ``orders``, ``fills`` or ``equity``."""
        path = self._session_path(session_id, f"/{table}")
        params = {"cursor": cursor, "limit": limit}
        return self._get_model(ResultRowsOut, "GET", path, params=params)

    def _ticks(
        self,
        model: type[M],
        session_id: str,
        suffix: str,
        *,
        symbol: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> M:
        params = {
            "symbol": symbol,
            "start": None if start is None else start.isoformat(),
            "end": None if end is None else end.isoformat(),
            "limit": limit,
        }
        return self._get_model(model, "GET", self._session_path(session_id, suffix), params=params)


def _error_from(response: httpx.Response) -> ApiError:
    try:
        detail = response.json()["error"]
        return ApiError(
            response.status_code, str(detail["code"]), str(detail["message"]), detail.get("field")
        )
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().replace("\n", " ")[:200]
        return ApiError(
            response.status_code,
            "http_error",
            f"HTTP {response.status_code} from {response.request.url}: {text}",
        )
