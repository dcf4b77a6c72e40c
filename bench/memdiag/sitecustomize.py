"""Memory samples of a ``ticktape serve`` process, for ``bench/capacity.py --mem-every-s``.

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``; the ramp puts this
directory there and sets ``BENCH_MEM_DIR``. In a ``serve`` process a daemon thread then
writes one JSON line every ``BENCH_MEM_EVERY_S`` to ``BENCH_MEM_DIR/<pid>.jsonl``: RSS and
anonymous memory (``/proc/self/smaps_rollup``), CPython's allocator (its arenas, from
``sys._debugmallocstats``; its live blocks), glibc's malloc (``mallinfo2``: the heaps'
size, what is in use and free in them, the mapped blocks) and the rows the instance's
tick buffers hold (``RowPool``): what grows, live memory or the allocators' holdings.
Nothing of it runs in the product.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import tempfile
import threading
import time

_DIR = os.environ.get("BENCH_MEM_DIR")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _smaps() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Anonymous:"):
                out[parts[0][:-1].lower() + "_mib"] = int(parts[1]) >> 10
    return out


def _pymalloc() -> dict[str, int]:
    """CPython's allocator: its arenas' total and the bytes in its allocated blocks."""
    with tempfile.TemporaryFile() as tf:
        saved = os.dup(2)  # _debugmallocstats writes to the C stderr
        os.dup2(tf.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tf.seek(0)
        text = tf.read().decode(errors="replace")
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.lstrip("# ").partition("=")
        key = key.strip()
        if key in ("bytes in allocated blocks", "Total") and key not in out:  # the first
            out[key] = int(value.strip().replace(",", ""))
    return {
        "pymalloc_arenas_mib": out.get("Total", 0) >> 20,
        "pymalloc_used_mib": out.get("bytes in allocated blocks", 0) >> 20,
    }


def _sample(libc: ctypes.CDLL | None) -> dict[str, object]:
    record: dict[str, object] = {**_smaps(), **_pymalloc(), "py_blocks": sys.getallocatedblocks()}
    if libc is not None:
        info = libc.mallinfo2()
        record.update(
            malloc_heaps_mib=info.arena >> 20,
            malloc_used_mib=info.uordblks >> 20,
            malloc_free_mib=info.fordblks >> 20,
            malloc_mapped_mib=info.hblkhd >> 20,
        )
    pools = [o for o in gc.get_objects() if type(o).__qualname__ == "RowPool"]
    record["buffered_rows"] = sum(getattr(p, "rows", 0) for p in pools)
    return record


def _run(every_s: float) -> None:
    try:
        libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        libc = None
    path = os.path.join(_DIR or ".", f"{os.getpid()}.jsonl")
    began = time.monotonic()
    while True:
        time.sleep(every_s)
        record = {"t_s": round(time.monotonic() - began), **_sample(libc)}
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


if _DIR and "serve" in sys.argv:
    os.makedirs(_DIR, exist_ok=True)
    every = float(os.environ.get("BENCH_MEM_EVERY_S", "30"))
    threading.Thread(target=_run, args=(every,), name="bench-memdiag", daemon=True).start()
