"""Shared fixtures: the backend option, per-test event loops and stores.

Backends
    ``--backend memory|sqlite|questdb|all`` (default ``all``: memory and sqlite,
    plus questdb when a QuestDB can be used — see :func:`questdb_available`).
    Every test that asks for ``store`` or ``store_factory`` runs once per selected
    backend. A backend that cannot run a test skips it with the reason; it never
    silently passes.

Event loops
    The project does not use pytest-asyncio. Tests are plain functions; ``run``
    runs a coroutine on the test's own event loop (one :class:`asyncio.Runner` per
    test, closed at teardown), and stores are opened and closed on that loop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sys
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings

from ticktape.domain import (
    Session,
    SessionStatus,
)
from ticktape.store import RetryingStore, Store, open_store
from ticktape.store.memory import MemoryStore
from ticktape.testing import draft_session

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

# Deterministic property tests that leave no example database behind (the state machine
# test searches at random even so: see tests/integration/test_stateful.py). For a long
# search (nightly, or on purpose): ``pytest --hypothesis-profile ticktape-nightly``.
settings.register_profile("ticktape", derandomize=True, database=None, deadline=None)
settings.register_profile(
    "ticktape-nightly", derandomize=False, database=None, deadline=None, max_examples=500
)
settings.load_profile("ticktape")

BACKEND_OPTION_CHOICES = ("memory", "sqlite", "questdb", "all")
QUESTDB_URL_ENV = "TICKTAPE_TEST_QUESTDB_URL"

#: A fixed, microsecond-precise instant: the ``created_at`` of test sessions counts up from it.
T0 = datetime(2024, 3, 1, 12, 0, 0, 123_456, tzinfo=UTC)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        choices=BACKEND_OPTION_CHOICES,
        default="all",
        help="store backend(s) the conformance tests run on (default: all = memory, sqlite, "
        f"and questdb when ${QUESTDB_URL_ENV} is set or a QuestDB server can be started)",
    )


# --------------------------------------------------------------------------- QuestDB
# The one place to wire a real QuestDB: make ``questdb_url`` start a server (and
# ``_can_start_questdb`` say whether it can), the rest of the suite follows.


def _can_start_questdb() -> bool:
    """Whether ``questdb_url`` can start a server itself: Java and Maven (for the jar) are here.

    ``TICKTAPE_TEST_QUESTDB=0`` turns the QuestDB tests off (they then skip, saying so).
    """
    if os.environ.get("TICKTAPE_TEST_QUESTDB") == "0":
        return False
    from ticktape.questdb_server import QuestDBServerError, find_java

    try:
        find_java()
    except QuestDBServerError:
        return False
    jar = Path(os.environ.get("TICKTAPE_QUESTDB_CACHE", "~/.cache/ticktape/questdb")).expanduser()
    return shutil.which("mvn") is not None or any(jar.glob("questdb-*.jar"))


def questdb_available() -> bool:
    available = bool(os.environ.get(QUESTDB_URL_ENV)) or _can_start_questdb()
    if not available and os.environ.get("TICKTAPE_REQUIRE_QUESTDB") == "1":
        raise pytest.UsageError(
            "TICKTAPE_REQUIRE_QUESTDB=1 but no QuestDB can be started (Java >= 17 and mvn, "
            f"or {QUESTDB_URL_ENV})"
        )
    return available


@pytest.fixture(scope="session")
def questdb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``questdb://...`` URL of a real QuestDB for this test session.

    ``$TICKTAPE_TEST_QUESTDB_URL`` if set; otherwise a server started here from the
    pinned Maven Central jar on free loopback ports, stopped at the end.
    """
    url = os.environ.get(QUESTDB_URL_ENV)
    if url:
        yield url
        return
    if not _can_start_questdb():
        pytest.skip(
            f"no QuestDB: needs Java >= 17 and mvn (or the cached jar), or set {QUESTDB_URL_ENV}"
        )
    from ticktape import questdb_server

    # 1 GiB of heap: the server keeps every table's metadata on it, and a suite's worth
    # of prefixed tables (dropped after each test) comes and goes through it. The
    # managed server's idle timeout (config.QUESTDB_PG_IDLE_TIMEOUT_S), as in production:
    # a test that keeps a raw PG connection of its own across a wait longer than that
    # uses a server of its own (``own_questdb``)
    config = questdb_server.QuestDBServerConfig.with_free_ports(
        tmp_path_factory.mktemp("questdb"), heap="1g"
    )
    questdb_server.ensure_jar(config)
    handle = questdb_server.start(config)
    try:
        yield handle.store_url
    finally:
        handle.stop()


def isolated_questdb_url(url: str) -> str:
    """The same server with tables of this test's own (a fresh table-name prefix)."""
    prefix = f"t{next(_PREFIXES)}_"
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


_PREFIXES = itertools.count(int(datetime.now().timestamp()) % 100_000 * 1000)


# --------------------------------------------------------------------------- backends
# Each backend is one function: (request, tmp_path) -> a callable that returns a new,
# not yet opened handle on the test's own, empty database.

Opener = Callable[[], Store]


def _memory_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    # A MemoryStore's state lives in the instance: every "handle" is the same store.
    store = MemoryStore()
    return lambda: store


def _sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    try:
        import ticktape.store.sqlite  # noqa: F401
    except Exception as exc:
        pytest.skip(f"sqlite backend not importable: {exc!r}")
    url = f"sqlite:///{tmp_path}/t.db"
    return lambda: open_store(url)


def _questdb_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """QuestDB: each test must see an empty database (the server fixture isolates tests)."""
    try:
        import ticktape.store.questdb  # noqa: F401
    except Exception as exc:
        pytest.skip(f"QuestDB backend not built yet ({exc!r})")
    url = isolated_questdb_url(request.getfixturevalue("questdb_url"))
    request.addfinalizer(lambda: _drop_tables(url))
    return lambda: open_store(url)


def _drop_tables(url: str) -> None:
    """Drop a test's tables so a long run does not pile up thousands of them."""
    import psycopg

    from ticktape.store.questdb import QuestDBAddress

    address = QuestDBAddress.from_url(url)
    with psycopg.connect(address.conninfo, autocommit=True) as conn:
        for table in (
            "session_log",
            "trades",
            "orderbook",
            "gaps",
            "instances",
            "session_keys",
            "result_summary",
            "result_orders",
            "result_fills",
            "result_equity",
        ):
            conn.execute(f"DROP TABLE IF EXISTS {address.prefix}{table}")


#: What each backend can promise beyond the common contract; a test that needs more
#: carries ``@pytest.mark.requires("name")`` and is skipped, with the reason, elsewhere.
CAPABILITIES: dict[str, dict[str, str]] = {
    "memory": {"exact_write_counts": "", "first_write_wins": "", "trade_identity_without_ts": ""},
    "sqlite": {"exact_write_counts": "", "first_write_wins": "", "trade_identity_without_ts": ""},
    "questdb": {},
}
MISSING_REASONS = {
    "exact_write_counts": "ILP cannot report which rows DEDUP merged: write() returns rows sent",
    "first_write_wins": "DEDUP UPSERT KEYS keeps the last write of a key, not the first",
    "trade_identity_without_ts": "DEDUP keys must include the designated timestamp: a trade "
    "id stored again at another ts is another row (a replay from the feed has the same ts)",
}

BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Opener]] = {
    "memory": _memory_backend,
    "sqlite": _sqlite_backend,
    "questdb": _questdb_backend,
}


def selected_backends(config: pytest.Config) -> list[str]:
    choice = config.getoption("--backend")
    if choice != "all":
        return [choice]
    return ["memory", "sqlite", *(["questdb"] if questdb_available() else [])]


def pytest_report_header(config: pytest.Config) -> str:
    note = "" if questdb_available() else " (questdb: no Java >= 17 / mvn here)"
    return f"ticktape backends: {', '.join(selected_backends(config))}{note}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize(
            "backend",
            [
                pytest.param(
                    name, id=name, marks=[pytest.mark.questdb] if name == "questdb" else []
                )
                for name in selected_backends(metafunc.config)
            ],
        )


# --------------------------------------------------------------------------- loops and stores


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    """Run a coroutine to completion on this test's event loop: ``result = run(coro)``.

    If the run ends by an error raised into the loop from outside — pytest-timeout's
    SIGALRM failing a hung test — every task still pending is printed with the line it
    awaits on (stderr), so a hang names what it waited for; the threads' stacks are
    pytest-timeout's own dump.
    """
    with asyncio.Runner() as runner:

        def run_coro(coro: Coroutine[Any, Any, T]) -> T:
            try:
                return runner.run(coro)
            except Exception:  # the test's own failure: its traceback says enough
                raise
            except BaseException:  # pytest-timeout's Failed, a KeyboardInterrupt
                _dump_pending_tasks(runner.get_loop())
                raise

        yield run_coro


@pytest.fixture
def questdb_store(questdb_url: str, run: Run[Any]) -> Iterator[RetryingStore]:
    """An opened store on this test's own tables of the shared QuestDB server; closed,
    and its tables dropped, after the test."""
    url = isolated_questdb_url(questdb_url)
    store = open_store(url)
    run(store.open())
    yield store
    run(store.close())
    _drop_tables(url)


class LoopTurns:
    """Counts the turns another task gets while some work runs, one per yield of the
    event loop: with a pass sliced at 0 s (``slice_s`` 0, one item per slice), the check
    that it yields between every two items. ``count`` may be read during the work."""

    def __init__(self) -> None:
        self.count = 0

    async def during(self, work: Coroutine[Any, Any, T]) -> T:
        done = False

        async def other() -> None:
            while not done:
                await asyncio.sleep(0)
                self.count += 1

        task = asyncio.create_task(other())
        await asyncio.sleep(0)  # started: counts only the turns ``work`` gives it
        self.count = 0
        try:
            return await work
        finally:
            done = True
            await task


def _dump_pending_tasks(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not pending:
        return
    print(f"\n--- {len(pending)} asyncio tasks pending when the run ended ---", file=sys.stderr)
    for task in pending:
        task.print_stack(limit=8, file=sys.stderr)


@pytest.fixture
def store_factory(
    backend: str, run: Run[Any], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], Store]]:
    """Open handles on the test's one database of ``backend``; all are closed at teardown.

    Each call returns another opened handle, as a second process or instance would
    have (memory: the same store). The first call gives the ``store`` fixture.
    """
    for marker in request.node.iter_markers("requires"):
        for capability in marker.args:
            if capability not in CAPABILITIES[backend]:
                pytest.skip(f"{backend} lacks {capability}: {MISSING_REASONS[capability]}")
    opener = BACKENDS[backend](request, tmp_path)
    opened: list[Store] = []

    def open_handle() -> Store:
        store = opener()
        if all(store is not other for other in opened):
            run(store.open())
            opened.append(store)
        return store

    try:
        yield open_handle
    finally:
        for store in reversed(opened):
            run(store.close())


@pytest.fixture
def store(store_factory: Callable[[], Store]) -> Store:
    """An opened store of the selected backend, empty, closed at teardown."""
    return store_factory()


@pytest.fixture
def other_handle(backend: str, store: Store, store_factory: Callable[[], Store]) -> Store:
    """A second opened handle on ``store``'s database (its own connections), as another
    process or instance has. The memory backend has no such thing — its whole state is
    one object in this process — so tests that need one skip there, saying so."""
    if backend == "memory":
        pytest.skip("memory: the store is one in-process object; there is no second handle")
    other = store_factory()
    assert other is not store
    return other


# --------------------------------------------------------------------------- sessions


@pytest.fixture
def make_session() -> Callable[..., Session]:
    """Build (not store) a pending v1 session; each call is created 1 s after the previous.

    Keyword arguments override any :class:`Session` field.
    """
    counter = itertools.count()

    def make(**overrides: Any) -> Session:
        return draft_session(**{"created_at": T0 + timedelta(seconds=next(counter)), **overrides})

    return make


@pytest.fixture
def running_session(
    store: Store, run: Run[Any], make_session: Callable[..., Session]
) -> Callable[..., Session]:
    """Create a session in ``store`` and move it to ``running`` owned by ``owner``."""

    def start(owner: str = "owner-1", **overrides: Any) -> Session:
        created: Session = run(
            store.sessions.create_session(make_session(**overrides), actor="test")
        )
        running: Session = run(
            store.sessions.transition(
                created.id,
                expected_version=created.version,
                to_status=SessionStatus.RUNNING,
                actor="test",
                reason="started",
                owner=owner,
                lease_expires_at=datetime.now(UTC) + timedelta(minutes=10),
            )
        )
        return running

    return start
