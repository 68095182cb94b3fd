"""The device contract (``edgekit/devices/base.py``), one test per promise, run against every transport: this
host (local), the emulated phone through the real adb server (adb) and the emulated board through the real
OpenSSH server (ssh). A transport that breaks a promise fails here under its own name; what only one
transport has (adb's shell v1 fallback, ssh's host keys, ...) is tested in its own file."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit.devices.adb import AdbDevice
from edgekit.devices.base import Device
from edgekit.devices.local import LocalDevice
from edgekit.devices.ssh import SshDevice
from edgekit.emulator import _board_files
from edgekit.errors import CommandFailed, CommandTimeout, RemoteFileMissing
from tests.fixtures.board import BoardHandle
from tests.fixtures.phone import Phone

TRANSPORTS = ("local", "adb", "ssh")


@pytest.fixture(params=TRANSPORTS)
def device(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Device, str]]:
    """(an open device of each transport, a writable directory on it)."""
    kind = request.param
    opened: Device
    if kind == "local":
        workdir = tmp_path / "workdir"
        workdir.mkdir()
        opened, scratch = LocalDevice(workdir=workdir), str(workdir / "contract")
    elif kind == "adb":
        phone: Phone = request.getfixturevalue("phone")
        opened, scratch = AdbDevice(phone.serial, server_port=phone.server.port), "/data/local/tmp/contract"
    else:
        board: BoardHandle = request.getfixturevalue("shared_board")
        ssh = SshDevice(board.alias, name=board.alias, ssh_config=str(board.ssh_config), workdir=_board_files.WORKDIR)
        opened, scratch = ssh.connect(), f"{_board_files.WORKDIR}/contract"
    try:
        opened.run(["mkdir", "-p", scratch], check=True)
        yield opened, scratch
    finally:
        opened.close()


def test_run_gives_exit_code_stdout_and_stderr(device: tuple[Device, str]) -> None:
    dev, _ = device
    result = dev.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exit_code, result.stdout, result.stderr) == (7, b"out\n", b"err\n")
    assert dev.run(["printf", "%s|", "a b", "$(id)", "x;y"]).text() == "a b|$(id)|x;y|"  # argv, never a shell string
    assert dev.run(["no-such-program-here"]).exit_code == 127


def test_failing_command_with_check_raises_typed_facts(device: tuple[Device, str]) -> None:
    dev, _ = device
    with pytest.raises(CommandFailed) as caught:
        dev.run(["sh", "-c", "echo boom >&2; exit 5"], check=True)
    failed = caught.value
    assert (failed.device, failed.argv[:2], failed.exit_code) == (dev.name, ["sh", "-c"], 5)
    assert "boom" in failed.stderr_tail and not failed.retryable


def test_timeout_raises_and_ends_the_command(device: tuple[Device, str]) -> None:
    dev, _ = device
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        dev.run(["sh", "-c", "sleep 45.5 & sleep 46.5"], timeout_s=1.0)
    assert caught.value.timeout_s == 1.0 and caught.value.retryable
    assert time.monotonic() - started < 20
    deadline = time.monotonic() + 10
    while "sleep 4" in dev.run(["ps", "-A", "-o", "args"]).text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "sleep 45.5" not in dev.run(["ps", "-A", "-o", "args"]).text()


def test_push_pull_round_trip_with_progress(device: tuple[Device, str], tmp_path: Path) -> None:
    dev, scratch = device
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    size = source.stat().st_size
    pushed: list[tuple[int, int]] = []
    dev.push(str(source), f"{scratch}/model.bin", progress=lambda done, total: pushed.append((done, total)))
    pulled: list[tuple[int, int]] = []
    back = tmp_path / "back.bin"
    dev.pull(f"{scratch}/model.bin", str(back), progress=lambda done, total: pulled.append((done, total)))
    assert back.read_bytes() == source.read_bytes()
    for events in (pushed, pulled):
        assert events[-1] == (size, size)
        assert [done for done, _ in events] == sorted(done for done, _ in events)


def test_pull_of_a_missing_file_raises_and_writes_nothing(device: tuple[Device, str], tmp_path: Path) -> None:
    dev, scratch = device
    target = tmp_path / "pulled" / "absent.bin"
    target.parent.mkdir()
    with pytest.raises(RemoteFileMissing) as caught:
        dev.pull(f"{scratch}/absent.bin", str(target))
    assert caught.value.path == f"{scratch}/absent.bin" and not caught.value.retryable
    assert list(target.parent.iterdir()) == []


def test_info_is_live_and_names_the_transport(device: tuple[Device, str]) -> None:
    dev, _ = device
    info = dev.info()
    assert info.reachable and info.transport == dev.transport and info.name == dev.name
    assert info.cores and info.cores >= 1 and info.abi and info.free_bytes and info.free_bytes > 0
