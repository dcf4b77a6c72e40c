"""The ``--code LABEL=SRC`` option of the benchmarks that compare trees.

``--code main=/tmp/main/src`` (repeatable) also runs the measured part from another
tree's ``src`` (a ``git archive`` of a branch, say) through ``PYTHONPATH``; this tree
is always the first code, labelled ``this``. Each benchmark alternates the codes round
after round, so that the machine's load falls on all of them alike.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

THIS = "this"


def add_code_option(parser: argparse.ArgumentParser, what: str = "the measured part") -> None:
    """Adds ``--code LABEL=SRC``; ``what`` says what runs from SRC in ``--help``."""
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help=f"also run {what} from the ticktape in SRC (a checkout's src/, via "
        "PYTHONPATH); repeatable, the codes alternate round after round",
    )


def code_trees(items: list[str]) -> list[tuple[str, str | None]]:
    """``(label, src)`` per code: this tree first (``src`` None), then each ``--code``
    with its SRC made absolute (children run in other directories)."""
    codes: list[tuple[str, str | None]] = [(THIS, None)]
    for item in items:
        label, _, src = item.partition("=")
        codes.append((label, str(Path(src).resolve())))
    return codes


def env_for(src: str | None, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with ``PYTHONPATH`` set to ``src`` (unchanged for this tree)."""
    env = dict(base)
    if src is not None:
        env["PYTHONPATH"] = src
    return env
