"""The public surface of each package is pinned, and nothing reaches into a private module.

A backend (``ticktape.store.memory``, ``.sqlite``, ``.questdb``) and the test support
(``ticktape.testing``) are packages with private ``_modules`` and one public face,
their ``__init__``. Changing what a face exports is a decision: update this list.
"""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

EXPORTS = {
    "ticktape.store": [
        "RetryingStore",
        "SessionStore",
        "Store",
        "TickStore",
        "check_reachable",
        "open_store",
    ],
    "ticktape.store.memory": ["MemoryStore"],
    "ticktape.store.sqlite": ["DRIVER_ERRORS", "SqliteStore"],
    "ticktape.store.questdb": [
        "CommitMarks",
        "DRIVER_ERRORS",
        "Fence",
        "LogLookups",
        "ParquetExport",
        "QuestDBAddress",
        "QuestDBSessionStore",
        "QuestDBStore",
        "QuestDBTickStore",
        "READ_CONNECTIONS",
        "SESSION_LOG_COLUMNS",
        "SHOW_PARAMETERS_ATTEMPTS",
        "TICK_FLOOR_MARGIN_US",
        "adopt_idle_timeout",
        "in_list",
        "log_params",
        "book_frame",
        "send_marks",
        "serialise_frame",
        "sql_inline",
        "sql_literal",
        "trades_frame",
        "values_statements",
    ],
    "ticktape.feeds.binance": [
        "REST_URL",
        "WS_MARKET_URL",
        "WS_PUBLIC_URL",
        "AggTrade",
        "BinanceEndpoints",
        "BinanceFeed",
        "DepthSnapshot",
        "DepthUpdate",
        "MalformedMessage",
        "depth_weight",
        "parse_agg_trade",
        "parse_depth_snapshot",
        "parse_depth_update",
        "unwrap",
    ],
    "ticktape.feeds.mexc": [
        "REST_URL",
        "WS_URL",
        "Deal",
        "DepthData",
        "MalformedMessage",
        "MexcEndpoints",
        "MexcFeed",
        "NoContractDetail",
        "base_quantity",
        "full_depth_fits",
        "parse_contract_size",
        "parse_deals",
        "parse_depth",
        "parse_depth_snapshot",
    ],
    "ticktape.feeds.fakes": [
        "FakeBinance",
        "FakeConn",
        "FakeExchange",
        "FakeMexc",
        "SentDeal",
        "SentTrade",
    ],
    "ticktape.testing": [
        "OPERATIONS",
        "TICKTAPE",
        "FaultRule",
        "FaultyStore",
        "Instance",
        "draft_session",
        "ServerProcess",
        "crash",
        "eventually",
        "free_port",
        "instances",
        "iter_sim_blocks",
        "lone_reconciler",
        "parse_fault_spec",
        "record_source",
        "running_server",
        "sigstop",
        "sim_blocks",
        "stopped",
        "store_finished",
    ],
}


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_each_package_exports_exactly_its_public_names(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(EXPORTS[package])
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    # nothing defined in the package is public without being exported
    extra = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name not in module.__all__
        and not isinstance(value, types.ModuleType)
        and str(getattr(value, "__module__", "")).startswith(package)
    }
    assert extra == set()


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def _module_of(path: Path) -> str:
    relative = path.relative_to(ROOT / "src") if path.is_relative_to(ROOT / "src") else None
    if relative is None:
        return ""  # tests and bench belong to no ticktape package
    return ".".join(relative.with_suffix("").parts)


def test_no_module_imports_a_private_module_of_another_package() -> None:
    """``a.b._c`` may be imported only from inside ``a.b`` (src, tests and bench alike)."""
    offenders = []
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    files += (ROOT / "bench").rglob("*.py")
    for path in files:
        here = _module_of(path)
        for name in _imports(path):
            if not name.startswith("ticktape."):
                continue
            parts = name.split(".")
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])
                    if not (here == owner or here.startswith(owner + ".")):
                        offenders.append(f"{path.relative_to(ROOT)}: {name}")
                    break
    assert offenders == [], "\n".join(offenders)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _patches_of_private_attributes(source: str, name: str) -> list[str]:
    """``x._name = ...`` (other than on ``self``/``cls``) and ``setattr``/``monkeypatch.setattr``
    /``delattr`` of a literal private name in ``source``, as ``name:line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and _private(target.attr)
                and not (isinstance(target.value, ast.Name) and target.value.id in {"self", "cls"})
            ):
                found.append(f"{name}:{node.lineno}: {ast.unparse(target)} =")
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called not in {"setattr", "delattr"}:
                continue
            for arg in node.args[:2]:
                if (
                    isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)
                    and any(_private(part) for part in arg.value.split("."))
                ):
                    found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_test_or_benchmark_patches_a_private_attribute() -> None:
    """Tests and benchmarks go through public faces and documented testing hooks
    (``QuestDBTickStore.before_send`` / ``before_gap_write``, ``QuestDBSessionStore.on_read_many``,
    ``instances(runners=...)``), never by replacing a ``_private`` attribute."""
    files = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]
    offenders = [
        hit
        for path in sorted(files)
        for hit in _patches_of_private_attributes(
            path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))
        )
    ]
    assert offenders == [], "\n".join(offenders)


def test_the_private_attribute_scan_finds_each_kind_of_patch() -> None:
    code = (
        "node.supervisor._runners = 1\n"
        "self._fine = 2\n"
        "monkeypatch.setattr(store.inner.ticks, '_send_group', f)\n"
        "monkeypatch.setattr('ticktape.store.sqlite._db.log', f)\n"
        "monkeypatch.setattr(cli, 'client_for', f)\n"
        "setattr(obj, '_x', 3)\n"
        "obj.__dict__ = {}\n"
    )
    hits = _patches_of_private_attributes(code, "sample")
    assert [hit.split(":")[1] for hit in hits] == ["1", "3", "4", "6"], hits
