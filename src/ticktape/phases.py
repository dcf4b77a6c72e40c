"""The handful of INFO lines that say where a shutdown's time went.

A shutdown of many sessions logs its phases — in the supervisor (stops, drains, ends)
and, on QuestDB, in the store (seal gathering, count groups, the session log) — each
as one line ``stop phase <name>: k=v ...`` with seconds since the shutdown began.
``bench/shutdown.py`` reads them from each instance's log, so both layers write them
the same way, here. No I/O but the logger's.
"""

from __future__ import annotations

import logging


def log_phase(log: logging.Logger, name: str, **figures: object) -> None:
    """Log ``stop phase <name>: k=v ...`` at INFO on ``log`` (floats with two decimals)."""
    if not log.isEnabledFor(logging.INFO):
        return
    text = " ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    log.info("stop phase %s: %s", name, text)


__all__ = ["log_phase"]
