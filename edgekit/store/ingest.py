"""Ingestion: one validated trace becomes device, artifact, trace and run rows plus one Parquet sample file.

Idempotent: a trace's id is the sha256 of its file's bytes, and a trace already stored is skipped without a
write. Transactional: every row of a trace is written in one DuckDB transaction; the sample file is
renamed into place before the COMMIT that references it and deleted on ROLLBACK (a crash in between leaves
an orphan file the store removes on its next open), so no half trace is ever visible. Metrics come only
from ``edgekit.profile.metrics.compute_metrics``; this module stores them next to the raw timestamps they
were computed from and defines no metric of its own. It reads the trace file but never moves it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from edgekit.errors import ArtifactError
from edgekit.profile.metrics import ProfileMetrics, compute_metrics
from edgekit.profile.trace import Trace, parse_lines
from edgekit.store.artifacts import ManifestSource, artifact_row, load_manifest, manifest_beside
from edgekit.store.db import Store
from edgekit.store.errors import IngestError, UnknownArtifact
from edgekit.store.samples import write_samples

_RUN_METRIC_FIELDS = (
    "ttft_ms", "prefill_tok_s", "decode_tok_s", "decode_ms_p50", "decode_ms_p90", "run_wall_ms",
    "peak_rss_kb", "peak_pss_kb", "energy_j", "energy_gross_j", "energy_per_token_mj",
    "energy_missing_reason", "avg_power_prefill_w", "avg_power_decode_w",
)  # fmt: skip


@dataclass
class IngestResult:
    trace_id: str
    path: Path
    stored: bool  # False: the trace was already in the store and nothing changed
    device_id: str
    artifact_sha256: str
    run_ids: list[str] = field(default_factory=list)
    runs_failed: int = 0


# Called inside the ingest transaction with (connection, trace id, run ids): rows that must be stored
# together with the trace or not at all (a farm cell).
AlsoWrite = Callable[[duckdb.DuckDBPyConnection, str, list[str]], None]


def run_id_for(trace_id: str, run: int) -> str:
    return f"{trace_id[:12]}-r{run}"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise IngestError(path, "file does not exist") from exc
    except OSError as exc:
        raise IngestError(path, f"cannot read it ({exc.strerror})") from exc


def _parse(path: Path, data: bytes) -> Trace:
    """Validate exactly the bytes that were hashed (the file may change under us)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(path, "it is not UTF-8 text") from exc
    return parse_lines(path, text.splitlines())


def _resolve_manifest(
    store: Store, path: Path, trace: Trace, given: ManifestSource | dict[str, Any] | Path | str | None
) -> tuple[str, dict[str, Any], bool]:
    """(artifact sha256, manifest, whether the store already has it)."""
    header_art = trace.header["artifact"]
    sha = header_art.get("sha256") if isinstance(header_art.get("sha256"), str) else None
    source: ManifestSource | None
    try:
        if isinstance(given, ManifestSource):
            source = given
        elif isinstance(given, dict):
            source = ManifestSource(given)
        elif given is not None:
            source = load_manifest(Path(given))
        else:
            source = manifest_beside(path)
    except ArtifactError as exc:
        raise IngestError(path, str(exc)) from exc
    if source is None:
        if sha is None:
            raise IngestError(path, "its header names no artifact sha256 and no manifest was supplied")
        row = store.con.execute("SELECT manifest_json FROM artifacts WHERE sha256 = ?", [sha]).fetchone()
        if row is None:
            raise UnknownArtifact(path, sha, header_art.get("model_id"), header_art.get("recipe"))
        return sha, json.loads(row[0]), True
    address = source.address
    if sha is None:
        sha = address
    if sha is None:
        raise IngestError(path, "its header names no artifact sha256 and the manifest has no file to hash")
    if address is not None and address != sha:
        raise IngestError(
            path, f"the trace ran artifact {sha[:12]} but manifest '{source.path}' describes {address[:12]}"
        )
    model_id = source.manifest.get("model", {}).get("id")
    if header_art.get("model_id") and model_id and header_art["model_id"] != model_id:
        raise IngestError(path, f"the trace ran model '{header_art['model_id']}' but the manifest is for '{model_id}'")
    known = store.con.execute("SELECT 1 FROM artifacts WHERE sha256 = ?", [sha]).fetchone() is not None
    return sha, source.manifest, known


def _run_timestamps(trace: Trace) -> dict[int, dict[str, Any]]:
    """Raw timestamps of each measured repetition, exactly as the agent recorded them."""
    out: dict[int, dict[str, Any]] = {}
    for event in trace.events:
        if event["run"] < 0 or event.get("warmup", False):
            continue
        stamps = out.setdefault(
            event["run"],
            {"run_start_ns": None, "prefill_start_ns": None, "prefill_end_ns": None, "run_end_ns": None,
             "error_ns": None, "steps": []},
        )
        key = f"{event['name']}_ns"
        if event["name"] == "decode_step":
            stamps["steps"].append((event.get("token_index", 0), event["ts_ns"]))
        elif key in stamps and stamps[key] is None:
            stamps[key] = event["ts_ns"]
    for stamps in out.values():
        stamps["decode_step_ns"] = [ts for _, ts in sorted(stamps.pop("steps"))]
    return out


def _first_ts(trace: Trace, name: str) -> int | None:
    events = trace.events_named(name)
    return events[0]["ts_ns"] if events else None


def _baseline_rss_kb(trace: Trace) -> int | None:
    start, end = _first_ts(trace, "baseline_start"), _first_ts(trace, "baseline_end")
    if start is None or end is None:
        return None
    rss = [s["rss_kb"] for s in trace.samples if start <= s["ts_ns"] <= end and isinstance(s.get("rss_kb"), int)]
    return int(statistics.median(rss)) if rss else None


def _trace_row(
    trace_id: str, path: Path, trace: Trace, sha: str, metrics: ProfileMetrics, samples_file: str | None
) -> dict[str, Any]:
    h, w, footer = trace.header, trace.workload, trace.footer
    device = h["device"]
    stamps = [e["ts_ns"] for e in trace.events] + [s["ts_ns"] for s in trace.samples[:1] + trace.samples[-1:]]
    return {
        "trace_id": trace_id,
        "source_path": str(path),
        "ingested_at": datetime.now(UTC).replace(tzinfo=None),
        "started_at": h.get("started_at"),
        "device_id": device.get("name") or "unknown",
        "artifact_sha256": sha,
        "agent_name": h["agent"].get("name"),
        "agent_version": h["agent"].get("version"),
        "runner_kind": (h.get("runner") or {}).get("kind"),
        "runner_version": (h.get("runner") or {}).get("version"),
        "prompt_len": w["prompt_len"],
        "gen_len": w["gen_len"],
        "warmup": w["warmup"],
        "runs": w["runs"],
        "threads": w["threads"],
        "sample_ms": w["sample_ms"],
        "power_source": h.get("power_source"),
        "power_source_detail": h.get("power_source_detail"),
        "battery_pct": device.get("battery_pct"),
        "charging": device.get("charging"),
        "baseline_start_ns": _first_ts(trace, "baseline_start"),
        "baseline_end_ns": _first_ts(trace, "baseline_end"),
        "load_start_ns": _first_ts(trace, "load_start"),
        "load_end_ns": _first_ts(trace, "load_end"),
        "first_ts_ns": min(stamps) if stamps else None,
        "last_ts_ns": max(stamps) if stamps else None,
        "load_ms": metrics.load_ms,
        "idle_power_w": metrics.idle_power_w,
        "weights_kb": metrics.memory.get("weights_kb"),
        "kv_cache_kb": metrics.memory.get("kv_cache_kb"),
        "runtime_kb": metrics.memory.get("runtime_kb"),
        "peak_rss_kb": metrics.memory.get("peak_rss_kb"),
        "peak_pss_kb": metrics.memory.get("peak_pss_kb"),
        "baseline_rss_kb": _baseline_rss_kb(trace),
        "temperature_max_c": metrics.temperature_max_c,
        "freq_mean_khz": metrics.freq_mean_khz,
        "self_hwm_kb": metrics.self_hwm_kb,
        "footer_status": footer.get("status"),
        "runs_completed": footer.get("runs_completed"),
        "runs_failed": footer.get("runs_failed"),
        "n_samples": len(trace.samples),
        "samples_file": samples_file,
        "header_json": json.dumps(h, sort_keys=True),
    }


def _run_rows(trace_id: str, trace: Trace, sha: str, metrics: ProfileMetrics) -> list[dict[str, Any]]:
    w = trace.workload
    stamps = _run_timestamps(trace)
    rows = []
    for run in metrics.runs:
        raw = stamps.get(run.run, {})
        values = asdict(run)
        rows.append(
            {
                "run_id": run_id_for(trace_id, run.run),
                "trace_id": trace_id,
                "run": run.run,
                "device_id": trace.header["device"].get("name") or "unknown",
                "artifact_sha256": sha,
                "prompt_len": w["prompt_len"],
                "gen_len": w["gen_len"],
                "warmup": w["warmup"],
                "repetitions": w["runs"],
                "threads": w["threads"],
                "run_start_ns": raw.get("run_start_ns"),
                "prefill_start_ns": raw.get("prefill_start_ns"),
                "prefill_end_ns": raw.get("prefill_end_ns"),
                "run_end_ns": raw.get("run_end_ns"),
                "decode_step_ns": raw.get("decode_step_ns", []),
                "error_ns": raw.get("error_ns"),
                "ok": run.ok,
                "error": run.error,
                **{name: values[name] for name in _RUN_METRIC_FIELDS},
            }
        )
    return rows


def _device_row(trace: Trace) -> dict[str, Any]:
    d = trace.header["device"]
    now = datetime.now(UTC).replace(tzinfo=None)
    return {
        "device_id": d.get("name") or "unknown",
        **{k: d.get(k) for k in ("model", "soc", "cores", "abi", "ram_kb", "os")},
        "first_seen_at": now,
        "last_seen_at": now,
    }


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]], conflict: str = "") -> None:
    if not rows:
        return
    if len(rows) == 1:  # a parameterized statement is cheaper than an Arrow round trip for one row
        names = list(rows[0])
        marks = ", ".join("?" for _ in names)
        con.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks}) {conflict}", list(rows[0].values()))
        return
    batch = pa.Table.from_pylist(rows)
    con.register("_edgekit_batch", batch)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _edgekit_batch {conflict}")
    finally:
        con.unregister("_edgekit_batch")


def _metrics(path: Path, trace: Trace, manifest: dict[str, Any]) -> ProfileMetrics:
    try:
        return compute_metrics(trace, manifest)
    except (KeyError, StopIteration, TypeError, ValueError, ZeroDivisionError) as exc:
        raise IngestError(path, f"metrics could not be computed ({type(exc).__name__}: {exc})") from exc


def ingest_trace(
    trace_path: Path | str,
    manifest: ManifestSource | dict[str, Any] | Path | str | None = None,
    *,
    store: Store | None = None,
    also: AlsoWrite | None = None,
) -> IngestResult:
    """Store one trace (see the module docstring); returns what was stored or that it already was.

    ``also`` writes rows that belong with the trace in the same transaction (for a trace already
    stored, in a transaction of its own, so it is idempotent too)."""
    if store is None:
        with Store() as own:
            return ingest_trace(trace_path, manifest, store=own, also=also)
    path = Path(trace_path)
    data = _read_bytes(path)
    trace_id = hashlib.sha256(data).hexdigest()
    con = store.con
    stored = con.execute("SELECT artifact_sha256, device_id FROM traces WHERE trace_id = ?", [trace_id]).fetchone()
    if stored is not None:
        query = "SELECT run_id FROM runs WHERE trace_id = ? ORDER BY run"
        ids = [r[0] for r in con.execute(query, [trace_id]).fetchall()]
        if also is not None:
            _also_alone(con, also, trace_id, ids)
        return IngestResult(trace_id, path, False, stored[1], stored[0], ids)
    trace = _parse(path, data)
    device_id = trace.header["device"].get("name") or "unknown"
    sha, manifest_dict, known = _resolve_manifest(store, path, trace, manifest)
    metrics = _metrics(path, trace, manifest_dict)
    samples_path = store.samples_path(trace_id) if trace.samples else None
    runs = _run_rows(trace_id, trace, sha, metrics)
    trace_row = _trace_row(trace_id, path, trace, sha, metrics, samples_path.name if samples_path else None)
    con.execute("BEGIN TRANSACTION")
    try:
        _insert(
            con,
            "devices",
            [_device_row(trace)],
            "ON CONFLICT (device_id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        )
        if not known:
            _insert(con, "artifacts", [artifact_row(sha, manifest_dict)], "ON CONFLICT DO NOTHING")
        _insert(con, "traces", [trace_row])
        if samples_path is not None:
            write_samples(samples_path, trace_id, trace.samples)
        _insert(con, "runs", runs)
        if also is not None:
            also(con, trace_id, [r["run_id"] for r in runs])
        con.execute("COMMIT")
    except BaseException as exc:
        with contextlib.suppress(duckdb.Error):  # a failed COMMIT has already ended the transaction
            con.execute("ROLLBACK")
        if samples_path is not None:
            samples_path.unlink(missing_ok=True)
        if isinstance(exc, duckdb.Error | pa.ArrowException | OverflowError):
            raise IngestError(path, f"the store refused it, nothing was kept ({_first_line(exc)})") from exc
        raise
    store.mark_samples_changed()
    failed = sum(1 for r in metrics.runs if not r.ok)
    return IngestResult(trace_id, path, True, device_id, sha, [r["run_id"] for r in runs], failed)


def _also_alone(con: duckdb.DuckDBPyConnection, also: AlsoWrite, trace_id: str, run_ids: list[str]) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        also(con, trace_id, run_ids)
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


__all__ = ["IngestResult", "ingest_trace", "run_id_for"]
