"""The emulator manager against the real emulated phone (stock adb server) and board (stock sshd/ssh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import ModuleType

import psutil
import pytest

from edgekit.devices import adb_server
from edgekit.emulator.manager import EmulatorError
from edgekit.errors import UnknownName


def _ssh(config: str, name: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", config, name, command], capture_output=True, text=True,
                          timeout=30, check=False, stdin=subprocess.DEVNULL)


def _adb(serial: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["adb", "-s", serial, *args], capture_output=True, text=True, timeout=30,
                          check=False, env=os.environ.copy())


def test_board_start_stop_keeps_identity_and_address(emulators: ModuleType) -> None:
    st = emulators.start("board", "bench-board")
    assert st.running and st.pid and st.port not in range(5555, 5586)
    assert st.ssh_config and Path(st.ssh_config).is_file()
    first = _ssh(st.ssh_config, "bench-board", "hostname && echo hello > ~/keep.txt")
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["bench-board"]
    host_key_before = (Path(st.state_dir) / "known_hosts").read_text()

    stopped = emulators.stop("bench-board")
    assert not stopped.running and stopped.pid is None
    assert not psutil.pid_exists(st.pid) or psutil.Process(st.pid).status() == psutil.STATUS_ZOMBIE
    assert _ssh(st.ssh_config, "bench-board", "true").returncode != 0

    again = emulators.start("board", "bench-board")
    assert again.port == st.port and again.pid != st.pid
    assert (Path(again.state_dir) / "known_hosts").read_text() == host_key_before
    # StrictHostKeyChecking is on in the snippet: this only works if the host key survived the restart.
    second = _ssh(st.ssh_config, "bench-board", "cat ~/keep.txt")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "hello"

    status = emulators.status("bench-board")
    assert status.energy is not None and status.energy["energy_j"] > 0
    assert [s.name for s in emulators.list()] == ["bench-board"]


def test_phone_is_connected_to_the_adb_server_and_keeps_identity(emulators: ModuleType) -> None:
    st = emulators.start("phone")
    assert st.name == "phone-1" and st.running and st.port not in range(5555, 5586)
    serial = f"127.0.0.1:{st.port}"
    assert {d.serial: d.state for d in adb_server.devices()}.get(serial) == "device"
    serialno = _adb(serial, "shell", "getprop", "ro.serialno")
    assert serialno.returncode == 0 and serialno.stdout.strip(), serialno.stderr

    emulators.stop("phone-1")
    assert serial not in {d.serial for d in adb_server.devices() if d.state == "device"}

    again = emulators.start("phone", "phone-1")
    assert again.port == st.port
    assert {d.serial: d.state for d in adb_server.devices()}.get(serial) == "device"
    assert _adb(serial, "shell", "getprop", "ro.serialno").stdout == serialno.stdout
    assert emulators.status("phone-1").energy is not None


def test_ensure_reuses_stopped_devices_before_creating_new_ones(emulators: ModuleType) -> None:
    first = emulators.ensure("board", 1)
    assert [s.name for s in first] == ["board-1"]
    emulators.stop("board-1")
    assert [s.name for s in emulators.ensure("board", 2)] == ["board-1", "board-2"]
    assert [s.name for s in emulators.ensure("board", 1)] == ["board-1"]
    assert {s.name for s in emulators.stop_all()} == {"board-1", "board-2"}
    assert not any(s.running for s in emulators.list())


def test_bad_kind_name_and_unknown_emulator(emulators: ModuleType) -> None:
    with pytest.raises(EmulatorError, match=r"kind must be one of phone, board, got 'tv'"):
        emulators.start("tv")
    with pytest.raises(EmulatorError, match=r"emulator name must match"):
        emulators.start("board", "bad name")
    with pytest.raises(UnknownName, match=r"unknown emulator 'nope'; known: none"):
        emulators.stop("nope")
    with pytest.raises(UnknownName):
        emulators.status("nope")
