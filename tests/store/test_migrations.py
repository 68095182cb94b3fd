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
