"""The HTTP API: ``/api/sessions``, the legacy routes, health, metrics and the dashboard.

``create_app`` is imported on first use, so that a client of the API (the CLI's
``ticktape ls``, which needs only ``ticktape.api.models``) does not load the
server, its routes and the strategy engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ticktape.api.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ticktape.api.app import create_app

        return create_app
    raise AttributeError(f"module 'ticktape.api' has no attribute {name!r}")


__all__ = ["create_app"]
