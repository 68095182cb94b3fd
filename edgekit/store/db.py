"""Opening the results store: ``<edgekit home>/results.duckdb`` plus its Parquet sample files.

Opening migrates the schema, removes sample files that no committed trace references (left by a crash
between the rename of a Parquet file and the commit that would have referenced it) and defines the
``samples`` view (on first use) over the referenced files only. The view is a temporary one, so the database never
records the home's absolute path and a moved home keeps working. This module does not ingest or query.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import duckdb

from edgekit import paths
from edgekit.errors import StoreBusy, StoreError
from edgekit.store.migrations import Migration, migrate

DB_NAME = "results.duckdb"
SAMPLES_DIR = "samples"
TMP_SUFFIX = ".tmp"

# The Parquet schema of a sample file, as DuckDB types (``samples.py`` writes exactly these columns).
SAMPLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("trace_id", "VARCHAR"),
    ("ts_ns", "BIGINT"),
    ("rss_kb", "BIGINT"),
    ("hwm_kb", "BIGINT"),
    ("pss_kb", "BIGINT"),
    ("power_uw", "BIGINT"),
    ("energy_uj", "BIGINT"),
    ("voltage_uv", "BIGINT"),
    ("current_ua", "BIGINT"),
    ("cpu_freq_khz", "BIGINT[]"),
    ("thermal_mc", "MAP(VARCHAR, BIGINT)"),
)


class Store:
    """One open connection to the results database; use as a context manager."""

    def __init__(self, home: Path | None = None, migrations: list[tuple[str, Migration]] | None = None) -> None:
        self.home = Path(home) if home is not None else paths.home()
        self.db_path = self.home / DB_NAME
        self.samples_dir = self.home / SAMPLES_DIR
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.db_path))
        except duckdb.Error as exc:
            # DuckDB says so only in its message: this is the boundary where its text becomes a type.
            if "lock" in str(exc).lower():
                raise StoreBusy(self.db_path, str(exc).splitlines()[0]) from exc
            raise StoreError(f"cannot open the results database '{self.db_path}': {exc}") from exc
        try:
            self.applied_now = migrate(self.con, migrations)
        except duckdb.Error as exc:
            self.con.close()
            raise StoreError(f"cannot migrate the results database '{self.db_path}': {exc}") from exc
        self.clean_orphans()
        self._samples_changed = True

    def samples_path(self, trace_id: str) -> Path:
        return self.samples_dir / f"{trace_id}.parquet"

    def clean_orphans(self) -> list[Path]:
        """Delete sample files (and temporary ones) that no committed trace references."""
        known = {row[0] for row in self.con.execute("SELECT samples_file FROM traces").fetchall() if row[0]}
        removed = []
        for path in self.samples_dir.iterdir():
            if path.name.endswith(TMP_SUFFIX) or (path.suffix == ".parquet" and path.name not in known):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def mark_samples_changed(self) -> None:
        self._samples_changed = True

    def samples_view(self) -> str:
        """The name of a view over every stored sample (defined on first use after a change)."""
        if self._samples_changed:
            self.refresh_samples_view()
            self._samples_changed = False
        return "samples"

    def refresh_samples_view(self) -> None:
        """(Re)define the temporary ``samples`` view over every referenced Parquet file."""
        files = [
            str(self.samples_dir / row[0])
            for row in self.con.execute("SELECT samples_file FROM traces WHERE samples_file IS NOT NULL").fetchall()
        ]
        if files:
            listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW samples AS SELECT * FROM read_parquet([{listing}])")
        else:
            empty = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in SAMPLE_COLUMNS)
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW samples AS SELECT {empty} WHERE false")

    def samples_of(self, trace_id: str) -> str:
        """A ``read_parquet`` expression for one trace's samples (reads one file, never the whole set)."""
        row = self.con.execute("SELECT samples_file FROM traces WHERE trace_id = ?", [trace_id]).fetchone()
        if row is None or not row[0]:
            raise StoreError(f"trace {trace_id[:12]} has no samples in the store")
        path = str(self.samples_dir / row[0]).replace("'", "''")
        return f"read_parquet('{path}')"

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()



def open_store(home: Path | None = None) -> Store:
    return Store(home)
