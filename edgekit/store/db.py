"""Opening the results store: ``<edgekit home>/results.duckdb`` plus its Parquet sample files.

DuckDB lets one process open the file read-write, or several read-only, at a time. So an open that finds
the file in use waits for it, retrying with backoff up to ``store_wait_s()`` (then ``StoreBusy`` names the
wait), and commands that only read open it read-only: they never block each other, never write, and
never delete a file. A writer holds the file only as long as it writes.

A read-write open migrates the schema, removes sample files that no committed trace references (left by a
crash between the rename of a Parquet file and the commit that would have referenced it) and defines the
``samples`` view (on first use) over the referenced files only. The view is a temporary one, so the
database never records the home's absolute path and a moved home keeps working. This module does not
ingest or query.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import duckdb

from edgekit import paths
from edgekit.errors import ConfigError, StoreBusy, StoreError
from edgekit.store.migrations import Migration, migrate, pending

DB_NAME = "results.duckdb"
SAMPLES_DIR = "samples"
TMP_SUFFIX = ".tmp"
STORE_WAIT_S = 120.0  # how long an open waits for another edgekit process to let go of the store
WAIT_ENV = "EDGEKIT_STORE_WAIT_S"
_FIRST_RETRY_S, _LONGEST_RETRY_S = 0.05, 1.0

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

# Called once when an open starts waiting, with a line saying so (the CLI shows it; the library prints nothing).
WaitFn = Callable[[str], None]


def store_wait_s() -> float:
    """How long an open waits for the store: ``$EDGEKIT_STORE_WAIT_S`` seconds, else ``STORE_WAIT_S``."""
    text = os.environ.get(WAIT_ENV)
    if text is None or not text.strip():
        return STORE_WAIT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86_400:
        raise ConfigError(f"{WAIT_ENV} must be a number of seconds from 0 to 86400, got '{text}'")
    return value


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    # DuckDB says so only in its message: this is the boundary where its text becomes a type.
    return "lock" in str(exc).lower()


def connect(db_path: Path, read_only: bool, wait_s: float, on_wait: WaitFn | None = None) -> duckdb.DuckDBPyConnection:
    """Open ``db_path``, waiting with backoff while another process holds it, at most ``wait_s``."""
    deadline = time.monotonic() + wait_s
    delay_s = _FIRST_RETRY_S
    told = False
    while True:
        try:
            return duckdb.connect(str(db_path), read_only=read_only)
        except duckdb.Error as exc:
            if not _is_lock_conflict(exc):
                raise StoreError(f"cannot open the results database '{db_path}': {exc}") from exc
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise StoreBusy(db_path, str(exc).splitlines()[0], wait_s) from exc
            if on_wait is not None and not told:
                on_wait(f"the results database is in use by another edgekit process; waiting up to {wait_s:g} s")
                told = True
            time.sleep(min(delay_s, left_s))
            delay_s = min(delay_s * 2, _LONGEST_RETRY_S)


class Store:
    """One open connection to the results database; use as a context manager.

    ``read_only``: for commands that only read (reports, comparisons, exports): shared with other readers,
    nothing written or deleted. ``wait_s``: how long to wait for another process (default ``store_wait_s()``).
    """

    def __init__(self, home: Path | None = None, migrations: list[tuple[str, Migration]] | None = None, *,
                 read_only: bool = False, wait_s: float | None = None, on_wait: WaitFn | None = None) -> None:
        self.home = Path(home) if home is not None else paths.home()
        self.db_path = self.home / DB_NAME
        self.samples_dir = self.home / SAMPLES_DIR
        self.read_only = read_only
        wait_s = store_wait_s() if wait_s is None else wait_s
        if read_only:
            self.applied_now: list[str] = []
            if not self.db_path.is_file() or self._needs_migration(wait_s, on_wait, migrations):
                with Store(self.home, migrations, wait_s=wait_s, on_wait=on_wait) as writer:  # once, then read
                    self.applied_now = writer.applied_now
            self.con = connect(self.db_path, True, wait_s, on_wait)
            self._samples_changed = True
            return
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.con = connect(self.db_path, False, wait_s, on_wait)
        try:
            self.applied_now = migrate(self.con, migrations)
        except duckdb.Error as exc:
            self.con.close()
            raise StoreError(f"cannot migrate the results database '{self.db_path}': {exc}") from exc
        self.clean_orphans()
        self._samples_changed = True

    def _needs_migration(self, wait_s: float, on_wait: WaitFn | None,
                         migrations: list[tuple[str, Migration]] | None) -> bool:
        con = connect(self.db_path, True, wait_s, on_wait)
        try:
            return bool(pending(con, migrations))
        finally:
            con.close()

    def samples_path(self, trace_id: str) -> Path:
        return self.samples_dir / f"{trace_id}.parquet"

    def clean_orphans(self) -> list[Path]:
        """Delete sample files (and temporary ones) that no committed trace references (read-write opens
        only: a writer holds the file alone, so no other process is between its rename and its commit)."""
        if self.read_only:
            return []
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


def open_store(home: Path | None = None, *, read_only: bool = False) -> Store:
    return Store(home, read_only=read_only)
