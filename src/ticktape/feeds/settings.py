"""How the WebSocket connectors connect: one settings object, production defaults."""

from __future__ import annotations

from dataclasses import dataclass

from ticktape.feeds.contract import (
    BATCH_INTERVAL_S,
    BATCH_ROWS,
    QUEUE_ITEMS,
    RECONNECT_BASE_S,
    RECONNECT_MAX_S,
    STALE_AFTER_S,
)

OPEN_TIMEOUT_S = 10.0  # a connection attempt (TCP + TLS + handshake) gives up after this
READY_TIMEOUT_S = 30.0  # a rotation candidate must be ready within this, or it is retried
HEALTHY_AFTER_S = 30.0  # a connection that served this long resets the reconnect backoff


@dataclass(frozen=True)
class StreamSettings:
    """How a connector connects; every default is the production value."""

    stale_after_s: float = STALE_AFTER_S
    reconnect_base_s: float = RECONNECT_BASE_S
    reconnect_max_s: float = RECONNECT_MAX_S
    rotate_after_s: float | None = None  # None: the connector's own default
    ping_interval_s: float | None = None  # None: the connector's own default
    queue_items: int = QUEUE_ITEMS
    batch_rows: int = BATCH_ROWS
    batch_interval_s: float = BATCH_INTERVAL_S
    open_timeout_s: float = OPEN_TIMEOUT_S
    ready_timeout_s: float = READY_TIMEOUT_S
    healthy_after_s: float = HEALTHY_AFTER_S
    # (units, window s) shared per process and exchange host (``ticktape.feeds.limits``);
    # None: the exchange's default budget
    connect_limit: tuple[int, float] | None = None
    rest_limit: tuple[int, float] | None = None
