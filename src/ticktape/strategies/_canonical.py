"""Canonical JSON for results rows: the bytes the results hash is taken over.

Keys sorted, no spaces, floats in Python's shortest round-trip form with -0.0
written as 0.0, non-finite numbers refused — the same bytes as
``json.dumps(row, sort_keys=True, separators=(",", ":"))`` for finite rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as encode_str

import numpy as np
import numpy.typing as npt
import orjson

__all__ = ["canonical_floats", "canonical_ints", "canonical_line", "encode_str", "value"]


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


def canonical_floats(values: npt.ArrayLike) -> list[str]:
    """Canonical spellings of floats (``_canonical.value``): shortest round trip, -0.0
    as 0.0, non-finite refused. orjson writes the same shortest digits as ``repr``
    except where ``repr`` uses an exponent (below 1e-4 or from 1e16): those few are
    spelled by ``repr`` (tests/unit/test_strategies_columnar_lines.py).
    The spelling of :func:`value` for many floats at once."""
    values = np.ascontiguousarray(values, dtype=np.float64).reshape(-1) + 0.0
    if not len(values):
        return []
    if not np.isfinite(values).all():
        raise ValueError("results hold a non-finite number")
    out = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
    size = np.abs(values)
    for k in np.flatnonzero((size >= 1e16) | ((size < 1e-4) & (size > 0))).tolist():
        out[k] = repr(float(values[k]))
    return out


def canonical_ints(values: npt.ArrayLike) -> list[str]:
    """``str`` of many integers at once."""
    values = np.ascontiguousarray(values, dtype=np.int64).reshape(-1)
    if not len(values):
        return []
    return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
