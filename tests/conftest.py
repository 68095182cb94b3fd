"""Shared fixtures. Every test runs with its own EDGEKIT_HOME so nothing leaks between tests or into
the user's real home; fixtures that start processes (adb, sshd, emulated devices) live in
``tests/fixtures`` and always stop what they start."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures.phone", "tests.fixtures.board", "tests.fixtures.emulated"]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory):
    """One content-addressed model/artifact cache for the whole session: tiny models are trained once."""
    return tmp_path_factory.mktemp("edgekit-cache")


@pytest.fixture(autouse=True)
def edgekit_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, shared_cache):
    home = tmp_path_factory.mktemp("edgekit-home")
    monkeypatch.setenv("EDGEKIT_HOME", str(home))
    monkeypatch.setenv("EDGEKIT_CACHE", str(shared_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home
