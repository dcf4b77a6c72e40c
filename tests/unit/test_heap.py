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


MMAP_PROBE = """
import ctypes, json, sys
import numpy as np
import ticktape.api.heap as heap

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
        "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info

def mapped(size):
    # whether a block of ``size`` bytes is a mapping of its own (hblks: mapped blocks)
    before = libc.mallinfo2().hblks
    block = np.empty(size, np.uint8)
    after = libc.mallinfo2().hblks
    del block
    return after > before

fixed = heap.fix_mmap_threshold(int(sys.argv[1])) if int(sys.argv[1]) else None
first = mapped(1 << 20)
big = np.ones(16 << 20, np.uint8)  # a 16 MiB mapping, freed: glibc raises its threshold
del big
print(json.dumps({"fixed": fixed, "first": first, "after_big_free": mapped(1 << 20)}))
"""


def _mmap_probe(threshold: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", MMAP_PROBE, str(threshold)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dict(json.loads(out.stdout))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_fixed_mmap_threshold_keeps_large_blocks_mapped_after_a_larger_one_was_freed() -> None:
    """With glibc's own threshold, a 1 MiB block is mapped until a 16 MiB mapping is
    freed, then comes from the heap (where what is freed stays resident); fixed by
    ``fix_mmap_threshold``, it stays a mapping of its own."""
    assert _mmap_probe(0) == {"fixed": None, "first": True, "after_big_free": False}
    assert _mmap_probe(128 * 1024) == {"fixed": True, "first": True, "after_big_free": True}


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, 128 * 1024), ({"TICKTAPE_MALLOC_MMAP_THRESHOLD_BYTES": "0"}, 0)],
)
def test_the_mmap_threshold_setting(env: dict[str, str], expected: int) -> None:
    assert Settings.from_env(env).malloc_mmap_threshold_bytes == expected


def test_a_negative_mmap_threshold_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="TICKTAPE_MALLOC_MMAP_THRESHOLD_BYTES"):
        Settings.from_env({"TICKTAPE_MALLOC_MMAP_THRESHOLD_BYTES": "-1"})
