"""Prometheus metrics of one ticktape instance.

Each app gets its own registry so several servers (and tests) can live in one
process without clashing on global collector names.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ticktape.domain import SessionStatus

CREATE_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
COMMIT_LAG_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RECONCILE_PHASE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

SYMBOL_MISS_OUTCOMES = ("rechecked", "confirmed")
#: The QuestDB tables whose session-id symbol lookups are read again when they miss.
SYMBOL_MISS_TABLES = ("session_log", "trades", "orderbook")


class _StoreCounter(Collector):
    """A counter kept by the store, by label values: the values the last scrape read
    from it (:meth:`Metrics.store_status`), each 0 until then."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        values: tuple[tuple[str, ...], ...],
    ):
        self._name, self._documentation, self._labels = name, documentation, labels
        self.counts = dict.fromkeys(itertools.product(*values), 0)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for values, count in self.counts.items():
            family.add_metric(list(values), count)
        yield family


class LoopHistogram(Collector):
    """A histogram observed from the event loop's thread only, thousands of times a
    second (a collect instance's commit lag: every stored batch of every session).

    Exposed as a Prometheus histogram is (``_bucket`` with ``le``, ``_count``, ``_sum``);
    an observation is one C bisect and two additions, where ``Histogram.observe`` takes
    a lock per value, walks the bounds in Python and takes a lock per bucket. A scrape
    reads counts that may miss an observation made while it reads (never a torn one):
    ``_count`` is always the sum of the buckets it exposes.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last: above every bound (+Inf)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def collect(self) -> Iterator[Metric]:
        counts = list(self._counts)
        total = self._sum
        les = [*(repr(b) for b in self._bounds), "+Inf"]
        family = HistogramMetricFamily(self._name, self._documentation)
        family.add_metric([], list(zip(les, itertools.accumulate(counts), strict=True)), total)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.create_latency = Histogram(
            "ticktape_session_create_seconds",
            "Time from a create request to the session being durable and visible",
            buckets=CREATE_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.lookups = Counter(
            "ticktape_session_lookups", "Session lookups by result", ["result"], registry=r
        )
        self.sessions = Gauge(
            "ticktape_sessions", "Sessions in the store by status", ["status"], registry=r
        )
        self.ticks = Counter(
            "ticktape_ticks_written", "Ticks stored, by data type", ["data_type"], registry=r
        )
        self._ticks_trades = self.ticks.labels(data_type="trades")
        self._ticks_orderbook = self.ticks.labels(data_type="orderbook")
        self.tick_errors = Counter(
            "ticktape_tick_write_errors", "Tick batches that could not be stored", registry=r
        )
        self.store_retries = Counter(
            "ticktape_store_retries", "Transient store errors that were retried", registry=r
        )
        self.orphans_reaped = Counter(
            "ticktape_orphans_reaped", "Sessions finalised because their lease expired", registry=r
        )
        self.zombies_stopped = Counter(
            "ticktape_zombies_self_stopped",
            "Runners that stopped themselves on losing their lease",
            registry=r,
        )
        self.lease_renew_failures = Counter(
            "ticktape_lease_renew_failures", "Heartbeats that failed to renew a lease", registry=r
        )
        self.sessions_resumed = Counter(
            "ticktape_sessions_resumed",
            "Sessions this instance claimed after their owner was lost, and resumed",
            registry=r,
        )
        self.sessions_handed_over = Counter(
            "ticktape_sessions_handed_over",
            "Resumable sessions released on shutdown for another instance to claim",
            registry=r,
        )
        self.fenced_writes = Counter(
            "ticktape_fenced_writes",
            "Tick writes the store rejected because this instance no longer owned the session",
            registry=r,
        )
        self.store_errors = Counter(
            "ticktape_store_errors",
            "Requests answered with a store error (503), by error code",
            ["code"],
            registry=r,
        )
        self.store_up = Gauge(
            "ticktape_store_up", "1 if the store answers and takes writes, else 0", registry=r
        )
        self.store_write_failures = Gauge(
            "ticktape_store_write_failures",
            "Times the store's write path failed (or hung) since it was opened",
            registry=r,
        )
        self.limits_hit = Counter(
            "ticktape_limit_refusals",
            "Requests refused by a configured limit",
            ["limit"],
            registry=r,
        )
        self.push_clients_dropped = Counter(
            "ticktape_push_clients_dropped",
            "Push clients (/api/sessions/stream, /ws) cut off because they did not keep up",
            registry=r,
        )
        self.local_runners = Gauge(
            "ticktape_local_runners", "Sessions with a live runner on this instance", registry=r
        )
        self.feed_rows = Counter(
            "ticktape_feed_rows_received",
            "Rows the feeds handed to collect runners, by exchange and data type",
            ["exchange", "data_type"],
            registry=r,
        )
        self.feed_gaps = Counter(
            "ticktape_feed_gaps",
            "Gaps in recordings, by exchange and cause (disconnect and stale are reconnects)",
            ["exchange", "cause"],
            registry=r,
        )
        self.ticks_shed = Counter(
            "ticktape_ticks_shed",
            "Ticks given up when a run's drain budget (TICKTAPE_STOP_DRAIN_S) ran out, "
            "each recorded as a stop_drain gap",
            ["data_type"],
            registry=r,
        )
        self.tick_buffer_rows = Gauge(
            "ticktape_tick_buffer_rows",
            "Ticks buffered by this instance's sessions for the store, not yet acknowledged "
            "(bounded by TICKTAPE_INSTANCE_BUFFER_MAX_ROWS)",
            registry=r,
        )
        self.tick_buffer_waits = Counter(
            "ticktape_tick_buffer_waits",
            "Feed blocks that waited for room under the instance's tick buffer bound "
            "(back-pressure: the store is behind the feeds)",
            registry=r,
        )
        self.symbol_misses = _StoreCounter(
            "ticktape_questdb_symbol_misses",
            "Session ids a QuestDB lookup of a table's session-id symbol did not find, read "
            "again by their string value (rechecked), and those of them found after all "
            "(confirmed: QuestDB's lookup missed stored rows), by table: the session log's "
            "by-id reads, the tick tables' seal counts; 0 on other backends",
            ("table", "outcome"),
            (SYMBOL_MISS_TABLES, SYMBOL_MISS_OUTCOMES),
        )
        r.register(self.symbol_misses)
        self.feed_lost = Counter(
            "ticktape_feed_messages_lost",
            "Exchange messages known lost (from sequence numbers), by exchange",
            ["exchange"],
            registry=r,
        )
        self.feed_commit_lag = LoopHistogram(
            "ticktape_feed_commit_lag_seconds",
            "Receive to commit: local receive time of each stored batch's oldest row to the "
            "store's acknowledgement",
            buckets=COMMIT_LAG_BUCKETS_S,
        )
        r.register(self.feed_commit_lag)

        self.reconcile_phase = Histogram(
            "ticktape_reconcile_phase_seconds",
            "Reconciler pass phases: scan (every pass), visibility wait and the whole pass "
            "(passes that found orphans), seal and commit (per orphan)",
            ["phase"],
            buckets=RECONCILE_PHASE_BUCKETS_S,
            registry=r,
        )

    def session_created(self, latency_s: float) -> None:
        self.create_latency.observe(latency_s)

    def lookup(self, *, found: bool) -> None:
        self.lookups.labels(result="found" if found else "not_found").inc()

    def store_retry(self, _exc: Exception) -> None:
        self.store_retries.inc()

    def ticks_written(self, trades: int, orderbook: int) -> None:
        # the children are looked up once: every flush of every session comes here
        if trades:
            self._ticks_trades.inc(trades)
        if orderbook:
            self._ticks_orderbook.inc(orderbook)

    def set_status_counts(self, counts: dict[SessionStatus, int]) -> None:
        for status in SessionStatus:
            self.sessions.labels(status=status.value).set(counts.get(status, 0))

    def store_status(
        self,
        *,
        up: bool,
        write_failures: int,
        symbol_misses: dict[tuple[str, str], int] | None = None,
    ) -> None:
        """The store's own figures, read at a scrape (``symbol_misses``: (table, outcome)
        → count, :attr:`ticktape.store.base.Store.symbol_misses`)."""
        self.store_up.set(1 if up else 0)
        self.store_write_failures.set(write_failures)
        for key, count in (symbol_misses or {}).items():
            self.symbol_misses.counts[key] = count

    def render(self) -> bytes:
        return generate_latest(self.registry)
