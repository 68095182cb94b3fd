"""Schema migrations of the results database: named functions applied in order, recorded in ``migrations``.

Rules: a migration that has been released is never edited; a change is a new function appended to
``MIGRATIONS``. Each migration runs inside the caller's transaction together with the row that records
it, so a failed migration leaves the database as it was. No foreign keys: DuckDB's ART-backed foreign
keys make updates of referenced rows fail, so referential integrity is the ingester's job (one
transaction per trace). Timestamps are UTC, stored as plain TIMESTAMP (a TIMESTAMPTZ would make every
Python reader depend on pytz). This module only knows the schema; it stores no data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import duckdb

Migration = Callable[[duckdb.DuckDBPyConnection], None]


def m001_initial(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE devices (
            device_id VARCHAR PRIMARY KEY,   -- the name the agent reports
            model VARCHAR, soc VARCHAR, cores INTEGER, abi VARCHAR, ram_kb BIGINT, os VARCHAR,
            first_seen_at TIMESTAMP, last_seen_at TIMESTAMP
        )"""
    )
    con.execute(
        """
        CREATE TABLE artifacts (
            sha256 VARCHAR PRIMARY KEY,      -- content address of the artifact directory
            model_id VARCHAR NOT NULL, params BIGINT, architecture VARCHAR,
            recipe VARCHAR NOT NULL, target VARCHAR, runtime VARCHAR,
            quant_scheme VARCHAR, quant_block_size INTEGER, quant_embedding VARCHAR, quant_bits INTEGER,
            artifact_file VARCHAR, artifact_bytes BIGINT, total_bytes BIGINT,
            kv_kind VARCHAR, kv_bytes_per_token BIGINT, kv_bytes_at_max_context BIGINT, max_context INTEGER,
            parity_max_abs_logit_diff DOUBLE, parity_top1_agreement DOUBLE, parity_ppl_ratio DOUBLE,
            gate_passed BOOLEAN,
            manifest_json VARCHAR NOT NULL,
            added_at TIMESTAMP
        )"""
    )
    con.execute(
        """
        CREATE TABLE traces (
            trace_id VARCHAR PRIMARY KEY,    -- sha256 of the trace file's bytes
            source_path VARCHAR, ingested_at TIMESTAMP, started_at VARCHAR,
            device_id VARCHAR NOT NULL,
            artifact_sha256 VARCHAR NOT NULL,
            agent_name VARCHAR, agent_version VARCHAR, runner_kind VARCHAR, runner_version VARCHAR,
            prompt_len INTEGER NOT NULL, gen_len INTEGER NOT NULL, warmup INTEGER NOT NULL,
            runs INTEGER NOT NULL, threads INTEGER NOT NULL, sample_ms INTEGER NOT NULL,
            power_source VARCHAR, power_source_detail VARCHAR,
            battery_pct DOUBLE, charging BOOLEAN,
            baseline_start_ns BIGINT, baseline_end_ns BIGINT, load_start_ns BIGINT, load_end_ns BIGINT,
            first_ts_ns BIGINT, last_ts_ns BIGINT,
            load_ms DOUBLE, idle_power_w DOUBLE,
            weights_kb BIGINT, kv_cache_kb BIGINT, runtime_kb BIGINT, peak_rss_kb BIGINT, peak_pss_kb BIGINT,
            baseline_rss_kb BIGINT,
            temperature_max_c DOUBLE, freq_mean_khz DOUBLE, self_hwm_kb BIGINT,
            footer_status VARCHAR, runs_completed INTEGER, runs_failed INTEGER,
            n_samples BIGINT NOT NULL, samples_file VARCHAR,
            header_json VARCHAR NOT NULL
        )"""
    )
    con.execute(
        """
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,      -- <first 12 hex of trace_id>-r<run>
            trace_id VARCHAR NOT NULL,
            run INTEGER NOT NULL,
            device_id VARCHAR NOT NULL, artifact_sha256 VARCHAR NOT NULL,
            prompt_len INTEGER NOT NULL, gen_len INTEGER NOT NULL, warmup INTEGER NOT NULL,
            repetitions INTEGER NOT NULL, threads INTEGER NOT NULL,
            run_start_ns BIGINT, prefill_start_ns BIGINT, prefill_end_ns BIGINT, run_end_ns BIGINT,
            decode_step_ns BIGINT[], error_ns BIGINT,
            ok BOOLEAN NOT NULL, error VARCHAR,
            ttft_ms DOUBLE, prefill_tok_s DOUBLE, decode_tok_s DOUBLE, decode_ms_p50 DOUBLE, decode_ms_p90 DOUBLE,
            run_wall_ms DOUBLE, peak_rss_kb BIGINT, peak_pss_kb BIGINT,
            energy_j DOUBLE, energy_gross_j DOUBLE, energy_per_token_mj DOUBLE, energy_missing_reason VARCHAR,
            avg_power_prefill_w DOUBLE, avg_power_decode_w DOUBLE,
            UNIQUE (trace_id, run),
            CHECK (prefill_end_ns IS NULL OR prefill_start_ns IS NULL OR prefill_end_ns >= prefill_start_ns),
            CHECK (run_end_ns IS NULL OR run_start_ns IS NULL OR run_end_ns >= run_start_ns)
        )"""
    )
    con.execute("CREATE INDEX runs_cell ON runs (device_id, artifact_sha256, prompt_len, gen_len)")


def m002_farm_cells(con: duckdb.DuckDBPyConnection) -> None:
    """One row per cell of a farm: written in the transaction that ingests the cell's trace (ok) or
    alone when the cell ended failed, so a cell is there once and never half."""
    con.execute(
        """
        CREATE TABLE farm_cells (
            farm VARCHAR NOT NULL,
            cell_key VARCHAR NOT NULL,       -- content key of (model, recipe, device, workload)
            model VARCHAR NOT NULL, recipe VARCHAR NOT NULL, device VARCHAR NOT NULL, workload VARCHAR NOT NULL,
            status VARCHAR NOT NULL CHECK (status IN ('ok', 'failed')),
            reason VARCHAR,
            attempts INTEGER NOT NULL,
            artifact_sha256 VARCHAR,
            trace_id VARCHAR,
            run_ids VARCHAR[],
            finished_at TIMESTAMP NOT NULL,
            PRIMARY KEY (farm, cell_key)
        )"""
    )


def m003_artifact_quality(con: duckdb.DuckDBPyConnection) -> None:
    """The quality gate's KL divergence and the perplexity ratio's interval, beside the older columns."""
    con.execute("ALTER TABLE artifacts ADD COLUMN parity_kl_mean DOUBLE")
    con.execute("ALTER TABLE artifacts ADD COLUMN parity_ppl_ratio_ci_low DOUBLE")
    con.execute("ALTER TABLE artifacts ADD COLUMN parity_ppl_ratio_ci_high DOUBLE")


def m004_artifact_quality_intervals(con: duckdb.DuckDBPyConnection) -> None:
    """The KL divergence's interval, and every quality column filled from the stored manifest where an
    artifact was stored before its column existed (the manifest has always carried the gate's numbers)."""
    con.execute("ALTER TABLE artifacts ADD COLUMN parity_kl_ci_low DOUBLE")
    con.execute("ALTER TABLE artifacts ADD COLUMN parity_kl_ci_high DOUBLE")
    rows = con.execute(
        "SELECT sha256, manifest_json FROM artifacts WHERE parity_kl_mean IS NULL OR parity_kl_ci_low IS NULL "
        "OR parity_ppl_ratio_ci_low IS NULL"
    ).fetchall()
    for sha256, text in rows:
        parity = (json.loads(text) or {}).get("parity") or {}
        kl_ci, ppl_ci = parity.get("kl_ci") or (None, None), parity.get("ppl_ratio_ci") or (None, None)
        con.execute(
            "UPDATE artifacts SET parity_kl_mean = coalesce(parity_kl_mean, ?), "
            "parity_kl_ci_low = coalesce(parity_kl_ci_low, ?), parity_kl_ci_high = coalesce(parity_kl_ci_high, ?), "
            "parity_ppl_ratio_ci_low = coalesce(parity_ppl_ratio_ci_low, ?), "
            "parity_ppl_ratio_ci_high = coalesce(parity_ppl_ratio_ci_high, ?) WHERE sha256 = ?",
            [parity.get("kl_mean"), kl_ci[0], kl_ci[1], ppl_ci[0], ppl_ci[1], sha256],
        )


MIGRATIONS: list[tuple[str, Migration]] = [
    ("m001_initial", m001_initial),
    ("m002_farm_cells", m002_farm_cells),
    ("m003_artifact_quality", m003_artifact_quality),
    ("m004_artifact_quality_intervals", m004_artifact_quality_intervals),
]


def applied(con: duckdb.DuckDBPyConnection) -> list[str]:
    con.execute("CREATE TABLE IF NOT EXISTS migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
    return [row[0] for row in con.execute("SELECT name FROM migrations ORDER BY applied_at, name").fetchall()]


def pending(con: duckdb.DuckDBPyConnection, migrations: list[tuple[str, Migration]] | None = None) -> list[str]:
    """The migrations not yet applied, read without writing (a read-only connection can ask)."""
    names = [name for name, _ in (MIGRATIONS if migrations is None else migrations)]
    has_table = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'migrations'"
    ).fetchone()
    if not has_table or not has_table[0]:
        return names
    done = {row[0] for row in con.execute("SELECT name FROM migrations").fetchall()}
    return [name for name in names if name not in done]


def migrate(con: duckdb.DuckDBPyConnection, migrations: list[tuple[str, Migration]] | None = None) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction; returns the names applied."""
    done = set(applied(con))
    ran: list[str] = []
    for name, function in MIGRATIONS if migrations is None else migrations:
        if name in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            function(con)
            con.execute("INSERT INTO migrations VALUES (?, ?)", [name, datetime.now(UTC).replace(tzinfo=None)])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        ran.append(name)
    return ran
