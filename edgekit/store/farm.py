"""Farm cells in the results store: which cells of a farm finished, how, and with which trace.

An ok cell is written by ``ingest_cell`` in the same transaction as its trace (``ingest_trace``'s
``also``), so the store never holds a trace without its cell or a cell without its trace; a failed cell
is written alone. The key is (farm, cell_key): a cell is stored once, a failed cell that later succeeds
is replaced by the ok one, an ok cell is never overwritten. This module stores and reads rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from edgekit.store.db import Store
from edgekit.store.ingest import IngestResult, ingest_parsed, ingest_trace

if TYPE_CHECKING:
    from edgekit.profile.run import ProfileResult

_COLUMNS = ("farm", "cell_key", "model", "recipe", "device", "workload", "status", "reason", "attempts",
            "artifact_sha256", "trace_id", "run_ids", "finished_at")  # fmt: skip
_UPSERT = (
    f"INSERT INTO farm_cells ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    "ON CONFLICT (farm, cell_key) DO UPDATE SET status = excluded.status, reason = excluded.reason, "
    "attempts = excluded.attempts, artifact_sha256 = excluded.artifact_sha256, trace_id = excluded.trace_id, "
    "run_ids = excluded.run_ids, finished_at = excluded.finished_at "
    "WHERE farm_cells.status <> 'ok'"
)


@dataclass(frozen=True)
class CellRecord:
    """Identity of a cell as the store keeps it."""

    farm: str
    cell_key: str
    model: str
    recipe: str
    device: str
    workload_name: str


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _write(con: duckdb.DuckDBPyConnection, cell: CellRecord, status: str, reason: str | None, attempts: int,
           sha: str | None, trace_id: str | None, run_ids: list[str] | None) -> None:
    con.execute(_UPSERT, [cell.farm, cell.cell_key, cell.model, cell.recipe, cell.device, cell.workload_name, status,
                          reason, attempts, sha, trace_id, run_ids, _now()])


def ingest_cell(store: Store, cell: CellRecord, trace_path: Path, artifact_dir: Path, attempts: int,
                artifact_sha: str, result: ProfileResult | None = None) -> IngestResult:
    """Ingest the cell's trace and mark the cell ok, in one transaction. ``result``: the trace already
    validated and its metrics computed in this process (nothing is parsed twice); else the file is read."""

    def also(con: duckdb.DuckDBPyConnection, trace_id: str, run_ids: list[str]) -> None:
        _write(con, cell, "ok", None, attempts, artifact_sha, trace_id, run_ids)

    if result is not None:
        return ingest_parsed(result.trace, result.manifest, result.metrics, store=store, also=also)
    return ingest_trace(trace_path, artifact_dir, store=store, also=also)


def record_failed(store: Store, cell: CellRecord, reason: str, attempts: int, artifact_sha: str | None) -> None:
    """Mark the cell failed with its reason (an ok cell stays ok)."""
    con = store.con
    con.execute("BEGIN TRANSACTION")
    try:
        _write(con, cell, "failed", reason, attempts, artifact_sha, None, None)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def ok_keys(store: Store, farm: str) -> set[str]:
    rows = store.con.execute("SELECT cell_key FROM farm_cells WHERE farm = ? AND status = 'ok'", [farm]).fetchall()
    return {r[0] for r in rows}


def farm_cells(store: Store, farm: str | None = None) -> list[dict[str, Any]]:
    """Every stored cell (of ``farm``, or of every farm), ordered for display."""
    where, params = (" WHERE farm = ?", [farm]) if farm is not None else ("", [])
    cursor = store.con.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM farm_cells{where} ORDER BY farm, model, recipe, device, workload",
        params,
    )
    return [dict(zip(_COLUMNS, row, strict=True)) for row in cursor.fetchall()]


def farm_names(store: Store) -> list[str]:
    return [r[0] for r in store.con.execute("SELECT DISTINCT farm FROM farm_cells ORDER BY 1").fetchall()]
