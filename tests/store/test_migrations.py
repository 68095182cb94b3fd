"""Schema migrations: a fresh database gets every migration, a re-open applies none, a new migration
is applied exactly once, and a failing one leaves nothing recorded."""

from __future__ import annotations

import duckdb
import pytest

from edgekit.errors import StoreError
from edgekit.store import Store
from edgekit.store.migrations import MIGRATIONS


def _recorded(store: Store) -> list[str]:
    return [r[0] for r in store.con.execute("SELECT name FROM migrations ORDER BY applied_at, name").fetchall()]


def test_fresh_database_gets_every_migration_then_none(edgekit_home):
    with Store() as store:
        assert store.applied_now == [name for name, _ in MIGRATIONS]
        assert _recorded(store) == [name for name, _ in MIGRATIONS]
        tables = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"migrations", "devices", "artifacts", "traces", "runs"} <= tables
        assert store.con.execute("SELECT count(*) FROM migrations WHERE applied_at IS NULL").fetchone()[0] == 0
    assert (edgekit_home / "results.duckdb").is_file()
    with Store() as store:
        assert store.applied_now == []
        assert _recorded(store) == [name for name, _ in MIGRATIONS]


def test_a_new_migration_is_applied_once(edgekit_home):
    with Store():
        pass

    def m999_add_notes(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("ALTER TABLE runs ADD COLUMN note VARCHAR")

    extended = [*MIGRATIONS, ("m999_add_notes", m999_add_notes)]
    with Store(migrations=extended) as store:
        assert store.applied_now == ["m999_add_notes"]
        columns = {r[0] for r in store.con.execute("DESCRIBE runs").fetchall()}
        assert "note" in columns
    with Store(migrations=extended) as store:
        assert store.applied_now == []
        assert _recorded(store).count("m999_add_notes") == 1


def test_a_failing_migration_is_rolled_back_and_not_recorded(edgekit_home):
    def m998_broken(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE half_done (x INTEGER)")
        con.execute("SELECT * FROM no_such_table")

    with pytest.raises(StoreError, match="cannot migrate the results database"):
        Store(migrations=[*MIGRATIONS, ("m998_broken", m998_broken)])
    with Store() as store:
        assert "m998_broken" not in _recorded(store)
        tables = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert "half_done" not in tables


def test_artifacts_stored_before_the_quality_columns_get_them_from_their_manifest(edgekit_home):
    from edgekit.store.artifacts import artifact_row
    from tests.store.tracegen import ArtifactSpec, fake_manifest

    manifest = fake_manifest(ArtifactSpec(ppl_ratio=1.03, kl_mean=0.04))
    newer = ("parity_kl_mean", "parity_kl_ci", "parity_ppl_ratio_ci")
    old_row = {k: v for k, v in artifact_row("a" * 64, manifest).items() if not k.startswith(newer)}
    with Store(migrations=MIGRATIONS[:2]) as store:  # a database from before m003
        store.con.execute(f"INSERT INTO artifacts ({', '.join(old_row)}) VALUES ({', '.join('?' for _ in old_row)})",
                          list(old_row.values()))  # fmt: skip
    with Store() as store:
        assert store.applied_now == [name for name, _ in MIGRATIONS[2:]]
        stored = store.con.execute(
            "SELECT parity_ppl_ratio, parity_ppl_ratio_ci_low, parity_ppl_ratio_ci_high, parity_kl_mean, "
            "parity_kl_ci_low, parity_kl_ci_high FROM artifacts WHERE sha256 = ?", ["a" * 64]
        ).fetchone()
    parity = manifest.parity
    assert stored == pytest.approx((parity.ppl_ratio, *parity.ppl_ratio_ci, parity.kl_mean, *parity.kl_ci))
    assert stored[3] == pytest.approx(0.04) and stored[1] < 1.03 < stored[2]


def test_a_read_only_open_migrates_first_then_only_reads(edgekit_home):
    """A reader finds a fresh home, then a schema a migration behind: both are brought up to date by a short write
    first; the connection it keeps cannot write."""
    with Store(read_only=True) as store:
        assert store.applied_now == [name for name, _ in MIGRATIONS]

    def m999_add_notes(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("ALTER TABLE runs ADD COLUMN note VARCHAR")

    with Store(migrations=[*MIGRATIONS, ("m999_add_notes", m999_add_notes)], read_only=True) as store:
        assert store.applied_now == ["m999_add_notes"]
        assert "note" in {r[0] for r in store.con.execute("DESCRIBE runs").fetchall()}
        with pytest.raises(duckdb.Error, match="read-only"):
            store.con.execute("DELETE FROM runs")
    with Store(read_only=True) as store:
        assert store.applied_now == []
