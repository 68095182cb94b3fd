"""Report cells: the stored runs grouped by device x artifact x workload, each metric summarized.

A cell's workload is (P, G, W, threads); repetitions from several traces of the same cell pool together.
A cell is flagged unstable when a metric's CV exceeds 5%, and its energy carries a note when some or all
repetitions have no valid energy (with the stored reason). Failed repetitions are counted, never averaged.
A cell also carries its artifact's quality gate numbers (from the manifest, as stored), so the reports can
set speed against quality without a second source.
This module neither reads the store directly nor formats output.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.profile.metrics import METRICS
from edgekit.report.stats import Summary, summarize
from edgekit.store.db import Store
from edgekit.store.queries import Filters, select_runs

UNSTABLE_CV = 0.05


CELL_KEY = ("device_id", "artifact_sha256", "prompt_len", "gen_len", "warmup", "threads")
_DESCRIPTIVE = ("model_id", "params", "architecture", "recipe", "target", "runtime", "quant_scheme", "quant_bits")
# The artifact's quality gate numbers (stored column -> cell key): perplexity ratio and mean KL divergence
# against the fp32 reference with their 95% intervals, and the same-top-1 rate.
QUALITY_COLUMNS = {
    "parity_ppl_ratio": "ppl_ratio", "parity_ppl_ratio_ci_low": "ppl_ratio_ci_low",
    "parity_ppl_ratio_ci_high": "ppl_ratio_ci_high", "parity_kl_mean": "kl_mean", "parity_kl_ci_low": "kl_ci_low",
    "parity_kl_ci_high": "kl_ci_high", "parity_top1_agreement": "top1_agreement",
}  # fmt: skip


@dataclass
class Cell:
    device_id: str
    artifact_sha256: str
    prompt_len: int
    gen_len: int
    warmup: int
    threads: int
    model_id: str
    params: int | None
    architecture: str | None
    recipe: str
    target: str | None
    runtime: str | None
    quant_scheme: str | None
    quant_bits: int | None
    n_runs: int = 0
    n_failed: int = 0
    errors: list[str] = field(default_factory=list)
    summaries: dict[str, Summary] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    memory_kb: dict[str, float | None] = field(default_factory=dict)
    unstable: list[str] = field(default_factory=list)
    energy_note: str | None = None
    run_ids: list[str] = field(default_factory=list)
    quality: dict[str, float | None] = field(default_factory=dict)
    artifact_bytes: int | None = None  # every file of the artifact (what a device must hold on disk)
    gate_passed: bool | None = None

    @property
    def label(self) -> str:
        return f"{self.device_id} / {self.model_id} / {self.recipe}"

    def workload(self) -> str:
        return f"P={self.prompt_len} G={self.gen_len} W={self.warmup} t={self.threads}"

    def flat(self) -> dict[str, Any]:
        """One flat record (for JSON, CSV and HTML tables)."""
        out: dict[str, Any] = {
            k: getattr(self, k) for k in (*CELL_KEY, *_DESCRIPTIVE, "n_runs", "n_failed")
        }
        for metric in METRICS:
            for stat, value in asdict(self.summaries[metric.key]).items():
                if stat != "n":
                    out[f"{metric.key}_{stat}"] = value
        for part, value in self.memory_kb.items():
            out[f"{part}_mb"] = None if value is None else value / 1024
        out.update(self.quality)
        out["artifact_mb"] = None if self.artifact_bytes is None else self.artifact_bytes / 2**20
        out["gate_passed"] = self.gate_passed
        out["unstable"] = ",".join(self.unstable)
        out["energy_note"] = self.energy_note or ""
        out["errors"] = "; ".join(self.errors)
        return out


def _median_or_none(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def _energy_note(ok: list[dict[str, Any]]) -> str | None:
    missing = [r for r in ok if r["energy_per_token_mj"] is None]
    if not missing:
        return None
    reasons = sorted({r["energy_missing_reason"] or "not recorded" for r in missing})
    scope = "missing" if len(missing) == len(ok) else f"missing in {len(missing)} of {len(ok)} runs"
    return f"{scope}: {'; '.join(reasons)}"


def build_cells(rows: list[dict[str, Any]]) -> list[Cell]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in CELL_KEY), []).append(row)
    cells = []
    for key, members in groups.items():
        first = members[0]
        cell = Cell(**dict(zip(CELL_KEY, key, strict=True)), **{k: first[k] for k in _DESCRIPTIVE})
        ok = [r for r in members if r["ok"]]
        cell.n_runs, cell.n_failed = len(ok), len(members) - len(ok)
        cell.run_ids = [r["run_id"] for r in members]
        cell.errors = sorted({r["error"] for r in members if not r["ok"] and r["error"]})
        for metric in METRICS:
            values = [r[metric.column] * metric.scale for r in ok if r[metric.column] is not None]
            cell.values[metric.key] = values
            cell.summaries[metric.key] = summary = summarize(values)
            if summary.cv is not None and summary.cv > UNSTABLE_CV:
                cell.unstable.append(metric.key)
        traces = {r["trace_id"]: r for r in members}.values()
        cell.memory_kb = {
            part: _median_or_none([t[f"{part}_kb"] for t in traces])
            for part in ("weights", "kv_cache", "runtime", "baseline_rss")
        }
        cell.energy_note = _energy_note(ok) if ok else "no successful runs"
        cell.quality = {key: first.get(column) for column, key in QUALITY_COLUMNS.items()}
        cell.artifact_bytes, cell.gate_passed = first.get("total_bytes"), first.get("gate_passed")
        cells.append(cell)
    cells.sort(key=lambda c: (c.device_id, c.params or 0, c.model_id, c.recipe, c.prompt_len, c.gen_len))
    return cells


def report_cells(store: Store, filters: Filters | None = None) -> list[Cell]:
    return build_cells(select_runs(store, filters))
