"""Canonical JSON for results rows: the bytes the results hash is taken over.

Keys sorted, no spaces, floats in Python's shortest round-trip form with -0.0
written as 0.0, non-finite numbers refused — the same bytes as
``json.dumps(row, sort_keys=True, separators=(",", ":"))`` for finite rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as encode_str

__all__ = ["canonical_line", "encode_str", "value"]


def value(v: object) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"results hold a non-finite number {v!r}")
        return repr(v + 0.0)  # -0.0 + 0.0 is 0.0: one spelling for zero
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return encode_str(v)
    raise TypeError(f"cannot put {type(v).__name__} in a results row")


def canonical_line(row: Mapping[str, object]) -> str:
    """One row as canonical JSON: keys sorted, no spaces, floats in shortest round-trip
    form (what ``json.dumps(sort_keys=True, separators=(",", ":"))`` writes, with -0.0
    as 0.0); non-finite numbers are refused."""
    return "{" + ",".join(f"{encode_str(k)}:{value(row[k])}" for k in sorted(row)) + "}"
