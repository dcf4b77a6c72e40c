"""``ticktape serve``'s collector settings (ticktape.api.heap), in a fresh process:
freezing the heap of the process that runs the tests would change every other test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ticktape.config import Settings

PROBE = """
import gc, json
before = list(gc.get_threshold())
import ticktape.api, ticktape.api.heap as heap
heap.tune_collector()
print(json.dumps({"before": before, "after": list(gc.get_threshold()),
                  "frozen": gc.get_freeze_count()}))
"""


def test_tune_collector_freezes_the_start_up_heap_and_spaces_full_collections() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    figures = json.loads(out.stdout)
    before, after = figures["before"], figures["after"]
    assert after == [before[0], before[1], 100]  # only the full collections are spaced out
    assert figures["frozen"] > 5_000, figures  # the imported modules' objects, out of reach


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, True), ({"TICKTAPE_PYTHON_GC": "1"}, True), ({"TICKTAPE_PYTHON_GC": "0"}, False)],
)
def test_the_setting_defaults_on(env: dict[str, str], expected: bool) -> None:
    assert Settings.from_env(env).python_gc_tuning is expected


def test_a_bad_value_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="TICKTAPE_PYTHON_GC"):
        Settings.from_env({"TICKTAPE_PYTHON_GC": "maybe"})
