"""No ``asyncio.wait_for`` in the product: ``asyncio.timeout`` instead.

On Python 3.11 ``wait_for`` returns an answer that reaches the event loop in the same
turn as its caller's cancellation, and the cancellation is lost: the caller runs on. A
crashed instance's heartbeat renewed on for ever that way, and ``crash()`` waited for it
(the CI hang of test_faults_resume; tests/integration/test_closed_state.py reproduces
it). ``async with asyncio.timeout(...)`` keeps the cancellation.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ticktape

SRC = Path(ticktape.__file__).parent


def _wait_fors(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "wait_for"
            and isinstance(node.value, ast.Name)
            and node.value.id == "asyncio"
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "asyncio":
            lines += [node.lineno for alias in node.names if alias.name == "wait_for"]
    return lines


def test_the_product_never_awaits_with_asyncio_wait_for() -> None:
    found = {
        str(path.relative_to(SRC)): lines
        for path in sorted(SRC.rglob("*.py"))
        if (lines := _wait_fors(path))
    }
    assert found == {}, (
        f"asyncio.wait_for drops cancellations on 3.11; use asyncio.timeout: {found}"
    )


def test_the_check_finds_a_wait_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import asyncio\nfrom asyncio import wait_for\n\n"
        "async def f(x):\n    return await asyncio.wait_for(x, 1)\n"
    )
    assert sorted(_wait_fors(sample)) == [2, 5]
