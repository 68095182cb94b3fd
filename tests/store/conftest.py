"""Fixtures for the store tests: a fresh store in the test's own EDGEKIT_HOME and generated profiles."""

from __future__ import annotations

import pytest

from edgekit.store import Store


@pytest.fixture
def store(edgekit_home):
    with Store() as opened:
        yield opened


def table_counts(store: Store) -> dict[str, int]:
    return {
        name: store.con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        for name in ("devices", "artifacts", "traces", "runs")
    }
