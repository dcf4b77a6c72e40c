"""Who may change things: the bearer token (API, CLI) and browser sign-in (cookie + CSRF).

- **Bearer token** (``TICKTAPE_API_TOKEN``): ``Authorization: Bearer <token>``.
- **Users** (``TICKTAPE_USERS_FILE``, written by ``ticktape user add``): passwords
  hashed with Argon2id (argon2-cffi). ``POST /api/v1/auth/login`` sets a signed,
  HttpOnly, SameSite=Strict cookie; every cookie-authenticated change must also carry
  ``X-CSRF-Token`` with a token from ``GET /csrf-token`` bound to that cookie (a page
  on another site can make the browser send the cookie, never read the token).
- Failed logins are throttled per user name and per client address.

Cookies and CSRF tokens are stateless, signed with ``TICKTAPE_SECRET_KEY`` (HMAC-SHA256),
so every instance sharing the key accepts them; without a key each process makes one
at start-up and its cookies last until it restarts. Logout clears the cookie in the
browser; a copied cookie stays valid until it expires (``SESSION_COOKIE_S``).

With neither a token nor users configured, changes are open (the server listens on
loopback by default) and ``ticktape serve`` says so at start-up. Reads stay open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ticktape.errors import TicktapeError, Unauthorized, ValidationError

COOKIE_NAME = "ticktape_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_COOKIE_S = 12 * 3600  # a browser sign-in lasts this long
CSRF_TOKEN_S = 3600  # the original's CSRF token lifetime, as its client expects
LOGIN_FAILURES_ALLOWED = 5  # failed logins per user name or client before a pause
LOGIN_WINDOW_S = 300.0  # ... counted over this window
THROTTLED_CLIENTS_MAX = 10_000  # remembered (name or address) keys, oldest forgotten first
MAX_USERNAME_CHARS = 64
MAX_PASSWORD_CHARS = 1024

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("ticktape: compare against something when the user is unknown")


class Forbidden(Unauthorized):
    """Signed in, but the request lacks a valid CSRF token."""

    code = "csrf_failed"


class TooManyAttempts(TicktapeError):
    code = "too_many_attempts"

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            f"too many failed sign-ins; try again in {retry_after_s:.0f}s",
            retry_after_s=retry_after_s,
        )
        self.retry_after_s = retry_after_s


# ---------------------------------------------------------------------------- users file


def _check_name(username: str) -> str:
    name = username.strip()
    if not name or len(name) > MAX_USERNAME_CHARS or not name.isprintable():
        raise ValidationError(
            f"a user name is 1 to {MAX_USERNAME_CHARS} printable characters", field="username"
        )
    return name


def load_users(path: Path | None) -> dict[str, str]:
    """``{name: argon2 hash}`` from the users file; empty without one."""
    if path is None or not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    users = data.get("users", {}) if isinstance(data, dict) else {}
    return {str(name): str(entry["hash"]) for name, entry in users.items()}


def add_user(path: Path, username: str, password: str) -> None:
    """Add or replace a user; the file is rewritten atomically, readable by its owner only."""
    name = _check_name(username)
    if not password or len(password) > MAX_PASSWORD_CHARS:
        raise ValidationError(f"a password is 1 to {MAX_PASSWORD_CHARS} characters")
    users = {n: {"hash": h} for n, h in load_users(path).items()}
    users[name] = {"hash": _hasher.hash(password)}
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"users": users}, out, indent=2, sort_keys=True)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- signing


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SignedIn:
    username: str
    nonce: str


class Authenticator:
    """Checks passwords, issues and verifies cookies and CSRF tokens, throttles guessing."""

    def __init__(self, users: dict[str, str], secret: bytes | None) -> None:
        self.users = users
        self._secret = secret or secrets.token_bytes(32)
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def _sign(self, kind: str, payload: dict[str, object]) -> str:
        body = _b64(json.dumps({**payload, "k": kind}, separators=(",", ":")).encode())
        mac = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(mac)}"

    def _verify(self, kind: str, token: str | None) -> dict[str, object] | None:
        if not token or token.count(".") != 1:
            return None
        body, mac = token.split(".")
        want = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(want, _unb64(mac)):
                return None
            payload = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(payload, dict) or payload.get("k") != kind:
            return None
        expires = payload.get("exp")
        if not isinstance(expires, int | float) or expires < time.time():
            return None
        return payload

    # -- sign-in

    def _throttle_keys(self, username: str, client: str) -> list[str]:
        return [f"user:{username}", f"addr:{client}"]

    def _recent(self, key: str, now: float) -> list[float]:
        return [t for t in self._failures.get(key, []) if now - t < LOGIN_WINDOW_S]

    def check_throttle(self, username: str, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in self._throttle_keys(username, client):
                recent = self._recent(key, now)
                if len(recent) >= LOGIN_FAILURES_ALLOWED:
                    raise TooManyAttempts(LOGIN_WINDOW_S - (now - recent[0]))

    def _failed(self, username: str, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in self._throttle_keys(username, client):
                self._failures[key] = [*self._recent(key, now), now]
                self._failures.move_to_end(key)
            while len(self._failures) > THROTTLED_CLIENTS_MAX:
                self._failures.popitem(last=False)

    def login(self, username: str, password: str, client: str) -> str:
        """A session cookie value for a correct password; raises otherwise."""
        name = username.strip()[:MAX_USERNAME_CHARS]
        self.check_throttle(name, client)
        stored = self.users.get(name)
        try:
            _hasher.verify(stored or _DUMMY_HASH, password[:MAX_PASSWORD_CHARS])
            ok = stored is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            self._failed(name, client)
            raise Unauthorized("wrong user name or password")
        with self._lock:
            for key in self._throttle_keys(name, client):
                self._failures.pop(key, None)
        return self._cookie(name, secrets.token_urlsafe(12))

    def _cookie(self, username: str, nonce: str) -> str:
        expires = int(time.time()) + SESSION_COOKIE_S
        return self._sign("session", {"u": username, "n": nonce, "exp": expires})

    def renew(self, who: SignedIn) -> str:
        """A fresh cookie for the same sign-in (its CSRF tokens stay valid)."""
        return self._cookie(who.username, who.nonce)

    def signed_in(self, cookie: str | None) -> SignedIn | None:
        payload = self._verify("session", cookie)
        if payload is None or payload.get("u") not in self.users:
            return None
        return SignedIn(str(payload["u"]), str(payload["n"]))

    # -- CSRF

    def csrf_token(self, who: SignedIn | None) -> str:
        nonce = who.nonce if who else "anonymous"
        return self._sign("csrf", {"n": nonce, "exp": int(time.time()) + CSRF_TOKEN_S})

    def csrf_valid(self, who: SignedIn, token: str | None) -> bool:
        payload = self._verify("csrf", token)
        return payload is not None and payload.get("n") == who.nonce


# ---------------------------------------------------------------------------- access


def check_access(
    api_token: str | None,
    auth: Authenticator,
    *,
    authorization: str | None,
    cookie: str | None,
    csrf: str | None,
    change: bool,
) -> None:
    """Raise unless the request carries what this server asks for; nothing when it asks nothing.

    Accepted: ``Authorization: Bearer <TICKTAPE_API_TOKEN>``; or a valid sign-in cookie,
    plus, on a ``change``, an ``X-CSRF-Token`` bound to it. A bearer token that is given
    and wrong is refused (401) even beside a cookie; a cookie without its CSRF token on a
    change is 403 ``csrf_failed``. Used by the request guard (before the body is read)
    and by the routes' own dependency.
    """
    if not api_token and not auth.enabled:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        token = api_token or ""
        if token and hmac.compare_digest(given.strip().encode(), token.encode()):
            return
        raise Unauthorized("invalid bearer token")
    who = auth.signed_in(cookie)
    if who is not None:
        if not change or auth.csrf_valid(who, csrf):
            return
        raise Forbidden(
            f"a signed-in change needs the {CSRF_HEADER} header with a token from GET /csrf-token"
        )
    what = "changes" if change else "every request"
    if not auth.enabled:
        raise Unauthorized(f"this server requires 'Authorization: Bearer <token>' on {what}")
    raise Unauthorized(
        "this server requires 'Authorization: Bearer <token>' or a browser sign-in "
        f"(POST /api/v1/auth/login) on {what}"
    )
