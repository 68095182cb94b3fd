"""Fixtures for farm tests: one rig of emulated devices (2 phones, 2 boards) per test module.

Starting emulated devices costs seconds, so a module shares one rig: the devices run under their own
EDGEKIT_HOME with a private adb server, and each test sees them through an inventory file
(``devices.yaml``) while keeping its own EDGEKIT_HOME (its own store, locks and traces). Everything the
rig starts is stopped at teardown. ``Rig.kill``/``Rig.restart`` kill a device's processes for real and
bring it back on the same port (same identity), for the fault tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.phone import free_port

REPO = Path(__file__).resolve().parents[2]
PHONES = ("phone-1", "phone-2")
BOARDS = ("board-1", "board-2")
CLI_TIMEOUT_S = 600


@dataclass
class Rig:
    home: Path
    adb_port: int
    inventory: Path
    names: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def _env(self) -> Iterator[Any]:
        from edgekit.emulator import manager

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("EDGEKIT_HOME", str(self.home))
            mp.setenv("ANDROID_ADB_SERVER_PORT", str(self.adb_port))
            yield manager

    def kill(self, name: str) -> None:
        """SIGKILL the device's whole process group (a device that died, not one shut down)."""
        with self._env() as manager:
            status = manager.status(name)
            assert status.running and status.pid, f"{name} is not running"
            os.killpg(status.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while manager.status(name).running and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not manager.status(name).running, f"{name} survived SIGKILL"

    def restart(self, name: str) -> None:
        with self._env() as manager:
            kind = manager.status(name).kind
            manager.start(kind, name, ready_timeout_s=60.0, port_release_s=15.0)

    def ensure_running(self) -> None:
        with self._env() as manager:
            for name in self.names:
                if not manager.status(name).running:
                    manager.start(manager.status(name).kind, name, ready_timeout_s=60.0, port_release_s=15.0)


def _start_rig(home: Path) -> Rig:
    from edgekit.inventory import emulated_entry

    rig = Rig(home=home, adb_port=free_port(), inventory=home / "devices.yaml")
    entries = []
    with rig._env() as manager:
        for kind, names in (("phone", PHONES), ("board", BOARDS)):
            for name in names:
                entry = emulated_entry(manager.start(kind, name, ready_timeout_s=60.0))
                data = entry.model_dump(mode="json", by_alias=True, exclude_none=True)
                # From a file an entry is not "emulated", so say which Python the device runs.
                data["python"] = sys.executable
                entries.append(data)
                rig.names.append(name)
    tmp = rig.inventory.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"devices": entries}, sort_keys=False))
    tmp.replace(rig.inventory)
    return rig


@pytest.fixture(scope="module")
def farm_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    rig: Rig | None = None
    home = tmp_path_factory.mktemp("farm-rig")
    try:
        rig = _start_rig(home)
        yield rig
    finally:
        port = rig.adb_port if rig else None
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("EDGEKIT_HOME", str(home))
            if port is not None:
                mp.setenv("ANDROID_ADB_SERVER_PORT", str(port))
            from edgekit.emulator import manager

            manager.stop_all(grace_s=5.0)
        if port is not None:
            subprocess.run(["adb", "-P", str(port), "kill-server"], capture_output=True, timeout=30, check=False)


@pytest.fixture
def rig(farm_rig: Rig, monkeypatch: pytest.MonkeyPatch) -> Rig:
    """The module's rig, every device up, reachable from this test (its adb server in the env)."""
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(farm_rig.adb_port))
    farm_rig.ensure_running()
    return farm_rig


def write_farm(path: Path, **values: Any) -> Path:
    """A farm.yaml with tiny defaults (short workload, fast retries) overridden by ``values``."""
    spec: dict[str, Any] = {
        "name": "t",
        "models": ["tiny-llama"],
        "recipes": ["onnx-fp32"],
        "devices": ["all"],
        "workloads": {"short": tiny_workload()},
        "retries": 2,
        "backoff_s": 0.2,
        "quarantine_after": 3,
    }
    spec.update(values)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def tiny_workload(**values: Any) -> dict[str, Any]:
    return {"prompt_len": 8, "gen_len": 8, "runs": 1, "warmup": 0, "baseline_s": 0.1, "cooldown_s": 0.0,
            "sample_ms": 20, **values}


def cli_env() -> dict[str, str]:
    """The environment for an ``edgekit`` subprocess: this test's home, cache and adb server."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def edgekit_cli(*args: str, cwd: Path, timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def edgekit_popen(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edgekit", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)


def store_rows(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    from edgekit.store import Store

    with Store() as store:
        return store.con.execute(sql, params or []).fetchall()


def read_until(proc: subprocess.Popen[str], pattern: str, *, timeout_s: float, count: int = 1) -> list[str]:
    """Read a farm's output until ``count`` lines match ``pattern`` (the last line read is the last match);
    every line read is returned. Fails when the deadline passes or the farm exits first."""
    assert proc.stdout is not None
    seen: list[str] = []
    matched = 0
    deadline = time.monotonic() + timeout_s
    while matched < count:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"no {count} line(s) matching {pattern!r} in time; output so far:\n" + "".join(seen))
        line = proc.stdout.readline()
        if line:
            seen.append(line)
            matched += bool(re.search(pattern, line))
    return seen
