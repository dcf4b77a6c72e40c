"""The HTTP API: ``/api/sessions``, the legacy routes, health, metrics and the dashboard."""

from ticktape.api.app import create_app

__all__ = ["create_app"]
