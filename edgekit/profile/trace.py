"""Reading and validating traces written by the on-device agents (format: ``device_agents/TRACE.md``).

The host trusts nothing it pulled: every line must parse, the header must come first with a schema
version this edgekit understands, the footer must come last (no footer = truncated), and every event
and sample must have its timestamp. A trace that fails is moved aside to ``<name>.rejected`` so it can be
inspected, and ``TraceError`` says why. Samples stamped with the boot-time clock are mapped onto the
monotonic clock through the trace's ``clock_sync`` events. This module computes no metric.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit import limits
from edgekit.errors import TraceError

SCHEMA_VERSION = 1
_HEADER_KEYS = ("agent", "device", "artifact", "workload")
_WORKLOAD_KEYS = ("prompt_len", "gen_len", "warmup", "runs", "threads", "sample_ms")


@dataclass
class Trace:
    path: Path
    header: dict[str, Any]
    events: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    footer: dict[str, Any]
    trace_id: str = ""  # sha256 of the file's bytes: the trace's identity in the store

    @property
    def workload(self) -> dict[str, Any]:
        return self.header["workload"]

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["name"] == name]


def _reject(path: Path, problem: str) -> TraceError:
    kept = path.with_name(path.name + ".rejected")
    try:
        os.replace(path, kept)
    except OSError:
        kept = None  # type: ignore[assignment]
    return TraceError(path, problem, kept)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_lines(path: Path, lines: list[str]) -> Trace:
    """Validate already-read lines; raises TraceError without touching the file."""
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(path, f"line {number} is not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or "type" not in record:
            raise TraceError(path, f"line {number} is not a trace record")
        records.append(record)
    if not records or records[0]["type"] != "header":
        raise TraceError(path, "first line is not a header")
    header = records[0]
    version = header.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TraceError(path, "header has no schema_version")
    if version > SCHEMA_VERSION:
        raise TraceError(path, f"schema version {version} is newer than this edgekit reads ({SCHEMA_VERSION})")
    missing = [k for k in _HEADER_KEYS if not isinstance(header.get(k), dict)]
    if missing:
        raise TraceError(path, f"header lacks {', '.join(missing)}")
    missing = [k for k in _WORKLOAD_KEYS if not _is_int(header["workload"].get(k))]
    if missing:
        raise TraceError(path, f"workload lacks integer {', '.join(missing)}")
    if records[-1]["type"] != "footer" or len(records) < 2:
        raise TraceError(path, "no footer: the trace is truncated")
    footer = records[-1]
    events: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for number, record in enumerate(records[1:-1], start=2):
        kind = record["type"]
        if kind == "event":
            if (
                not isinstance(record.get("name"), str)
                or not _is_int(record.get("ts_ns"))
                or not _is_int(record.get("run"))
            ):
                raise TraceError(path, f"record {number}: an event needs name, integer ts_ns and run")
            events.append(record)
        elif kind == "sample":
            if not (_is_int(record.get("ts_ns")) or _is_int(record.get("ts_boot_ns"))):
                raise TraceError(path, f"record {number}: a sample needs ts_ns or ts_boot_ns")
            samples.append(record)
        elif kind in ("header", "footer"):
            raise TraceError(path, f"record {number}: a second {kind}")
        # Unknown record types from newer minor agents are ignored on purpose.
    _map_boot_clock(path, events, samples)
    events.sort(key=lambda e: e["ts_ns"])
    samples.sort(key=lambda s: s["ts_ns"])
    return Trace(path, header, events, samples, footer)


def _map_boot_clock(path: Path, events: list[dict[str, Any]], samples: list[dict[str, Any]]) -> None:
    syncs = [e for e in events if e["name"] == "clock_sync" and _is_int(e.get("ts_boot_ns"))]
    for sample in samples:
        if _is_int(sample.get("ts_ns")):
            continue
        if not syncs:
            raise TraceError(path, "samples use ts_boot_ns but the trace has no clock_sync event")
        nearest = min(syncs, key=lambda e: abs(e["ts_boot_ns"] - sample["ts_boot_ns"]))
        sample["ts_ns"] = sample["ts_boot_ns"] - nearest["ts_boot_ns"] + nearest["ts_ns"]


def parse_bytes(path: Path, data: bytes) -> Trace:
    """Validate exactly these bytes (the file may change under us); raises TraceError without touching it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceError(path, "not UTF-8 text") from exc
    trace = parse_lines(path, text.splitlines())
    trace.trace_id = hashlib.sha256(data).hexdigest()
    return trace


def read_bytes(path: Path) -> bytes:
    """The file's bytes, refused (before reading them) over the ``trace_file_bytes`` limit."""
    caps = limits.current()
    try:
        with Path(path).open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            data = b"" if size > caps.trace_file_bytes else fh.read(caps.trace_file_bytes + 1)
        if size > caps.trace_file_bytes or len(data) > caps.trace_file_bytes:
            raise TraceError(path, f"the file ({max(size, len(data))} bytes) is over the limit "
                                   f"{caps.describe('trace_file_bytes')}")
        return data
    except FileNotFoundError as exc:
        raise TraceError(path, "file does not exist") from exc
    except OSError as exc:
        raise TraceError(path, f"cannot read it ({exc.strerror})") from exc


def load_trace(path: Path) -> Trace:
    """Read and validate ``path`` once; on failure it is moved aside to ``<name>.rejected``."""
    path = Path(path)
    data = read_bytes(path)
    try:
        return parse_bytes(path, data)
    except TraceError as exc:
        raise _reject(path, exc.problem) from exc
