"""The ASGI application: wiring, health, metrics and the dashboard page.

:func:`create_app` builds the app for one :class:`~ticktape.config.Settings`.
Its lifespan opens the store, starts the supervisor (which reconciles orphans
before the first request is served), and on shutdown stops this instance's
sessions gracefully before closing the store. Tests pass a ready ``service``
instead and the lifespan wires nothing; tests and ``bench/chaos.py`` inject store
faults by composition, passing ``runtime_store`` (see :mod:`ticktape.testing`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

from ticktape import __version__
from ticktape.api import charts, compat, routes, strategies, stream
from ticktape.api.auth import Authenticator, load_users
from ticktape.api.errors import error_body, install_error_handlers
from ticktape.api.guard import RequestGuard
from ticktape.api.hot import HotApp, HotRoutes
from ticktape.api.limits import CreateRateLimiter
from ticktape.api.models import ErrorOut, HealthOut, ReadyOut
from ticktape.api.push import close_feed
from ticktape.config import HEALTH_PROBE_TIMEOUT_S, READY_TIMEOUT_S, Settings
from ticktape.domain import SessionStatus
from ticktape.errors import StoreError
from ticktape.metrics import Metrics
from ticktape.redact import redact_url
from ticktape.retention import keep_retention
from ticktape.runners import default_runners
from ticktape.runtime.budget import enforce_disk_budget
from ticktape.runtime.supervisor import Supervisor
from ticktape.service import SessionService
from ticktape.store import open_store
from ticktape.store.base import SessionQuery, Store
from ticktape.strategies import default_registry

log = logging.getLogger(__name__)

# What the system routes may answer besides 200: the request guard's 400/401 and a
# failing store's 503.
SYSTEM_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 503)
}


async def _status_counts(svc: SessionService) -> dict[SessionStatus, int]:
    return {
        status: await svc.count(SessionQuery(statuses=frozenset({status}), include_deleted=True))
        for status in SessionStatus
    }


DASHBOARD_MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ticktape: dashboard not built</title></head>
<body style="font: 15px system-ui, sans-serif; max-width: 44rem; margin: 3rem auto">
<h1>The dashboard is not built</h1>
<p>This ticktape was installed without the dashboard's built files
(<code>ticktape/web/dist</code>). Build them with Node.js from the source tree:
<code>cd dashboard &amp;&amp; npm ci &amp;&amp; npm run build</code> (<code>scripts/install</code>
does this), or install a ticktape wheel, which ships them.</p>
<p>The API works without it: <a href="/docs">/docs</a>.</p>
</body></html>
"""


def dashboard_dir() -> Path | None:
    """The built dashboard (``npm run build`` in dashboard/), or None if it is missing."""
    dist = Path(str(resources.files("ticktape").joinpath("web", "dist")))
    return dist if (dist / "index.html").is_file() else None


def create_app(
    settings: Settings,
    *,
    service: SessionService | None = None,
    metrics: Metrics | None = None,
    runtime_store: Callable[[Store], Store] | None = None,
    hot_routes: bool = True,
) -> FastAPI:
    """The ticktape API for ``settings``.

    With ``service`` (tests, embedding), that service is used as is and the app
    opens, starts and closes nothing; otherwise the lifespan builds everything
    from ``settings.store_url``. ``runtime_store`` wraps the backend under the retry
    layer of the store handle the supervisor (runners, heartbeats, reconciler) uses,
    not the API's own — for fault injection (``ticktape.testing.FaultyStore``) only:
    injected faults are retried as the store's own are. ``hot_routes=False`` serves
    every request through FastAPI (:mod:`ticktape.api.hot`; tests compare the two).
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
        own_metrics = app.state.metrics
        store = open_store(
            settings.store_url,
            settings.retry,
            on_retry=own_metrics.store_retry,
            actor=settings.instance,
            timeout_s=settings.store_timeout_s,
            log_transaction_max_s=settings.questdb_log_transaction_max_s,
        )
        await store.open()
        try:
            supervisor_store = (
                store if runtime_store is None else store.over(runtime_store(store.inner))
            )
            supervisor = Supervisor(
                supervisor_store, settings, own_metrics, default_runners(app.state.strategies)
            )
            await supervisor.start()
            app.state.service = SessionService(store, supervisor, settings, own_metrics)
            log.info(
                "ticktape %s serving as %s with store %s",
                __version__,
                supervisor.owner,
                redact_url(settings.store_url),
            )
            budget = None
            if settings.disk_budget_mb is not None:
                budget = asyncio.create_task(
                    enforce_disk_budget(
                        store,
                        app.state.service,
                        settings.disk_budget_mb,
                        settings.heartbeat_interval_s,
                    ),
                    name="ticktape-disk-budget",
                )
            retention = None
            if settings.retention is not None:
                retention = asyncio.create_task(
                    keep_retention(store, settings.retention, settings.gc_interval_s),
                    name="ticktape-retention",
                )
            try:
                yield
            finally:
                for task in (budget, retention):
                    if task is not None:
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                await supervisor.shutdown(settings.shutdown_grace_s)
        finally:
            await store.close()

    app = HotApp(
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
    app.state.create_limiter = CreateRateLimiter(settings.create_rate_per_min)
    if service is not None:
        app.state.service = service
    install_error_handlers(app)
    app.include_router(stream.router)  # before /api/sessions/{session_id}
    app.include_router(routes.router)
    app.include_router(compat.router)
    app.include_router(strategies.router)
    app.include_router(compat.ws_router)
    app.include_router(compat.auth_router)
    app.include_router(charts.router)
    dist = dashboard_dir()
    if dist is not None:
        page = (dist / "index.html").read_text(encoding="utf-8")
        app.mount("/assets", StaticFiles(directory=dist / "assets"), name="dashboard-assets")

    async def dashboard_page() -> HTMLResponse:
        """The dashboard's one HTML page; its script draws the view the URL names."""
        if dist is None:
            return HTMLResponse(DASHBOARD_MISSING, status_code=503)
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    for path in ("/", "/ui", "/ui/sessions/{session_id}", "/ui/compare"):
        app.add_api_route(
            path,
            dashboard_page,
            methods=["GET"],
            response_class=HTMLResponse,
            include_in_schema=False,
        )

    @app.get("/health", response_model=HealthOut, tags=["system"], responses=SYSTEM_ERRORS)
    async def health(request: Request) -> HealthOut:
        """Liveness: 200 while the process serves; says whether the store is failing.

        A load balancer that should route only to instances whose store works uses
        ``/ready`` instead.
        """
        svc: SessionService = request.app.state.service
        problem = svc.store_problem()
        if problem is None:
            try:  # a bounded look at the store: one read (QuestDB down shows here)
                async with asyncio.timeout(HEALTH_PROBE_TIMEOUT_S):
                    await svc.check_store()
            except StoreError as exc:
                problem = str(exc)
            except TimeoutError:
                problem = f"the store did not answer within {HEALTH_PROBE_TIMEOUT_S:g}s"
        return HealthOut(
            status="ok" if problem is None else "degraded",
            instance=settings.instance,
            store=redact_url(settings.store_url),
            store_ok=problem is None,
            store_error=None if problem is None else redact_url(problem),
        )

    @app.get(
        "/ready",
        response_model=ReadyOut,
        tags=["system"],
        responses=SYSTEM_ERRORS,
    )
    async def ready(request: Request) -> Response:
        """Readiness: 200 when the store answers and takes writes, else 503 within a bound."""
        svc: SessionService = request.app.state.service
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await svc.check_store()
        except (StoreError, TimeoutError) as exc:
            message = (
                f"the store did not answer within {READY_TIMEOUT_S:g}s"
                if isinstance(exc, TimeoutError)
                else redact_url(str(exc))
            )
            return JSONResponse(error_body("store_unavailable", message), status_code=503)
        return JSONResponse(ReadyOut(status="ready").model_dump())

    @app.get("/metrics", tags=["system"], response_class=Response, responses=SYSTEM_ERRORS)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus text format; the sessions gauge is refreshed from the store first.

        With the store failing, the gauges keep their last values and
        ``ticktape_store_up`` is 0: the metrics answer, whatever the store does.
        """
        svc: SessionService = request.app.state.service
        registry: Metrics = request.app.state.metrics
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                counts = await _status_counts(svc)
        except (StoreError, TimeoutError):
            up = False
        else:
            registry.set_status_counts(counts)
            up = svc.store_problem() is None
        registry.store_status(
            up=up,
            write_failures=svc.store_write_failures(),
            symbol_misses=svc.store_symbol_misses(),
        )
        return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)

    # Host, credentials and body size are checked before anything reads the request
    # (only CORS, which reads no body, sits outside).
    app.add_middleware(RequestGuard, settings=settings, authenticator=app.state.authenticator)
    if hot_routes and not settings.cors_origins:
        guard = RequestGuard(app, settings=settings, authenticator=app.state.authenticator)
        app.hot = HotRoutes(app, guard)  # in front of FastAPI: ticktape.api.hot
    if settings.cors_origins:
        # Browsers on these origins may call the API with their cookies (none by default);
        # outside the guard, so that its refusals reach the page with CORS headers too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-CSRF-Token"],
        )
    return app


__all__ = ["create_app", "redact_url"]
