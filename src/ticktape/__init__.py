"""ticktape: a session engine for crypto market data with one source of truth."""

__version__ = "0.1.0"
