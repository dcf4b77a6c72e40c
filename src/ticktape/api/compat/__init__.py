"""The original platform's routes, requests and answers (docs/compat.md).

A drop-in backend for the original platform's clients: the routes they call,
the bodies they send, the envelopes and field names they read — all served
by the one :class:`~ticktape.service.SessionService`, without weakening
ticktape's own ``/api/sessions``.
"""

from ticktape.api.compat._answers import error_response
from ticktape.api.compat._auth import router as auth_router
from ticktape.api.compat._routes import router
from ticktape.api.compat._ws import router as ws_router

__all__ = ["auth_router", "error_response", "router", "ws_router"]
