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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from edgekit.errors import ArtifactError, IngestError, UnknownArtifact
from edgekit.manifest import Manifest, parse_manifest, read_manifest
from edgekit.profile.metrics import ProfileMetrics, compute_metrics, stored_run_fields
from edgekit.profile.trace import Trace, parse_bytes, read_bytes
from edgekit.store.artifacts import artifact_row, manifest_beside
from edgekit.store.db import Store
from edgekit.store.samples import write_samples

_RUN_METRIC_FIELDS = stored_run_fields()


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


def _resolve_manifest(
    store: Store, trace: Trace, given: Manifest | Path | str | None
) -> tuple[str, Manifest, bool]:
    """(artifact sha256, manifest, whether the store already has it)."""
    path = trace.path
    header_art = trace.header["artifact"]
    sha = header_art.get("sha256") if isinstance(header_art.get("sha256"), str) else None
    source: Manifest | None
    try:
        if isinstance(given, Manifest):
            source = given
        elif given is not None:
            source = read_manifest(Path(given))
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
        try:
            return sha, parse_manifest(row[0].encode(), f"the store's manifest of {sha[:12]}"), True
        except ArtifactError as exc:
            raise IngestError(path, str(exc)) from exc
    address = source.address()
    sha = sha or address
    if address != sha:
        described = f"{source.model_id}/{source.recipe_name} describes {address[:12]}"
        raise IngestError(path, f"the trace ran artifact {sha[:12]} but manifest {described}")
    if header_art.get("model_id") and header_art["model_id"] != source.model_id:
        raise IngestError(path, f"the trace ran model '{header_art['model_id']}' but the manifest is for "
                                f"'{source.model_id}'")  # fmt: skip
    known = store.con.execute("SELECT 1 FROM artifacts WHERE sha256 = ?", [sha]).fetchone() is not None
    return sha, source, known


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
        "baseline_rss_kb": metrics.baseline_rss_kb,
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


def ingest_trace(
    trace_path: Path | str,
    manifest: Manifest | Path | str | None = None,
    *,
    store: Store | None = None,
    also: AlsoWrite | None = None,
) -> IngestResult:
    """Read, validate and store one trace file (see the module docstring); a trace already stored is
    recognised by its bytes' hash before it is parsed."""
    if store is None:
        with Store() as own:
            return ingest_trace(trace_path, manifest, store=own, also=also)
    path = Path(trace_path)
    data = read_bytes(path)
    stored = _already_stored(store, hashlib.sha256(data).hexdigest(), path, also)
    if stored is not None:
        return stored
    return ingest_parsed(parse_bytes(path, data), manifest, store=store, also=also)


def _already_stored(store: Store, trace_id: str, path: Path, also: AlsoWrite | None) -> IngestResult | None:
    con = store.con
    stored = con.execute("SELECT artifact_sha256, device_id FROM traces WHERE trace_id = ?", [trace_id]).fetchone()
    if stored is None:
        return None
    ids = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE trace_id = ? ORDER BY run", [trace_id]).fetchall()]
    if also is not None:
        _also_alone(con, also, trace_id, ids)
    return IngestResult(trace_id, path, False, stored[1], stored[0], ids)


def ingest_parsed(
    trace: Trace,
    manifest: Manifest | Path | str | None = None,
    metrics: ProfileMetrics | None = None,
    *,
    store: Store | None = None,
    also: AlsoWrite | None = None,
) -> IngestResult:
    """Store a trace that was already validated (``load_trace``) and, if given, its metrics (computed
    from it with the same manifest): nothing is read, parsed or computed twice.

    ``also`` writes rows that belong with the trace in the same transaction (for a trace already
    stored, in a transaction of its own, so it is idempotent too)."""
    if store is None:
        with Store() as own:
            return ingest_parsed(trace, manifest, metrics, store=own, also=also)
    path, trace_id, con = trace.path, trace.trace_id, store.con
    stored = _already_stored(store, trace_id, path, also)
    if stored is not None:
        return stored
    device_id = trace.header["device"].get("name") or "unknown"
    sha, resolved, known = _resolve_manifest(store, trace, manifest)
    metrics = metrics or compute_metrics(trace, resolved)
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
            _insert(con, "artifacts", [artifact_row(sha, resolved)], "ON CONFLICT DO NOTHING")
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
        if isinstance(exc, OSError):  # the host's disk (full, read-only, gone) while writing the samples
            why = exc.strerror or _first_line(exc)
            raise IngestError(path, f"cannot write its samples under '{store.samples_dir}' ({why}); "
                                    "nothing was kept") from exc  # fmt: skip
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


__all__ = ["IngestResult", "ingest_parsed", "ingest_trace", "run_id_for"]
