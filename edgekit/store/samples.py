"""Sample time series of a trace as one Parquet file per trace, written atomically.

The file is written under a temporary name and renamed into place before the transaction that references
it commits; if that transaction fails the caller deletes the file, and if the process dies in between the
store deletes the orphan on its next open. Columns are the raw sampler fields of TRACE.md, nothing
derived. This module writes files only; it never touches the database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from edgekit.store.db import TMP_SUFFIX

_INT_FIELDS = ("rss_kb", "hwm_kb", "pss_kb", "power_uw", "energy_uj", "voltage_uv", "current_ua")
_MAX_INT64 = (1 << 63) - 1


def _int_or_none(value: Any) -> int | None:
    if type(value) is int and -_MAX_INT64 <= value <= _MAX_INT64:  # the common case, first
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    as_int = int(value)
    return as_int if -_MAX_INT64 <= as_int <= _MAX_INT64 else None


SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("ts_ns", pa.int64()),
        *((name, pa.int64()) for name in _INT_FIELDS),
        ("cpu_freq_khz", pa.list_(pa.int64())),
        ("thermal_mc", pa.map_(pa.string(), pa.int64())),
    ]
)


def samples_table(trace_id: str, samples: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, list[Any]] = {
        "trace_id": [trace_id] * len(samples),
        "ts_ns": [s["ts_ns"] for s in samples],
    }
    for name in _INT_FIELDS:
        columns[name] = [_int_or_none(s.get(name)) for s in samples]
    columns["cpu_freq_khz"] = [
        [f for f in (_int_or_none(v) for v in freqs) if f is not None] if isinstance(freqs, list) else None
        for freqs in (s.get("cpu_freq_khz") for s in samples)
    ]
    columns["thermal_mc"] = [
        [(str(k), v) for k, raw in zones.items() if (v := _int_or_none(raw)) is not None]
        if isinstance(zones, dict)
        else None
        for zones in (s.get("thermal_mc") for s in samples)
    ]
    return pa.table(columns, schema=SCHEMA)


def write_samples(path: Path, trace_id: str, samples: list[dict[str, Any]]) -> Path:
    """Write ``path`` atomically (temporary sibling, fsync, rename) and return it."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        pq.write_table(samples_table(trace_id, samples), tmp, compression="zstd")
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
