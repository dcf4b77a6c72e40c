"""Run a local QuestDB server as a managed dependency: no Docker, no system install.

Why: the QuestDB store backend and its tests need a real server. It is the Maven Central
jar ``org.questdb:questdb`` (native libraries inside) run by a JVM found on this machine,
pinned (version, jar digest) and bound to 127.0.0.1, so dev boxes, CI and tests agree.

A server belongs to a *root* directory: QuestDB's data (``db/``), its config (``conf/``,
rewritten on every start), our log, a pid file and a JSON state file, so that ``stop``
and ``status`` work from another process (the CLI) given only the root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ticktape.config import QUESTDB_PG_IDLE_TIMEOUT_S
from ticktape.errors import TicktapeError

#: The pinned QuestDB release (from Maven Central); its classes target Java 17.
QUESTDB_VERSION = "9.3.4"
#: SHA-256 of the pinned jar (Maven Central's .sha1 was checked when pinning).
QUESTDB_JAR_SHA256 = {"9.3.4": "939bc53ab22f93dbaa6545143a6e7c536d4904c07b7f2d381e8eef10436be062"}
MIN_JAVA_MAJOR = 17
HOST = "127.0.0.1"
PID_FILE = "questdb.pid"
STATE_FILE = "ticktape-questdb.json"
LOG_FILE = "questdb.log"

# Reflection into java.base and native access for the io.questdb module (ok on 17 and 25).
_OPENS = ("java.lang", "java.lang.reflect", "java.nio", "java.time.zone")
_JVM_FLAGS = [f"--add-opens=java.base/{p}=io.questdb" for p in _OPENS]
_JVM_FLAGS.append("--enable-native-access=io.questdb")
# Every query is logged at INFO; keep the log to errors and advisories (startup, shutdown).
_LOG_CONF = """writers=stdout
w.stdout.class=io.questdb.log.LogConsoleWriter
w.stdout.level=ERROR,CRITICAL,ADVISORY
"""


class QuestDBServerError(TicktapeError):
    """The local QuestDB server could not be fetched, started, or stopped."""

    code = "questdb_server_error"


class JavaNotFound(QuestDBServerError):
    code = "java_not_found"


class JarUnavailable(QuestDBServerError):
    code = "questdb_jar_unavailable"


def default_cache_dir() -> Path:
    return Path(os.environ.get("TICKTAPE_QUESTDB_CACHE") or Path.home() / ".cache/ticktape/questdb")


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (held open together, so no repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]


@dataclass(frozen=True)
class QuestDBServerConfig:
    """How to run one server. Worker counts suit a 2-core machine; ports are loopback-only.

    Two network workers so that one blocking request (``wait_wal_table``, a long query)
    does not stall every other PG-wire and HTTP client; one query and one write
    (WAL apply) worker, so the JVM does not fight the Python process for the cores;
    idle workers go to sleep soon instead of spinning (``server_properties``).
    """

    root: Path
    cache_dir: Path = field(default_factory=default_cache_dir)
    http_port: int = 9000
    pg_port: int = 8812
    ilp_tcp_port: int = 9009
    http_min_port: int = 9003
    heap: str = "512m"
    network_workers: int = 2
    query_workers: int = 1
    write_workers: int = 1
    version: str = QUESTDB_VERSION
    #: ``pg.net.connection.timeout``: a PG-wire connection silent this long is closed and
    #: its transaction rolled back, so a frozen client frees the session log's writer
    #: (config.QUESTDB_PG_IDLE_TIMEOUT_S); None keeps QuestDB's own default (300 s).
    pg_idle_timeout_s: float | None = QUESTDB_PG_IDLE_TIMEOUT_S
    #: Extra ``server.conf`` lines, applied last (e.g. ``("dev.mode.enabled", "true")``).
    extra_properties: tuple[tuple[str, str], ...] = ()
    #: Extra JVM options, after ticktape's own (``jvm_options``): a later flag wins.
    extra_jvm_options: tuple[str, ...] = ()

    @classmethod
    def with_free_ports(cls, root: Path, **kwargs: Any) -> QuestDBServerConfig:
        names = ("http_port", "pg_port", "ilp_tcp_port", "http_min_port")
        ports: dict[str, Any] = dict(zip(names, free_ports(4), strict=True))
        return cls(root=root, **(ports | kwargs))

    @property
    def ports(self) -> dict[str, int]:
        """``{"http": 9000, "pg": 8812, "ilp_tcp": 9009, "http_min": 9003}``"""
        return {k.removesuffix("_port"): v for k, v in vars(self).items() if k.endswith("_port")}

    def jvm_options(self) -> list[str]:
        """The JVM's options before ``-p <jar> -m ...``: heap, error file, module access."""
        opts = [f"-Xmx{self.heap}", f"-XX:ErrorFile={self.root}/hs_err_pid%p.log", *_JVM_FLAGS]
        return opts + list(self.extra_jvm_options)

    def server_properties(self) -> dict[str, str]:
        props = {
            "http.bind.to": f"{HOST}:{self.http_port}",
            "pg.net.bind.to": f"{HOST}:{self.pg_port}",
            "line.tcp.net.bind.to": f"{HOST}:{self.ilp_tcp_port}",
            "http.min.net.bind.to": f"{HOST}:{self.http_min_port}",
            "line.udp.enabled": "false",
            "telemetry.enabled": "false",
            "shared.network.worker.count": str(self.network_workers),
            "shared.query.worker.count": str(self.query_workers),
            "shared.write.worker.count": str(self.write_workers),
            "http.min.worker.count": "1",
            # An idle worker spins, then yields (Thread.yield) from round 10, naps
            # (parkNanos) from the nap threshold and sleeps 10 ms from round 10,000. The
            # default nap threshold, 7,000, meant thousands of yields each time work ran
            # out; ticks arrive in bursts a few times a second, so that cost more CPU than
            # the ingestion itself (JVM 54 -> 20 us per tick at 300 sessions,
            # docs/benchmarks.md, qtick7). Napping keeps the wake-up quick; when a worker
            # goes to sleep is left as it was.
            "shared.worker.nap.threshold": "100",
            # WAL apply as one job on the write pool above (its own pool spins by its own
            # thresholds); one apply thread is what two cores can give it anyway
            "wal.apply.worker.count": "0",
            # ticktape creates no materialized views and no views: without these their two
            # pools (one refresh, two compiler threads) are not started at all. Idle, they
            # woke often enough to cost about 1 % of a core, the same at 20,000 rows/s
            # (0.35-0.55 us of the JVM's CPU per row; docs/benchmarks.md, jvm25).
            "cairo.mat.view.enabled": "false",
            "mat.view.refresh.worker.count": "0",
            "view.compiler.worker.count": "0",
        }
        if self.pg_idle_timeout_s is not None:
            props["pg.net.connection.timeout"] = str(round(self.pg_idle_timeout_s * 1000))
        props.update(self.extra_properties)
        return props


def store_url(pg_port: int, http_port: int) -> str:
    return f"questdb://{HOST}:{pg_port}?ilp=http://{HOST}:{http_port}"


@dataclass
class ServerHandle:
    """A server started by :func:`start`; ``with`` stops it on exit."""

    config: QuestDBServerConfig
    pid: int
    process: subprocess.Popen[bytes]

    @property
    def store_url(self) -> str:
        return store_url(self.config.pg_port, self.config.http_port)

    @property
    def pg_conninfo(self) -> str:
        return f"host={HOST} port={self.config.pg_port} user=admin password=quest dbname=qdb"

    @property
    def ilp_conf(self) -> str:
        """Configuration string for ``questdb.Sender.from_conf`` (ILP over HTTP)."""
        return f"http::addr={HOST}:{self.config.http_port};"

    def stop(self, timeout_s: float = 30.0) -> None:
        stop(self.config.root, timeout_s=timeout_s)
        with contextlib.suppress(subprocess.TimeoutExpired):  # reap our child: no zombie
            self.process.wait(timeout=5)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_jar(config: QuestDBServerConfig) -> Path:
    """The pinned jar in the cache, fetched with Maven if missing (never a half file)."""
    target = config.cache_dir / f"questdb-{config.version}.jar"
    if target.is_file() and zipfile.is_zipfile(target):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarUnavailable(f"{target} is missing and `mvn` (to fetch it) is not on PATH")
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=config.cache_dir))
    try:
        artifact = f"org.questdb:questdb:{config.version}"
        args = ["dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={tmp}"]
        proc = subprocess.run([mvn, "-q", "-B", *args], capture_output=True, text=True, timeout=900)
        fetched = tmp / target.name
        if proc.returncode != 0 or not fetched.is_file():
            output = (proc.stdout + proc.stderr).strip()[-2000:]
            raise JarUnavailable(f"mvn failed to fetch {artifact} ({proc.returncode}): {output}")
        expected = QUESTDB_JAR_SHA256.get(config.version)
        digest = hashlib.sha256(fetched.read_bytes()).hexdigest()
        if expected is not None and digest != expected:
            raise JarUnavailable(f"{artifact}: sha256 {digest} != pinned {expected}")
        os.replace(fetched, target)  # atomic: same directory, same filesystem
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------- Java


def java_major(java: str) -> int | None:
    """Major version of a ``java`` binary, or None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if m is None:
        return None
    return int(m.group(1))  # "1.8.0" reads as 1: too old either way


def find_java(min_major: int = MIN_JAVA_MAJOR) -> str:
    """``$TICKTAPE_JAVA`` if set (a binary or a JDK home), else the first Java >= ``min_major``
    of ``$JAVA_HOME``, ``PATH`` and ``/usr/lib/jvm/*`` (newest first)."""
    explicit = os.environ.get("TICKTAPE_JAVA")
    if explicit:
        path = Path(explicit) / "bin" / "java" if Path(explicit).is_dir() else Path(explicit)
        major = java_major(str(path))
        if major is None or major < min_major:
            raise JavaNotFound(
                f"TICKTAPE_JAVA={explicit} is not a Java >= {min_major} ({major or 'not runnable'})"
            )
        return str(path)
    candidates: list[str] = []
    if java_home := os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(java_home) / "bin" / "java"))
    if on_path := shutil.which("java"):
        candidates.append(on_path)
    jvms = [p for p in Path("/usr/lib/jvm").glob("*/bin/java") if p.is_file()]
    jvms.sort(key=lambda p: [int(n) for n in re.findall(r"\d+", p.parts[-3])[:3]], reverse=True)
    candidates += map(str, jvms)
    tried: list[str] = []
    for cand in dict.fromkeys(candidates):
        major = java_major(cand)
        if major is not None and major >= min_major:
            return cand
        tried.append(f"{cand} ({major or 'not runnable'})")
    raise JavaNotFound(
        f"QuestDB {QUESTDB_VERSION} needs Java >= {min_major}; tried: "
        f"{', '.join(tried) or 'nothing found'}. Install a JDK or set "
        "TICKTAPE_JAVA (java binary) or JAVA_HOME."
    )


def start(config: QuestDBServerConfig, wait_timeout_s: float = 60.0) -> ServerHandle:
    """Launch a detached JVM for ``config.root`` and return once it answers HTTP and PG."""
    root = config.root.resolve()
    config = replace(config, root=root)
    pid = _read_pid(root)
    if pid is not None and _alive(pid, root):
        url = _read_state(root).get("store_url")
        raise QuestDBServerError(f"QuestDB already runs in {root} (pid {pid}): {url}")
    _clear_files(root)
    for name, port in config.ports.items():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            try:
                s.bind((HOST, port))
            except OSError as exc:
                raise QuestDBServerError(f"{name} port {HOST}:{port} is in use") from exc
    jar, java = ensure_jar(config), find_java()
    (root / "conf").mkdir(parents=True, exist_ok=True)
    props = "".join(f"{k}={v}\n" for k, v in config.server_properties().items())
    (root / "conf" / "server.conf").write_text(props)
    (root / "conf" / "log.conf").write_text(_LOG_CONF)
    cmd = [java, *config.jvm_options()]
    cmd += ["-p", str(jar), "-m", "io.questdb/io.questdb.ServerMain", "-d", str(root)]
    # QDB_* variables would override server.conf; the config above is the whole truth.
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDB_")}
    with open(root / LOG_FILE, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
            start_new_session=True,
        )
    (root / PID_FILE).write_text(f"{proc.pid}\n")
    state = {"pid": proc.pid, "version": config.version, "java": java, "root": str(root)}
    state["heap"] = config.heap
    state["extra_jvm_options"] = list(config.extra_jvm_options)
    state |= {f"{name}_port": port for name, port in config.ports.items()}
    state |= {"log": str(root / LOG_FILE), "started_at": datetime.now(UTC).isoformat()}
    state["store_url"] = store_url(config.pg_port, config.http_port)
    _write_json(root / STATE_FILE, state)
    handle = ServerHandle(config=config, pid=proc.pid, process=proc)
    deadline = time.monotonic() + wait_timeout_s
    while True:
        if proc.poll() is not None:
            _clear_files(root)
            raise QuestDBServerError(f"QuestDB exited ({proc.returncode}):\n{log_tail(root)}")
        if _http_ok(config.http_min_port) and _pg_ok(handle.pg_conninfo):
            return handle
        if time.monotonic() > deadline:
            handle.stop()
            raise QuestDBServerError(f"QuestDB not up in {wait_timeout_s:g}s:\n{log_tail(root)}")
        time.sleep(0.1)


def stop(root: Path, timeout_s: float = 30.0) -> bool:
    """SIGTERM the server of ``root`` (its process group), SIGKILL after ``timeout_s``.

    Idempotent: returns False when nothing was running. Pid and state files are removed.
    """
    root = root.resolve()
    pid = _read_pid(root)
    if pid is None or not _alive(pid, root):
        _clear_files(root)
        return False
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)  # the JVM leads its own session: pgid == pid
        deadline = time.monotonic() + wait_s
        while _alive(pid, root) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(pid, root):
            _clear_files(root)
            return True
    raise QuestDBServerError(f"QuestDB pid {pid} survived SIGKILL")


def running_config(root: Path) -> QuestDBServerConfig:
    """The config of the server running in ``root``, to start it again as it was: its
    ports, heap, extra JVM options and version from the state file and every
    ``server.conf`` property as written (a non-default idle timeout, worker counts, extra
    properties)."""
    root = root.resolve()
    state = status(root)
    if not state["running"]:
        raise QuestDBServerError(f"no QuestDB runs in {root}")
    props: list[tuple[str, str]] = []
    for line in (root / "conf" / "server.conf").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            props.append((key.strip(), value.strip()))
    return QuestDBServerConfig(
        root=root,
        http_port=int(state["http_port"]),
        pg_port=int(state["pg_port"]),
        ilp_tcp_port=int(state["ilp_tcp_port"]),
        http_min_port=int(state["http_min_port"]),
        heap=str(state.get("heap", QuestDBServerConfig.heap)),
        extra_jvm_options=tuple(str(o) for o in state.get("extra_jvm_options", ())),
        version=str(state.get("version", QUESTDB_VERSION)),
        # the file's own line for the timeout, if any, comes with the rest
        pg_idle_timeout_s=None,
        extra_properties=tuple(props),
    )


def status(root: Path) -> dict[str, Any]:
    """What runs in ``root``: ``running``, ``healthy`` (HTTP health check) and the state file."""
    root = root.resolve()
    state, pid = _read_state(root), _read_pid(root)
    running = pid is not None and _alive(pid, root)
    healthy = running and "http_min_port" in state and _http_ok(int(state["http_min_port"]))
    info = {"root": str(root), "running": running, "healthy": healthy, "pid": None}
    return info | (state | {"pid": pid} if running else {})


def log_tail(root: Path, lines: int = 40) -> str:
    log = root / LOG_FILE
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def _http_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _pg_ok(conninfo: str) -> bool:
    import psycopg  # a store dependency; imported here to keep CLI start-up light

    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT 1").fetchone()
            return row is not None and row[0] == 1
    except psycopg.Error:
        return False


def _alive(pid: int, root: Path) -> bool:
    """Whether ``pid`` is a live (not zombie) QuestDB serving ``root``; guards pid reuse."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child
    proc = Path(f"/proc/{pid}")
    if not proc.parent.is_dir():  # no procfs (macOS): signal 0 is all we have
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            return True
        return False
    try:
        stat = (proc / "stat").read_text()
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return b"io.questdb/io.questdb.ServerMain" in argv and os.fsencode(str(root)) in argv


def _read_pid(root: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((root / PID_FILE).read_text().strip())
    return None


def _read_state(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _clear_files(root: Path) -> None:
    for name in (PID_FILE, STATE_FILE):
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()
