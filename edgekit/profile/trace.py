"""Reading and validating traces written by the on-device agents (format: ``device_agents/TRACE.md``).

The host trusts nothing it pulled: every line must parse, the header must come first with a schema
version this edgekit understands, the footer must come last (no footer = truncated), and every event
and sample must have its timestamp. Every field the host reads is type-checked here, numbers must be
finite and fit 64 bits, nesting is bounded and each repetition's phases must follow each other in time,
so the metrics and the store downstream never meet a value that would make them raise. A trace that
fails is moved aside to ``<name>.rejected`` so it can be inspected, and ``TraceError`` says why. Samples
stamped with the boot-time clock are mapped onto the monotonic clock through the trace's ``clock_sync``
events. This module computes no metric.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit import limits
from edgekit.errors import TraceError

SCHEMA_VERSION = 1
_HEADER_KEYS = ("agent", "device", "artifact", "workload")
_WORKLOAD_KEYS = ("prompt_len", "gen_len", "warmup", "runs", "threads", "sample_ms")
MAX_DEPTH = 8  # a record nests 3 deep (a sample's thermal_mc); deeper is not a trace, and cannot overflow the stack
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1  # the store's BIGINT

# Optional fields the host reads, by record kind: the type each must have when present and not null.
_STR, _INT, _NUM, _BOOL = "a string", "an integer", "a number", "true or false"
_HEADER_FIELDS = {"power_source": _STR, "power_source_detail": _STR, "started_at": _STR, "energy_range_uj": _INT}
_DEVICE_FIELDS = {"name": _STR, "model": _STR, "soc": _STR, "abi": _STR, "os": _STR, "cores": _INT,
                  "ram_kb": _INT, "battery_pct": _NUM, "charging": _BOOL}  # fmt: skip
_NAMED_FIELDS = {"name": _STR, "version": _STR, "kind": _STR, "sha256": _STR, "model_id": _STR, "recipe": _STR}
_EVENT_FIELDS = {"warmup": _BOOL, "token_index": _INT, "ts_boot_ns": _INT, "reason": _STR, "message": _STR}
_SAMPLE_FIELDS = {"rss_kb": _NUM, "hwm_kb": _NUM, "pss_kb": _NUM, "power_uw": _NUM, "energy_uj": _NUM,
                  "voltage_uv": _NUM, "current_ua": _NUM}  # fmt: skip
_FOOTER_FIELDS = {"status": _STR, "runs_completed": _INT, "runs_failed": _INT, "self_hwm_kb": _INT, "ts_ns": _INT}


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


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_CHECKS = {_STR: lambda v: isinstance(v, str), _INT: _is_int, _NUM: _is_num, _BOOL: lambda v: isinstance(v, bool)}


class _BadNumber(ValueError):
    """A number JSON's grammar allows but a trace must not hold (raised from the decoder's hooks)."""


def _parse_int(text: str) -> int:
    # Checked on the digits first: Python refuses to convert more than 4,300 of them with a bare ValueError.
    if len(text.lstrip("-")) > 19 or not INT64_MIN <= (value := int(text)) <= INT64_MAX:
        raise _BadNumber(f"integer {text[:24]}{'...' if len(text) > 24 else ''} does not fit 64 bits")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"number {text[:24]} is not finite")
    return value


def _parse_constant(text: str) -> Any:
    raise _BadNumber(f"{text} is not a finite number")


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a decoded value, counted no further than ``limit`` + 1."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def _decode(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = _DECODER.decode(line)
    except json.JSONDecodeError as exc:
        raise TraceError(path, f"line {number} is not valid JSON ({exc.msg})") from exc
    except _BadNumber as exc:
        raise TraceError(path, f"line {number}: {exc}") from exc
    except RecursionError as exc:
        raise TraceError(path, f"line {number} nests deeper than {MAX_DEPTH} levels") from exc
    # Only a line with that many brackets can be too deep: the common line is not walked.
    if line.count("[") + line.count("{") > MAX_DEPTH and _depth(record, MAX_DEPTH) > MAX_DEPTH:
        raise TraceError(path, f"line {number} nests deeper than {MAX_DEPTH} levels")
    if not isinstance(record, dict) or "type" not in record:
        raise TraceError(path, f"line {number} is not a trace record")
    return record


def _check_fields(path: Path, where: str, record: dict[str, Any], fields: dict[str, str]) -> None:
    for key, kind in fields.items():
        value = record.get(key)
        if value is not None and not _CHECKS[kind](value):
            raise TraceError(path, f"{where}: {key} must be {kind} or null, got {type(value).__name__} {value!r:.40}")


def _check_header(path: Path, header: dict[str, Any]) -> None:
    _check_fields(path, "header", header, _HEADER_FIELDS)
    _check_fields(path, "header device", header["device"], _DEVICE_FIELDS)
    for part in ("agent", "artifact", "runner"):
        value = header.get(part)
        if part == "runner" and value is None:
            continue
        if not isinstance(value, dict):
            raise TraceError(path, f"header: {part} must be an object, got {type(value).__name__}")
        _check_fields(path, f"header {part}", value, _NAMED_FIELDS)
    workload = header["workload"]
    small = [k for k in _WORKLOAD_KEYS if not (0 if k == "warmup" else 1) <= workload[k] <= 1_000_000]
    if small:
        raise TraceError(path, f"workload {', '.join(f'{k}={workload[k]}' for k in small)} out of range "
                               "(warmup 0.., the others 1..1000000)")  # fmt: skip


def _check_sample(path: Path, number: int, record: dict[str, Any]) -> None:
    _check_fields(path, f"record {number}", record, _SAMPLE_FIELDS)
    freqs, zones = record.get("cpu_freq_khz"), record.get("thermal_mc")
    # A core or zone the agent could not read is a null inside them (the sh agent writes those).
    if freqs is not None and not (isinstance(freqs, list) and all(f is None or _is_num(f) for f in freqs)):
        raise TraceError(path, f"record {number}: cpu_freq_khz must be a list of numbers or null")
    if zones is not None and not (isinstance(zones, dict) and all(v is None or _is_num(v) for v in zones.values())):
        raise TraceError(path, f"record {number}: thermal_mc must map zone names to numbers or be null")


def _check_order(path: Path, events: list[dict[str, Any]]) -> None:
    """Each phase after the one before it (events sorted by time): a clock that went backwards, or a phase
    of zero length, would turn into negative or infinite rates downstream."""
    for first, then in (("baseline_start", "baseline_end"), ("load_start", "load_end")):
        a = next((e["ts_ns"] for e in events if e["name"] == first), None)
        b = next((e["ts_ns"] for e in events if e["name"] == then), None)
        if a is not None and b is not None and b < a:
            raise TraceError(path, f"{then} is {(a - b) / 1e6:.3f} ms before {first} (timestamps go backwards)")
    runs: dict[tuple[int, bool], dict[str, list[dict[str, Any]]]] = {}
    for event in events:
        if event["run"] >= 0:
            by_name = runs.setdefault((event["run"], bool(event.get("warmup", False))), {})
            by_name.setdefault(event["name"], []).append(event)
    for (run, warmup), by_name in sorted(runs.items()):
        label = f"{'warm-up' if warmup else 'measured'} repetition {run}"
        if "prefill_end" in by_name and "prefill_start" not in by_name:
            raise TraceError(path, f"{label}: prefill_end without prefill_start")
        steps = sorted(by_name.get("decode_step", []), key=lambda e: e.get("token_index") or 0)
        phases: list[tuple[str, int]] = [(name, by_name[name][0]["ts_ns"])
                                         for name in ("run_start", "prefill_start", "prefill_end") if name in by_name]
        phases += [(f"decode_step {e.get('token_index')}", e["ts_ns"]) for e in steps]
        phases += [("run_end", by_name["run_end"][0]["ts_ns"])] if "run_end" in by_name else []
        for (name_a, ts_a), (name_b, ts_b) in itertools.pairwise(phases):
            if ts_b < ts_a:
                raise TraceError(path, f"{label}: {name_b} is {(ts_a - ts_b) / 1e6:.3f} ms before {name_a} "
                                       "(timestamps go backwards)")  # fmt: skip
        stamps = dict(phases)
        if stamps.get("prefill_end") == stamps.get("prefill_start") is not None:
            raise TraceError(path, f"{label}: prefill took 0 ns")
        if steps and steps[-1]["ts_ns"] == stamps.get("prefill_end"):
            raise TraceError(path, f"{label}: {len(steps)} decode steps took 0 ns")


def parse_lines(path: Path, lines: list[str]) -> Trace:
    """Validate already-read lines; raises TraceError without touching the file."""
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        records.append(_decode(path, number, line))
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
    _check_header(path, header)
    if records[-1]["type"] != "footer" or len(records) < 2:
        raise TraceError(path, "no footer: the trace is truncated")
    footer = records[-1]
    _check_fields(path, "footer", footer, _FOOTER_FIELDS)
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
            _check_fields(path, f"record {number}", record, _EVENT_FIELDS)
            if record["name"] == "decode_step" and "token_index" in record and not _is_int(record["token_index"]):
                raise TraceError(path, f"record {number}: a decode_step's token_index must be an integer")
            events.append(record)
        elif kind == "sample":
            if not (_is_int(record.get("ts_ns")) or _is_int(record.get("ts_boot_ns"))):
                raise TraceError(path, f"record {number}: a sample needs ts_ns or ts_boot_ns")
            _check_sample(path, number, record)
            samples.append(record)
        elif kind in ("header", "footer"):
            raise TraceError(path, f"record {number}: a second {kind}")
        # Unknown record types from newer minor agents are ignored on purpose.
    _map_boot_clock(path, events, samples)
    events.sort(key=lambda e: e["ts_ns"])
    samples.sort(key=lambda s: s["ts_ns"])
    _check_order(path, events)
    return Trace(path, header, events, samples, footer)


def _map_boot_clock(path: Path, events: list[dict[str, Any]], samples: list[dict[str, Any]]) -> None:
    syncs = [e for e in events if e["name"] == "clock_sync" and _is_int(e.get("ts_boot_ns"))]
    for sample in samples:
        if _is_int(sample.get("ts_ns")):
            continue
        if not syncs:
            raise TraceError(path, "samples use ts_boot_ns but the trace has no clock_sync event")
        nearest = min(syncs, key=lambda e: abs(e["ts_boot_ns"] - sample["ts_boot_ns"]))
        mapped = sample["ts_boot_ns"] - nearest["ts_boot_ns"] + nearest["ts_ns"]
        if not INT64_MIN <= mapped <= INT64_MAX:
            raise TraceError(path, f"a sample's ts_boot_ns {sample['ts_boot_ns']} maps outside 64 bits")
        sample["ts_ns"] = mapped


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
