"""What a stop of many sessions costs this backend, told in a handful of INFO lines.

From :meth:`QuestDBTickStore.expect_seals` (a shutdown announces its seals) to
:meth:`QuestDBTickStore.seals_done`, the session log's group commits, their "table
busy" retries and the seal gathering are counted here, and the lines say each with its
seconds since the stop began (``stop phase <name>: key=value ...``, read by
``bench/shutdown.py``). Figures only: no session's state is kept.
"""

from __future__ import annotations

import logging
import threading
import time

from ticktape.phases import log_phase

log = logging.getLogger("ticktape.store.questdb")


class StopTrace:
    """Counters of one stop; the log thread and the event loop both add to them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._began: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.groups = 0
        self.appends = 0
        self.busy_retries = 0
        self.busy_wait_s = 0.0
        self.first_s: float | None = None
        self.last_s = 0.0

    @property
    def active(self) -> bool:
        return self._began is not None

    def since(self) -> float:
        """Seconds since the stop began (0 when none is under way)."""
        return 0.0 if self._began is None else time.monotonic() - self._began

    def begin(self) -> None:
        with self._lock:
            self._began = time.monotonic()
            self._reset()

    def committed(self, appends: int) -> None:
        """A session-log group of ``appends`` was answered."""
        if self._began is None:
            return
        with self._lock:
            now = self.since()
            self.groups += 1
            self.appends += appends
            self.first_s = now if self.first_s is None else self.first_s
            self.last_s = now

    def busy(self, delay_s: float) -> None:
        """A session-log attempt found the table busy; retried after ``delay_s``."""
        if self._began is None:
            return
        with self._lock:
            self.busy_retries += 1
            self.busy_wait_s += delay_s

    def phase(self, name: str, **figures: object) -> None:
        """One line of the stop: ``stop phase <name>: k=v ... at_s=<since>``."""
        if self._began is None:
            return
        log_phase(log, name, at_s=self.since(), **figures)

    def end(self) -> None:
        """The stop's session-log line; counting stops."""
        if self._began is None:
            return
        self.phase(
            "session log",
            groups=self.groups,
            appends=self.appends,
            busy_retries=self.busy_retries,
            busy_wait_s=self.busy_wait_s,
            first_s=self.first_s,
            last_s=self.last_s,
        )
        with self._lock:
            self._began = None
