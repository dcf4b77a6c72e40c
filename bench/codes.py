"""The ``--code LABEL=SRC`` option of the benchmarks that compare trees.

``--code main=/tmp/main/src`` (repeatable) also runs the measured part from another
tree's ``src`` (a ``git archive`` of a branch, say) through ``PYTHONPATH``; this tree
is always the first code, labelled ``this``. Each benchmark alternates the codes round
after round, so that the machine's load falls on all of them alike; ``run_rounds`` is
that loop for a benchmark whose child measures one code on tables of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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


def code_tag(label: str) -> str:
    """``label`` as a piece of a table prefix or file name: its letters and digits, 8 at
    most."""
    return "".join(c for c in label.lower() if c.isalnum())[:8]


def with_prefix(url: str, prefix: str) -> str:
    """A QuestDB store ``url`` on tables of its own: ``prefix`` added to its query."""
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def env_for(src: str | None, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with ``PYTHONPATH`` set to ``src`` (unchanged for this tree)."""
    env = dict(base)
    if src is not None:
        env["PYTHONPATH"] = src
    return env


def run_rounds(
    args: argparse.Namespace,
    child_args: list[str],
    *,
    script: str,
    prefix: str,
    drop_tables: Callable[[str], None],
    show_stderr: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Runs ``script --child --store URL child_args`` once per code in each of
    ``args.rounds`` rounds (``args.store``, ``args.code``), the codes alternating, and
    returns each code's results in round order: the child's last stdout line (JSON) with
    the 1-minute load average beside it, each also printed as it comes.

    Every child gets tables of its own, ``prefix`` plus this process, code and round, so
    that all start alike; on QuestDB ``drop_tables(url)`` drops them after it, whatever
    its outcome. The child's stderr tail is printed if it failed (it then ends the
    benchmark), or always with ``show_stderr``."""
    results: dict[str, list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for label, src in code_trees(args.code):
            url = with_prefix(args.store, f"{prefix}{os.getpid()}_{code_tag(label)}{round_}_")
            cmd = [sys.executable, script, "--child", "--store", url, *child_args]
            try:
                done = subprocess.run(
                    cmd, env=env_for(src, os.environ), capture_output=True, text=True, check=False
                )
            finally:
                if url.startswith("questdb"):
                    drop_tables(url)
            if show_stderr or done.returncode != 0:
                print(done.stderr[-6000:], file=sys.stderr)
            if done.returncode != 0:
                raise SystemExit(f"{label}: the child failed ({done.returncode})")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["load_avg_1m"] = round(os.getloadavg()[0], 2)
            results.setdefault(label, []).append(result)
            print(f"round {round_ + 1} {label}: {json.dumps(result)}", flush=True)
    return results
