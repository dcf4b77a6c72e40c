"""The ASGI application: wiring, health, metrics and the dashboard page.

:func:`create_app` builds the app for one :class:`~ticktape.config.Settings`.
Its lifespan opens the store, starts the supervisor (which reconciles orphans
before the first request is served), and on shutdown stops this instance's
sessions gracefully before closing the store. Tests pass a ready ``service``
instead and the lifespan wires nothing; tests and ``bench/chaos.py`` inject store
faults by composition, passing ``runtime_store`` (see :mod:`ticktape.testing`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ticktape import __version__
from ticktape.api import compat, routes, strategies, stream
from ticktape.api.auth import Authenticator, load_users
from ticktape.api.errors import install_error_handlers
from ticktape.api.models import HealthOut
from ticktape.api.push import close_feed
from ticktape.config import Settings
from ticktape.domain import SessionStatus
from ticktape.metrics import Metrics
from ticktape.runtime.supervisor import Supervisor
from ticktape.service import SessionService
from ticktape.store import open_store
from ticktape.store.base import SessionQuery, Store
from ticktape.strategies import default_registry

log = logging.getLogger(__name__)

_PASSWORD_RE = re.compile(r"(://[^:/@\s]*):[^@/\s]+@")


def redact_url(url: str) -> str:
    """``questdb://admin:secret@host`` → ``questdb://admin:***@host`` (nested URLs too)."""
    return _PASSWORD_RE.sub(r"\1:***@", url)


def _dashboard_html() -> str:
    return resources.files("ticktape").joinpath("web", "index.html").read_text(encoding="utf-8")


def create_app(
    settings: Settings,
    *,
    service: SessionService | None = None,
    metrics: Metrics | None = None,
    runtime_store: Callable[[Store], Store] | None = None,
) -> FastAPI:
    """The ticktape API for ``settings``.

    With ``service`` (tests, embedding), that service is used as is and the app
    opens, starts and closes nothing; otherwise the lifespan builds everything
    from ``settings.store_url``. ``runtime_store`` wraps the store handle the
    supervisor (runners, heartbeats, reconciler) uses, not the API's own — for
    fault injection (``ticktape.testing.FaultyStore``) only.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with own_lifespan(app):
            try:
                yield
            finally:
                await close_feed(app)  # push clients first: the feed reads the store

    @asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            yield
            return
        store = open_store(settings.store_url)
        await store.open()
        try:
            own_metrics = app.state.metrics
            supervisor_store = store if runtime_store is None else runtime_store(store)
            supervisor = Supervisor(supervisor_store, settings, own_metrics)
            await supervisor.start()
            app.state.service = SessionService(store, supervisor, settings, own_metrics)
            log.info(
                "ticktape %s serving as %s with store %s",
                __version__,
                supervisor.owner,
                redact_url(settings.store_url),
            )
            try:
                yield
            finally:
                await supervisor.shutdown()
        finally:
            await store.close()

    app = FastAPI(
        title="ticktape",
        version=__version__,
        summary="Sessions over crypto market data, with one source of truth.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    strategies_dir = Path(settings.strategies_dir) if settings.strategies_dir else None
    app.state.strategies = default_registry(strategies_dir)
    app.state.authenticator = Authenticator(
        load_users(settings.users_file),
        settings.secret_key.encode() if settings.secret_key else None,
    )
    app.state.metrics = metrics or Metrics()
    if service is not None:
        app.state.service = service
    install_error_handlers(app)
    app.include_router(stream.router)  # before /api/sessions/{session_id}
    app.include_router(routes.router)
    app.include_router(compat.router)
    app.include_router(strategies.router)
    app.include_router(compat.ws_router)
    app.include_router(compat.auth_router)
    if settings.cors_origins:
        # Browsers on these origins may call the API with their cookies (none by default).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-CSRF-Token"],
        )
    dashboard = _dashboard_html()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(dashboard)

    @app.get("/health", response_model=HealthOut, tags=["system"])
    async def health() -> HealthOut:
        return HealthOut(
            status="ok", instance=settings.instance, store=redact_url(settings.store_url)
        )

    @app.get("/metrics", tags=["system"], response_class=Response)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus text format; the sessions gauge is refreshed from the store first."""
        svc: SessionService = request.app.state.service
        registry: Metrics = request.app.state.metrics
        counts = {
            status: await svc.count(
                SessionQuery(statuses=frozenset({status}), include_deleted=True)
            )
            for status in SessionStatus
        }
        registry.set_status_counts(counts)
        return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)

    return app
