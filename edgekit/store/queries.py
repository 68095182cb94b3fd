"""Selecting stored runs for the reports: filters by device, model, recipe (and artifact prefix).

Only the ``runs``, ``traces``, ``artifacts`` and ``devices`` tables are read; the sample files are never
touched here, so a report costs the same however many samples the store holds. A filter that selects
nothing raises ``NoMatchingRuns`` naming what the store does have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb

from edgekit.errors import NoMatchingRuns, StoreError
from edgekit.store.db import Store

RUN_COLUMNS = (
    "r.run_id, r.trace_id, r.run, r.device_id, r.artifact_sha256, r.prompt_len, r.gen_len, r.warmup, r.threads, "
    "r.ok, r.error, r.ttft_ms, r.prefill_tok_s, r.decode_tok_s, r.decode_ms_p50, r.decode_ms_p90, r.peak_rss_kb, "
    "r.peak_pss_kb, r.energy_j, r.energy_per_token_mj, r.energy_missing_reason, "
    "a.model_id, a.params, a.architecture, a.recipe, a.target, a.runtime, a.quant_scheme, a.quant_bits, "
    "a.total_bytes, a.parity_ppl_ratio, a.parity_ppl_ratio_ci_low, a.parity_ppl_ratio_ci_high, a.parity_kl_mean, "
    "a.parity_kl_ci_low, a.parity_kl_ci_high, a.parity_top1_agreement, a.gate_passed, "
    "t.weights_kb, t.kv_cache_kb, t.runtime_kb, t.peak_rss_kb AS trace_peak_rss_kb, t.baseline_rss_kb, "
    "t.power_source"
)


@dataclass
class Filters:
    devices: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    recipes: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)  # sha256 prefixes
    prompt_len: int | None = None
    gen_len: int | None = None

    def describe(self) -> str:
        parts = [f"device {'/'.join(self.devices)}" if self.devices else "",
                 f"model {'/'.join(self.models)}" if self.models else "",
                 f"recipe {'/'.join(self.recipes)}" if self.recipes else "",
                 f"artifact {'/'.join(self.artifacts)}" if self.artifacts else "",
                 f"P={self.prompt_len}" if self.prompt_len is not None else "",
                 f"G={self.gen_len}" if self.gen_len is not None else ""]  # fmt: skip
        return ", ".join(p for p in parts if p) or "any filter"

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, values in (("r.device_id", self.devices), ("a.model_id", self.models), ("a.recipe", self.recipes)):
            if values:
                clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        if self.artifacts:
            clauses.append("(" + " OR ".join("starts_with(r.artifact_sha256, ?)" for _ in self.artifacts) + ")")
            params.extend(self.artifacts)
        for column, value in (("r.prompt_len", self.prompt_len), ("r.gen_len", self.gen_len)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def known_names(store: Store) -> dict[str, list[str]]:
    con = store.con
    return {
        "devices": [r[0] for r in con.execute("SELECT DISTINCT device_id FROM runs ORDER BY 1").fetchall()],
        "models": [r[0] for r in con.execute(
            "SELECT DISTINCT model_id FROM artifacts WHERE sha256 IN (SELECT artifact_sha256 FROM runs) ORDER BY 1"
        ).fetchall()],
        "recipes": [r[0] for r in con.execute(
            "SELECT DISTINCT recipe FROM artifacts WHERE sha256 IN (SELECT artifact_sha256 FROM runs) ORDER BY 1"
        ).fetchall()],
    }  # fmt: skip


def select_runs(store: Store, filters: Filters | None = None) -> list[dict[str, Any]]:
    """Every stored repetition (ok or failed) matching ``filters``, with its artifact and trace facts."""
    filters = filters or Filters()
    where, params = filters.where()
    sql = (
        f"SELECT {RUN_COLUMNS} FROM runs r JOIN artifacts a ON a.sha256 = r.artifact_sha256 "
        f"JOIN traces t ON t.trace_id = r.trace_id{where} ORDER BY r.device_id, a.model_id, a.recipe, r.trace_id, r.run"
    )
    rows = dict_rows(store.con.execute(sql, params))
    if not rows:
        known = known_names(store)
        if not known["devices"]:
            raise NoMatchingRuns("because the results store is empty (store traces with `edgekit ingest`)")
        raise NoMatchingRuns(filters.describe(), known)
    return rows


def run_by_id(store: Store, run_id: str) -> dict[str, Any]:
    """One run with its trace row; a unique prefix of the id is enough."""
    rows = dict_rows(store.con.execute(
        "SELECT r.*, t.sample_ms, t.baseline_start_ns, t.load_start_ns, t.load_end_ns, t.power_source, "
        "t.header_json, a.model_id, a.recipe FROM runs r JOIN traces t ON t.trace_id = r.trace_id "
        "JOIN artifacts a ON a.sha256 = r.artifact_sha256 WHERE starts_with(r.run_id, ?) "
        "ORDER BY r.run_id = ? DESC LIMIT 3",
        [run_id, run_id],
    ))
    if rows and rows[0]["run_id"] == run_id:
        return rows[0]
    if not rows:
        raise NoMatchingRuns(f"run id '{run_id}'")
    if len(rows) > 1:
        raise StoreError(f"run id '{run_id}' is ambiguous: {', '.join(r['run_id'] for r in rows)}")
    return rows[0]


def dict_rows(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
