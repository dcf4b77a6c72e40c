"""Typed settings. Defaults are named constants with their unit in the name.

The environment is read once, at start-up, by :meth:`Settings.from_env`; every
CLI flag mirrors a ``TICKTAPE_*`` variable (``ticktape serve --help`` shows them).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from ticktape.errors import ValidationError, clip

DEFAULT_STORE_URL = "sqlite:///./ticktape.db"
GC_INTERVAL_S = 3600.0  # a server with a retention (TICKTAPE_RETENTION) purges this often
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"

HEARTBEAT_INTERVAL_S = 2.0  # how often an owner renews its leases and publishes stats
LEASE_S = 10.0  # a lease not renewed for this long is expired; the reconciler reaps it
# How often every instance looks for expired leases: None = the heartbeat interval, so an
# orphan is reaped within lease + one heartbeat of its owner's last renewal. Each wait
# is drawn from [RECONCILE_JITTER_MIN, 1] x the interval: jitter spreads instances out
# but never lengthens a wait beyond the interval (docs/resilience.md).
RECONCILE_INTERVAL_S: float | None = None
RECONCILE_JITTER_MIN = 0.5
# The wait before each reconciler pass is shortened by this share of the interval,
# kept for the pass itself, so that wait + pass stay within the interval. Half of it
# may go to letting the ticks that lost owners acknowledged become visible (QuestDB
# applies its WAL later) before their sessions are sealed.
RECONCILE_PASS_SHARE = 0.25
# A reconciler also wakes just after the earliest lease it knows expires, plus a random
# share of the interval up to this: instances that know the same expiry spread apart.
RECONCILE_WAKE_SPREAD = 0.05
# Each orphan has a preferred reaper among the live instances (rendezvous hash of its id);
# the others take it only once this share of the interval has passed since its lease
# expired, so instances do not all seal the same orphans — and still within the bound
# when the preferred one is dead or frozen (docs/resilience.md).
RECONCILE_DEFER_SHARE = 0.25
# A reap or claim whose compare-and-set loses to a change that left the session an orphan
# of the same owner (a stop asked meanwhile, its tick floor lowered) is tried again at
# once, with the session read again and a new seal, up to this many attempts in all: the
# next pass may come most of an interval later, past the bound (docs/resilience.md).
RECONCILE_TAKE_ATTEMPTS = 3
FLUSH_INTERVAL_S = 0.25  # a collect runner flushes buffered ticks at least this often
# A turn of an instance's sim driver or tick writer, or a heartbeat's pass, over thousands
# of sessions yields the event loop after about this much work (then goes on at its next
# turn of the loop): a request (a start, a heartbeat's answer) waits for one slice, not
# for the whole turn.
LOOP_SLICE_S = 0.002
FLUSH_MAX_ROWS = 20_000  # ... or as soon as this many ticks are buffered
# ... or as soon as this many are buffered while none of its writes is in flight (a busy
# feed keeps the store writing; a quiet session never gathers this many in a flush interval)
FLUSH_EAGER_ROWS = 2_000
BUFFER_MAX_ROWS = 200_000  # hard bound on buffered ticks per session: back-pressure beyond
# ... and on the ticks buffered by all the sessions of an instance together (about 400
# bytes a row at the default rate's small batches: ~400 MiB), the same back-pressure
INSTANCE_BUFFER_MAX_ROWS = 1_000_000
# A feed block that waits under that bound is counted (ticktape_tick_buffer_waits) and
# logged, at most once per this many seconds (a store far behind makes thousands a second).
BUFFER_WAIT_LOG_EVERY_S = 10.0
# After a stop (or the duration's end) a collect runner writes what it buffered for at most
# this long, then sheds the rest as recorded ``stop_drain`` gaps: a stop ends in bounded time.
STOP_DRAIN_S = 10.0
# Retries — every bound in one place; docs/design.md ("Retries") states them.
STORE_RETRY_ATTEMPTS = 6  # attempts of one store call on a transient error (full-jitter backoff)
STORE_RETRY_BASE_S = 0.05  # first backoff delay, doubling ...
STORE_RETRY_MAX_S = 2.0  # ... up to this
CAS_ROUNDS = 20  # a lost compare-and-set: re-read and decide again, at most this often
FINISH_ROUNDS = 5  # recording a run's end (count, then terminal transition), at most
RENEW_ATTEMPTS = 3  # a lease renewal is retried within one heartbeat, quickly:
RENEW_RETRY_BASE_S = 0.02
RENEW_RETRY_MAX_S = 0.2
# Inside the QuestDB backend, the two loops a store call may run before it answers:
# "table busy" (another instance holds the session log for one group commit, a few round
# trips) is retried soon and often — full jitter capped at 20 ms, about 0.5 s in all —
# and only StoreBusy (RetryPolicy.busy_*); an append whose row another writer changed
# first is rebuilt from the newest row (a compare-and-set round inside the backend).
# Past these bounds the call raises StoreBusy and the store boundary's retry decides.
# A PG-wire connection to QuestDB left unused this long is replaced before its next use:
# QuestDB closes connections idle for pg.net.connection.timeout (300 s by default), and the
# first use after that fails ("server closed the connection unexpectedly") — a 10-minute
# hold without starts or stops left the session log's connections idle (stop 16).
QUESTDB_IDLE_RECONNECT_S = 240.0
# ... or, when the server closes idle connections sooner (its pg.net.connection.timeout,
# read when the store opens), once unused for this share of the server's timeout.
QUESTDB_IDLE_RECONNECT_SHARE = 0.5
# The managed QuestDB server (``ticktape questdb start``) closes a PG-wire connection that
# sent nothing for this long (pg.net.connection.timeout), which rolls back its transaction.
# A group commit holds the session log's single writer from its first round trip to its
# COMMIT; if its process freezes in between (a stall, SIGSTOP), every instance's
# transitions — reaps included — wait until the server closes that connection. Below the
# heartbeat, so an orphan is still reaped within lease + one heartbeat.
# TICKTAPE_QUESTDB_PG_IDLE_TIMEOUT_S.
QUESTDB_PG_IDLE_TIMEOUT_S = 1.5
# A new PG-wire connection that the server closes during its handshake (a handshake slower
# than that timeout, on a loaded machine) is opened again at once, up to this many attempts
# in all, before the call fails: nothing was sent on it, and a failed connect marks the
# store failing writes, which holds off every start (503) for FAILURE_HOLD_S.
QUESTDB_CONNECT_ATTEMPTS = 3
# A session-log transaction (a group commit, BEGIN to COMMIT) still open this long is
# abandoned by its own process: its connections' sockets are shut down and its appends
# fail (the store boundary retries them). The server cuts a silent client (above), but
# never a slow or frozen server's transaction, which would hold the log — and keep the
# process's cyclic collector paused (_logthread.collector_paused) — until the server
# answered. Transactions last milliseconds to a fraction of a second; below the store
# timeout and the reap bound (lease + heartbeat). TICKTAPE_QUESTDB_LOG_TRANSACTION_MAX_S.
QUESTDB_LOG_TRANSACTION_MAX_S = 5.0
QUESTDB_BUSY_ATTEMPTS = 50
QUESTDB_BUSY_BASE_S = 0.001
QUESTDB_BUSY_MAX_S = 0.02
QUESTDB_APPEND_ROUNDS = 50
# An instance's first row in QuestDB's tt_instances (not partitioned: a row older than the
# table's newest is refused as "out of order") is written again with the newest row's
# timestamp when another instance's row, stamped by its own clock, landed later; each
# round means another instance's first row landed in between, so at most this many.
QUESTDB_INSTANCE_INSERT_ROUNDS = 10
VISIBILITY_TIMEOUT_S = 30.0  # how long a final flush may take to become visible
STOP_WAIT_TIMEOUT_S = 30.0  # default bound for "stop and wait until terminal"
PUSH_INTERVAL_S = 0.25  # how often the change feed reads the store while clients listen
PUSH_QUEUE_MAX = 256  # updates held for one push client before it is dropped as too slow
SHUTDOWN_TIMEOUT_S = 20.0  # graceful server shutdown: time sessions get to finish
REQUEST_SHUTDOWN_TIMEOUT_S = 5.0  # on SIGTERM, in-flight requests get this long to answer
READY_TIMEOUT_S = 2.0  # the readiness probe's store check gives up after this long
HEALTH_PROBE_TIMEOUT_S = 1.0  # /health's look at the store (it answers 200 regardless)
#: A store call — a write (session change, lease renewal, tick batch) or a read (a
#: session, a listing, ticks) — that has not finished after this long fails as
#: ``store_unavailable`` (a hung disk or a frozen QuestDB): callers answer within a bound.
#: A write may still complete later; every write is idempotent or compare-and-set, so a
#: retry cannot apply it twice. TICKTAPE_STORE_TIMEOUT_S.
STORE_TIMEOUT_S = 15.0
#: Deprecated variable names, each read only when its replacement is unset, and named in
#: a warning at start-up: {deprecated: replacement}.
DEPRECATED_ENV = {"TICKTAPE_STORE_WRITE_TIMEOUT_S": "TICKTAPE_STORE_TIMEOUT_S"}

# Exposure and limits (docs/security.md). Each is a TICKTAPE_* variable.
MAX_BODY_BYTES = 1_048_576  # request bodies larger than this are refused (413) while read
ALLOWED_HOSTS = ("127.0.0.1", "localhost", "::1")  # Host header names served ("*": any)
MAX_SYMBOLS_PER_SESSION = 100  # at most this many symbols in one session (hard cap 100)
MAX_RUNNING_PER_INSTANCE = 200  # sessions running on one instance at once
MAX_RUNNING_PER_STORE = 1_000  # active (pending/running/stopping) sessions in one store
CREATE_RATE_PER_MIN = 120  # session creations per client address per minute (burst: same)
DISK_BUDGET_MB: float | None = None  # optional cap on the store's files (SQLite only)
IDEMPOTENCY_KEY_TTL_S = 86_400.0  # an Idempotency-Key is remembered this long (24 h)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Every retry bound, in one object (``Settings.retry``); docs/design.md states them.

    One retry layer: a transient store error (:class:`~ticktape.errors.StoreBusy`,
    :class:`~ticktape.errors.StoreUnavailable`) is retried at the store boundary — the
    handle :func:`ticktape.store.open_store` returns
    (:class:`~ticktape.store.retrying.RetryingStore`) — ``store_attempts`` times in all per
    call, a lease renewal ``renew_attempts`` times (quickly, to stay within one
    heartbeat). Callers never retry transient errors; they only decide again:
    a lost compare-and-set ``cas_rounds`` times at most, the end of a run (count, then
    terminal transition) ``finish_rounds`` times at most, then left to the reconciler.

    One nesting is kept on purpose: inside the QuestDB backend a group commit that
    finds the session log "table busy" (another instance's transaction, about a
    millisecond) is tried again at once, ``busy_attempts`` times at most, before the
    boundary sees :class:`~ticktape.errors.StoreBusy`: retrying each append of the
    group from the boundary would cost every caller a whole read-decide-append
    round and a backoff sized for outages, not for a lock held for a millisecond.
    """

    store_attempts: int = STORE_RETRY_ATTEMPTS
    store_base_s: float = STORE_RETRY_BASE_S
    store_max_s: float = STORE_RETRY_MAX_S
    cas_rounds: int = CAS_ROUNDS
    finish_rounds: int = FINISH_ROUNDS
    renew_attempts: int = RENEW_ATTEMPTS
    renew_base_s: float = RENEW_RETRY_BASE_S
    renew_max_s: float = RENEW_RETRY_MAX_S
    busy_attempts: int = QUESTDB_BUSY_ATTEMPTS
    busy_base_s: float = QUESTDB_BUSY_BASE_S
    busy_max_s: float = QUESTDB_BUSY_MAX_S

    def attempts(self, operation: str) -> tuple[int, float, float]:
        """``(attempts, base_s, max_s)`` for one store call named by its method."""
        if operation in ("renew_lease", "renew_instance"):
            return self.renew_attempts, self.renew_base_s, self.renew_max_s
        return self.store_attempts, self.store_base_s, self.store_max_s


DEFAULT_RETRY = RetryPolicy()


def _env_float(
    env: Mapping[str, str], name: str, default: float, *, deprecated: bool = False
) -> float:
    """``name`` as a number; with ``deprecated``, the old name of it in ``DEPRECATED_ENV``
    stands in when ``name`` is unset."""
    raw = env.get(name)
    if deprecated and (raw is None or raw == ""):
        old = next(old for old, new in DEPRECATED_ENV.items() if new == name)
        name, raw = old, env.get(old)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"ticktape: {name}={raw!r} is not a number") from None


def _env_opt_float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    return None if raw is None or raw == "" else _env_float(env, name, 0.0)


def _env_retention(env: Mapping[str, str]) -> timedelta | None:
    raw = env.get("TICKTAPE_RETENTION")
    if raw is None or raw.strip() == "":
        return None
    try:
        return parse_retention(raw)
    except ValidationError as exc:
        raise SystemExit(f"ticktape: TICKTAPE_RETENTION={raw!r}: {exc}") from None


def _env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    value = _env_float(env, name, default)
    if value != int(value) or value < minimum:
        raise SystemExit(f"ticktape: {name}={env.get(name)!r} must be an integer >= {minimum}")
    return int(value)


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in {"", "0", "false", "no", "off"}:
        return False
    if raw in {"1", "true", "yes", "on"}:
        return True
    raise SystemExit(f"ticktape: {name}={env.get(name)!r} is not a boolean (use 1 or 0)")


def _env_hosts(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return ALLOWED_HOSTS
    return tuple(h.strip().lower() for h in raw.split(",") if h.strip())


def default_instance_name(port: int) -> str:
    """Stable across restarts of the same server, so a restart can reap its own orphans."""
    return f"{socket.gethostname()}:{port}"


# Exchange feeds (docs/feeds.md). The defaults are the production endpoints.
BINANCE_WS_URL = "wss://fstream.binance.com"  # + /public/ws (depth) and /market/ws (aggTrade)
BINANCE_REST_URL = "https://fapi.binance.com"
MEXC_WS_URL = "wss://contract.mexc.com/edge"
MEXC_REST_URL = "https://api.mexc.com"
FEED_STALE_AFTER_S = 10.0  # no message this long while subscribed: reconnect
FEED_RECONNECT_MAX_S = 30.0  # reconnect backoff cap


@dataclass(frozen=True, slots=True)
class FeedEndpoints:
    """Where the exchange feeds connect: ``TICKTAPE_BINANCE_*``, ``TICKTAPE_MEXC_*``,
    ``TICKTAPE_FEED_*``."""

    binance_ws_url: str = BINANCE_WS_URL
    binance_rest_url: str = BINANCE_REST_URL
    mexc_ws_url: str = MEXC_WS_URL
    mexc_rest_url: str = MEXC_REST_URL
    stale_after_s: float = FEED_STALE_AFTER_S
    reconnect_max_s: float = FEED_RECONNECT_MAX_S
    # MEXC books of depth <= 20 from sub.depth.full snapshots (False: the incremental book)
    mexc_full_depth: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FeedEndpoints:
        out = cls(
            binance_ws_url=(env.get("TICKTAPE_BINANCE_WS_URL") or BINANCE_WS_URL).rstrip("/"),
            binance_rest_url=(env.get("TICKTAPE_BINANCE_REST_URL") or BINANCE_REST_URL).rstrip("/"),
            mexc_ws_url=env.get("TICKTAPE_MEXC_WS_URL") or MEXC_WS_URL,
            mexc_rest_url=(env.get("TICKTAPE_MEXC_REST_URL") or MEXC_REST_URL).rstrip("/"),
            stale_after_s=_env_float(env, "TICKTAPE_FEED_STALE_S", FEED_STALE_AFTER_S),
            reconnect_max_s=_env_float(env, "TICKTAPE_FEED_RECONNECT_MAX_S", FEED_RECONNECT_MAX_S),
            mexc_full_depth=(  # unset: on
                _env_bool(env, "TICKTAPE_MEXC_FULL_DEPTH")
                if env.get("TICKTAPE_MEXC_FULL_DEPTH", "").strip()
                else True
            ),
        )
        for name, url, schemes in (
            ("TICKTAPE_BINANCE_WS_URL", out.binance_ws_url, ("ws://", "wss://")),
            ("TICKTAPE_MEXC_WS_URL", out.mexc_ws_url, ("ws://", "wss://")),
            ("TICKTAPE_BINANCE_REST_URL", out.binance_rest_url, ("http://", "https://")),
            ("TICKTAPE_MEXC_REST_URL", out.mexc_rest_url, ("http://", "https://")),
        ):
            if not url.startswith(schemes):
                raise SystemExit(f"ticktape: {name}={url!r} must start with {' or '.join(schemes)}")
        if out.stale_after_s <= 0 or out.reconnect_max_s <= 0:
            raise SystemExit("ticktape: TICKTAPE_FEED_STALE_S and _RECONNECT_MAX_S must be > 0")
        return out


STRATEGY_CALL_BUDGET_S = 5.0  # as ticktape.strategies.DEFAULT_CALL_BUDGET_S
RESULT_BATCH_ROWS = 20_000  # a backtest appends its result rows in batches of about this many


@dataclass(frozen=True, slots=True)
class Settings:
    store_url: str = DEFAULT_STORE_URL
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    instance_name: str = ""  # "" = derived from host name and port
    api_token: str | None = None
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    lease_s: float = LEASE_S
    reconcile_interval_s: float | None = RECONCILE_INTERVAL_S  # None = heartbeat_interval_s
    flush_interval_s: float = FLUSH_INTERVAL_S
    flush_max_rows: int = FLUSH_MAX_ROWS
    flush_eager_rows: int = FLUSH_EAGER_ROWS
    buffer_max_rows: int = BUFFER_MAX_ROWS
    # TICKTAPE_INSTANCE_BUFFER_MAX_ROWS: ticks buffered by all the instance's sessions, at most
    instance_buffer_max_rows: int = INSTANCE_BUFFER_MAX_ROWS
    retry: RetryPolicy = DEFAULT_RETRY
    log_level: str = "info"
    strategies_dir: str | None = None  # user strategies (*.py) loaded at start-up
    # TICKTAPE_STRATEGY_BUDGET_S: a strategy call that takes longer fails its session
    strategy_call_budget_s: float = STRATEGY_CALL_BUDGET_S
    # TICKTAPE_RESULT_BATCH_ROWS: a backtest streams its results in appends of this many rows
    result_batch_rows: int = RESULT_BATCH_ROWS
    max_body_bytes: int = MAX_BODY_BYTES
    allowed_hosts: tuple[str, ...] = ALLOWED_HOSTS
    protect_reads: bool = False  # TICKTAPE_PROTECT_READS: the token is needed to read too
    max_symbols_per_session: int = MAX_SYMBOLS_PER_SESSION
    max_running_per_instance: int = MAX_RUNNING_PER_INSTANCE
    max_running_per_store: int = MAX_RUNNING_PER_STORE
    create_rate_per_min: int = CREATE_RATE_PER_MIN
    disk_budget_mb: float | None = DISK_BUDGET_MB
    users_file: Path | None = None  # TICKTAPE_USERS_FILE: browser sign-in users (ticktape user add)
    secret_key: str | None = None  # TICKTAPE_SECRET_KEY: signs sign-in cookies and CSRF tokens
    cors_origins: tuple[str, ...] = ()  # TICKTAPE_CORS_ORIGINS: browser origins allowed; none
    push_interval_s: float = PUSH_INTERVAL_S  # TICKTAPE_PUSH_INTERVAL_S: change feed period
    push_queue_max: int = PUSH_QUEUE_MAX  # TICKTAPE_PUSH_QUEUE_MAX: updates held per client
    feeds: FeedEndpoints = FeedEndpoints()  # exchange endpoints and feed timing
    store_timeout_s: float = STORE_TIMEOUT_S  # TICKTAPE_STORE_TIMEOUT_S: store calls' bound
    #: TICKTAPE_QUESTDB_LOG_TRANSACTION_MAX_S: a QuestDB session-log transaction's bound
    questdb_log_transaction_max_s: float = QUESTDB_LOG_TRANSACTION_MAX_S
    stop_drain_s: float = STOP_DRAIN_S  # TICKTAPE_STOP_DRAIN_S: drain budget after a stop
    #: TICKTAPE_SHUTDOWN_GRACE_S: on SIGTERM, the time this instance's sessions get to stop
    #: (or be handed over) before their runners are cancelled
    shutdown_grace_s: float = SHUTDOWN_TIMEOUT_S
    #: TICKTAPE_RETENTION (e.g. 30d): the server purges sessions that ended longer ago,
    #: hourly (ticktape.retention); None (the default) keeps everything
    retention: timedelta | None = None
    gc_interval_s: float = GC_INTERVAL_S  # TICKTAPE_GC_INTERVAL_S: how often, with a retention
    #: TICKTAPE_PYTHON_GC=0: ``serve`` leaves CPython's garbage collector as it is
    #: (default: freeze the start-up heap, rarer full collections: ticktape.api.heap)
    python_gc_tuning: bool = True
    #: The deprecated variables (``DEPRECATED_ENV``) these settings were read from
    deprecated_env: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``TICKTAPE_*`` variables; explicit ``overrides`` (flags) win."""
        env = os.environ if env is None else env
        base = cls(
            store_url=env.get("TICKTAPE_STORE") or DEFAULT_STORE_URL,
            host=env.get("TICKTAPE_HOST") or DEFAULT_HOST,
            port=int(_env_float(env, "TICKTAPE_PORT", DEFAULT_PORT)),
            instance_name=env.get("TICKTAPE_INSTANCE", ""),
            api_token=env.get("TICKTAPE_API_TOKEN") or None,
            heartbeat_interval_s=_env_float(env, "TICKTAPE_HEARTBEAT_S", HEARTBEAT_INTERVAL_S),
            lease_s=_env_float(env, "TICKTAPE_LEASE_S", LEASE_S),
            reconcile_interval_s=_env_opt_float(env, "TICKTAPE_RECONCILE_S"),
            flush_interval_s=_env_float(env, "TICKTAPE_FLUSH_INTERVAL_S", FLUSH_INTERVAL_S),
            flush_max_rows=int(_env_float(env, "TICKTAPE_FLUSH_MAX_ROWS", FLUSH_MAX_ROWS)),
            flush_eager_rows=int(_env_float(env, "TICKTAPE_FLUSH_EAGER_ROWS", FLUSH_EAGER_ROWS)),
            buffer_max_rows=int(_env_float(env, "TICKTAPE_BUFFER_MAX_ROWS", BUFFER_MAX_ROWS)),
            instance_buffer_max_rows=_env_int(
                env, "TICKTAPE_INSTANCE_BUFFER_MAX_ROWS", INSTANCE_BUFFER_MAX_ROWS
            ),
            log_level=env.get("TICKTAPE_LOG_LEVEL", "info"),
            strategies_dir=env.get("TICKTAPE_STRATEGIES_DIR") or None,
            strategy_call_budget_s=_env_float(
                env, "TICKTAPE_STRATEGY_BUDGET_S", STRATEGY_CALL_BUDGET_S
            ),
            result_batch_rows=max(
                1, _env_int(env, "TICKTAPE_RESULT_BATCH_ROWS", RESULT_BATCH_ROWS)
            ),
            max_body_bytes=_env_int(env, "TICKTAPE_MAX_BODY_BYTES", MAX_BODY_BYTES),
            allowed_hosts=_env_hosts(env, "TICKTAPE_ALLOWED_HOSTS"),
            protect_reads=_env_bool(env, "TICKTAPE_PROTECT_READS"),
            max_symbols_per_session=min(
                _env_int(env, "TICKTAPE_MAX_SYMBOLS", MAX_SYMBOLS_PER_SESSION),
                MAX_SYMBOLS_PER_SESSION,
            ),
            max_running_per_instance=_env_int(
                env, "TICKTAPE_MAX_RUNNING_PER_INSTANCE", MAX_RUNNING_PER_INSTANCE
            ),
            max_running_per_store=_env_int(
                env, "TICKTAPE_MAX_RUNNING_PER_STORE", MAX_RUNNING_PER_STORE
            ),
            create_rate_per_min=_env_int(env, "TICKTAPE_CREATE_RATE_PER_MIN", CREATE_RATE_PER_MIN),
            disk_budget_mb=_env_opt_float(env, "TICKTAPE_DISK_BUDGET_MB"),
            users_file=Path(env["TICKTAPE_USERS_FILE"]) if env.get("TICKTAPE_USERS_FILE") else None,
            secret_key=env.get("TICKTAPE_SECRET_KEY") or None,
            push_interval_s=_env_float(env, "TICKTAPE_PUSH_INTERVAL_S", PUSH_INTERVAL_S),
            push_queue_max=int(_env_float(env, "TICKTAPE_PUSH_QUEUE_MAX", PUSH_QUEUE_MAX)),
            store_timeout_s=_env_float(
                env, "TICKTAPE_STORE_TIMEOUT_S", STORE_TIMEOUT_S, deprecated=True
            ),
            stop_drain_s=_env_float(env, "TICKTAPE_STOP_DRAIN_S", STOP_DRAIN_S),
            shutdown_grace_s=_env_float(env, "TICKTAPE_SHUTDOWN_GRACE_S", SHUTDOWN_TIMEOUT_S),
            questdb_log_transaction_max_s=_env_float(
                env, "TICKTAPE_QUESTDB_LOG_TRANSACTION_MAX_S", QUESTDB_LOG_TRANSACTION_MAX_S
            ),
            cors_origins=tuple(
                o.strip() for o in env.get("TICKTAPE_CORS_ORIGINS", "").split(",") if o.strip()
            ),
            feeds=FeedEndpoints.from_env(env),
            retention=_env_retention(env),
            gc_interval_s=_env_float(env, "TICKTAPE_GC_INTERVAL_S", GC_INTERVAL_S),
            python_gc_tuning=(
                _env_bool(env, "TICKTAPE_PYTHON_GC") if env.get("TICKTAPE_PYTHON_GC") else True
            ),
            deprecated_env=tuple(
                old for old, new in DEPRECATED_ENV.items() if env.get(old) and not env.get(new)
            ),
        )
        known = {f.name for f in fields(cls)}
        clean = {k: v for k, v in overrides.items() if v is not None and k in known}
        settings = replace(base, **clean)
        if settings.lease_s <= settings.heartbeat_interval_s:
            raise SystemExit(
                f"ticktape: lease ({settings.lease_s}s) must be longer than the heartbeat "
                f"interval ({settings.heartbeat_interval_s}s)"
            )
        if settings.reconcile_every_s <= 0:
            raise SystemExit("ticktape: the reconcile interval must be greater than zero")
        if settings.disk_budget_mb is not None and not settings.store_url.startswith("sqlite:"):
            raise SystemExit(
                "ticktape: TICKTAPE_DISK_BUDGET_MB applies to the SQLite store only (its files "
                "are on this machine); a QuestDB server's disk is its own to limit "
                "(docs/security.md). Unset TICKTAPE_DISK_BUDGET_MB for this store."
            )
        if settings.gc_interval_s <= 0:
            raise SystemExit("ticktape: TICKTAPE_GC_INTERVAL_S must be greater than zero")
        if settings.store_timeout_s <= 0:
            raise SystemExit("ticktape: TICKTAPE_STORE_TIMEOUT_S must be greater than zero")
        if not settings.questdb_log_transaction_max_s > 0:
            raise SystemExit(
                "ticktape: TICKTAPE_QUESTDB_LOG_TRANSACTION_MAX_S must be greater than zero"
            )
        if not settings.shutdown_grace_s > 0:
            raise SystemExit("ticktape: TICKTAPE_SHUTDOWN_GRACE_S must be greater than zero")
        if not settings.stop_drain_s >= 0:
            raise SystemExit("ticktape: TICKTAPE_STOP_DRAIN_S must be zero or more")
        return settings

    @property
    def instance(self) -> str:
        return self.instance_name or default_instance_name(self.port)

    @property
    def reconcile_every_s(self) -> float:
        """The longest wait between two reconciler passes on one instance."""
        if self.reconcile_interval_s is None:
            return self.heartbeat_interval_s
        return self.reconcile_interval_s

    @property
    def reconcile_pass_budget_s(self) -> float:
        """The part of the reconcile interval kept for the pass (the wait is shortened)."""
        return self.reconcile_every_s * RECONCILE_PASS_SHARE

    @property
    def reconcile_visibility_s(self) -> float:
        """How long a reconciler pass waits for acknowledged ticks before sealing orphans."""
        return self.reconcile_pass_budget_s / 2

    @property
    def reconcile_visibility_patience_s(self) -> float:
        """How long after its lease expired an orphan's seal may wait for its owner's
        acknowledged ticks to become visible (passes after the first one that could not
        see them); past it the seal counts what is visible. One lease."""
        return self.lease_s

    @property
    def lost_owner_quiet_s(self) -> float:
        """A lost owner acknowledged no tick later than this before its lease expired,
        by the reconciler's clock: half the margin by which it fenced itself before the
        expiry (``lease_s - self_fence_after_s``); the other half allows for clocks that
        differ between hosts. What the tick store had committed by then is all a seal of
        its sessions waits to see (``TickStore.wait_visible(committed_by=...)``)."""
        return (self.lease_s - self.self_fence_after_s) / 2

    @property
    def reap_bound_s(self) -> float:
        """An orphan is reaped at most this long after its owner's last renewal.

        The lease, plus the longest wait for the next reconciler pass on a live
        instance: one heartbeat with the default reconcile interval.
        """
        return self.lease_s + self.reconcile_every_s

    @property
    def self_fence_after_s(self) -> float:
        """A runner whose lease has not been renewed for this long stops itself.

        Shorter than the lease by half a heartbeat (or half the slack between
        heartbeat and lease, if smaller), so an owner that cannot renew stops
        before anyone may reap or claim its session — and never between two
        heartbeats that both succeed.
        """
        margin = min(self.heartbeat_interval_s, self.lease_s - self.heartbeat_interval_s) / 2
        return self.lease_s - margin


_RETENTION_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd])\s*", re.ASCII)
_RETENTION_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_retention(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"`` → a retention longer than zero
    (``ticktape gc --older-than``, ``TICKTAPE_RETENTION``)."""
    match = _RETENTION_RE.fullmatch(text)
    if not match:
        raise ValidationError(
            f"invalid retention {clip(text)!r}: use a number and a unit s, m, h or d, e.g. '30d'",
            field="older_than",
        )
    seconds = float(match.group(1)) * _RETENTION_UNIT_S[match.group(2)]
    if seconds <= 0:
        raise ValidationError("the retention must be longer than zero", field="older_than")
    return timedelta(seconds=seconds)


def sqlite_path_from_url(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////abs/path.db`` → Path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return Path(url[len(prefix) :])
