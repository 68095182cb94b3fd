"""``edgekit devices``, ``edgekit push`` and ``edgekit emulator`` end to end, in a child process, against
the emulated phone (real adb server) and board (real sshd)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

# Runs edgekit's real ``main`` (error handling, exit codes) with this topic's commands registered the
# way edgekit/cli/__init__.py registers topics.
_CLI = """
import sys
from edgekit import cli
from edgekit.cli import devices, emulator, push

def register_topics():
    for module in (devices, emulator, push):
        module.register(cli.app)

cli._register_topics = register_topics
cli.main(sys.argv[1:])
"""


def edgekit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=cwd, env={**os.environ, "COLUMNS": "200"})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_devices_json_lists_both_emulated_devices_with_facts(emulators: ModuleType, tmp_path: Path) -> None:
    started = edgekit("emulator", "start", "--json")
    assert started.returncode == 0, started.stderr
    assert sorted(s["name"] for s in json.loads(started.stdout)) == ["board-1", "phone-1"]
    gone = f"{{name: gone, transport: ssh, address: {{host: 127.0.0.1, port: {_closed_port()}}}}}"
    (tmp_path / "devices.yaml").write_text(f"devices:\n  - {gone}\n")

    listed = edgekit("devices", "--json", "--timeout-s", "20", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert {"phone-1", "board-1", "local", "gone"} <= set(rows)
    for name in ("phone-1", "board-1"):
        row = rows[name]
        assert row["reachable"] is True, row
        assert row["origin"] == "emulator"
        facts = ("model", "soc", "cores", "abi", "ram_bytes", "os_version", "temperature_c", "free_bytes")
        for fact in facts:
            assert row[fact] not in (None, ""), (name, fact, row)
    assert rows["phone-1"]["transport"] == "adb" and rows["phone-1"]["class"] == "phone"
    assert rows["phone-1"]["os_version"].startswith("Android")
    assert 0 <= rows["phone-1"]["battery_pct"] <= 100 and rows["phone-1"]["charging"] is False
    assert rows["board-1"]["transport"] == "ssh" and rows["board-1"]["model"].startswith("Raspberry Pi")
    assert rows["gone"]["reachable"] is False and rows["gone"]["error"]
    assert rows["local"]["reachable"] is True

    table = edgekit("devices", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "phone-1" in table.stdout and "board-1" in table.stdout and "EKP-1" in table.stdout

    status = edgekit("emulator", "status", "phone-1")
    assert status.returncode == 0 and json.loads(status.stdout)["energy"]["energy_j"] > 0
    assert edgekit("emulator", "stop", "--all").returncode == 0
    listed_after = json.loads(edgekit("emulator", "list", "--json").stdout)
    assert [s["running"] for s in listed_after] == [False, False]


def test_push_cli_pushes_then_skips(emulators: ModuleType, tmp_path: Path) -> None:
    emulators.start("phone", "cli-phone")
    artifact = tmp_path / "art"
    artifact.mkdir()
    (artifact / "manifest.json").write_text("{}")
    (artifact / "model.bin").write_bytes(os.urandom(2_000_000))
    first = edgekit("push", str(artifact), "--device", "cli-phone", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["skipped"] is False
    assert result["remote_path"].startswith("/data/local/tmp/edgekit/artifacts/")
    second = edgekit("push", str(artifact), "--device", "cli-phone")
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("already present and verified on cli-phone")


@pytest.mark.parametrize("args", [["devices", "nope"], ["push", ".", "--device", "nope"]])
def test_unknown_device_is_exit_2_and_one_line(args: list[str], tmp_path: Path, private_adb: int) -> None:
    proc = edgekit(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: unknown device 'nope'; known: local"]


def test_bad_inventory_and_bad_options_are_exit_2_and_one_line(tmp_path: Path, private_adb: int) -> None:
    (tmp_path / "devices.yaml").write_text("devices:\n  - {name: pixel, transport: usb, serial: X}\n")
    proc = edgekit("devices", "--json", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: devices.yaml: device 'pixel': transport must be one of adb, ssh, local, got 'usb'"
    ]
    proc = edgekit("emulator", "start", "--kind", "phone", "--phones", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: use either --phones/--boards or --kind/--name, not both"
    ]
