"""Browser sign-in as the original platform's clients call it (see :mod:`ticktape.api.auth`).

- ``POST /api/v1/auth/login`` ``{"username", "password"}`` → ``data: {user: {user_id,
  username, permissions}, csrf_token, expires_in}`` and the session cookie;
  401 ``unauthorized`` for a wrong name or password, 429 ``too_many_attempts`` (with
  ``Retry-After``) while throttled.
- ``POST /api/v1/auth/refresh`` renews the cookie of a signed-in browser; 401 otherwise.
- ``POST /api/v1/auth/logout`` clears the cookie.
- ``GET /csrf-token`` → ``data: {token, expires_in}``, bound to the browser's sign-in.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ticktape.api.auth import (
    COOKIE_NAME,
    CSRF_TOKEN_S,
    SESSION_COOKIE_S,
    Authenticator,
    SignedIn,
)
from ticktape.api.compat._answers import ORIGINAL_ERRORS, envelope
from ticktape.api.compat._routes import CompatRoute, _json_body
from ticktape.errors import Unauthorized, UnsupportedError, ValidationError

router = APIRouter(tags=["original platform"], route_class=CompatRoute, responses=ORIGINAL_ERRORS)


class SignInNotConfigured(UnsupportedError):
    code = "sign_in_not_configured"


def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.authenticator
    return auth


def _user(name: str) -> dict[str, Any]:
    return {"user_id": name, "username": name, "permissions": ["sessions"]}


def _signed_in_answer(request: Request, auth: Authenticator, cookie: str) -> JSONResponse:
    who = auth.signed_in(cookie)
    assert who is not None
    response = JSONResponse(
        envelope(
            {
                "user": _user(who.username),
                "csrf_token": auth.csrf_token(who),
                "expires_in": SESSION_COOKIE_S,
            }
        )
    )
    response.set_cookie(
        COOKIE_NAME,
        cookie,
        max_age=SESSION_COOKIE_S,
        path="/",
        httponly=True,  # not readable by scripts
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/api/v1/auth/login")
async def login(request: Request) -> JSONResponse:
    auth = authenticator(request)
    if not auth.enabled:
        raise SignInNotConfigured(
            "browser sign-in is not configured on this server: add users with "
            "'ticktape user add' and set TICKTAPE_USERS_FILE"
        )
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object")
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise ValidationError("username and password are required strings")
    client = request.client.host if request.client else "unknown"
    cookie = auth.login(username, password, client)
    return _signed_in_answer(request, auth, cookie)


@router.post("/api/v1/auth/refresh")
async def refresh(request: Request) -> JSONResponse:
    auth = authenticator(request)
    who = auth.signed_in(request.cookies.get(COOKIE_NAME))
    if who is None:
        raise Unauthorized("not signed in, or the sign-in expired")
    return _signed_in_answer(request, auth, auth.renew(who))


@router.post("/api/v1/auth/logout")
async def logout() -> JSONResponse:
    response = JSONResponse(envelope({"status": "logged_out"}))
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


@router.get("/csrf-token")
async def csrf_token(request: Request) -> JSONResponse:
    auth = authenticator(request)
    who: SignedIn | None = auth.signed_in(request.cookies.get(COOKIE_NAME))
    return JSONResponse(envelope({"token": auth.csrf_token(who), "expires_in": CSRF_TOKEN_S}))
