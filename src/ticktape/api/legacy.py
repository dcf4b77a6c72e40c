"""Routes that clients of the original system call, served by the same service.

The original system answered these from three places that disagreed (DESIGN.md,
"Why it exists"). Here they are a different *shape* over the same
:class:`~ticktape.service.SessionService` calls as ``/api/sessions``: a start
answers only once the session is durable and visible, with the session's own
id; an unknown id is a 404 with the standard error body.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header

from ticktape.api.models import (
    LegacySessionListOut,
    LegacySessionOut,
    LegacyStartOut,
    LegacyStartRequest,
    LegacyStopOut,
    LegacyStopRequest,
    legacy_session_out,
    session_out,
)
from ticktape.api.routes import (
    ERRORS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    Authorized,
    RateLimited,
    Service,
    session_query,
)
from ticktape.store.base import SessionQuery

router = APIRouter(tags=["legacy"], responses=ERRORS)


@router.post(
    "/sessions/start",
    response_model=LegacyStartOut,
    dependencies=[Authorized, RateLimited],
)
async def legacy_start(
    body: LegacyStartRequest,
    service: Service,
    idempotency_key: Annotated[str | None, Header(max_length=MAX_IDEMPOTENCY_KEY_CHARS)] = None,
) -> LegacyStartOut:
    """Start a session; ``session_id`` is the id of the session, never a command id."""
    session = await service.create(body.spec(), idempotency_key=idempotency_key or None)
    return LegacyStartOut(session_id=session.id, session=session_out(session))


@router.post("/sessions/stop", response_model=LegacyStopOut, dependencies=[Authorized])
async def legacy_stop(body: LegacyStopRequest, service: Service) -> LegacyStopOut:
    """Ask a session to stop; ``status`` is the session's status after the request."""
    session = await service.stop(body.session_id)
    return LegacyStopOut(
        status=session.status.value, session_id=session.id, session=session_out(session)
    )


@router.get("/sessions/{session_id}", response_model=LegacySessionOut)
async def legacy_get(session_id: str, service: Service) -> LegacySessionOut:
    return legacy_session_out(await service.get(session_id))


@router.get("/api/data-collection/sessions", response_model=LegacySessionListOut)
async def legacy_list(
    service: Service, query: Annotated[SessionQuery, Depends(session_query)]
) -> LegacySessionListOut:
    """Like ``GET /api/sessions``; ``total_count`` counts every match, not just this page."""
    page = await service.list_sessions(query)
    total = await service.count(query)
    return LegacySessionListOut(
        sessions=[legacy_session_out(s) for s in page.sessions],
        total_count=total,
        next_cursor=page.next_cursor,
    )
