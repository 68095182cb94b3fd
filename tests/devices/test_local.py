"""LocalDevice: this host as a device (argv commands, timeouts, copies, facts)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from edgekit.devices.base import CommandTimeout, RemoteFileMissing, TransportError
from edgekit.devices.local import LocalDevice


@pytest.fixture
def device(tmp_path: Path) -> LocalDevice:
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    return LocalDevice(workdir=workdir)


def test_exit_code_stdout_stderr_and_no_shell(device: LocalDevice) -> None:
    result = device.run(["sh", "-c", "echo out; echo err >&2; exit 5"])
    assert (result.exit_code, result.stdout, result.stderr) == (5, b"out\n", b"err\n")
    assert device.run(["echo", "$(id); x"]).text() == "$(id); x\n"
    assert device.run(["no-such-program-here"]).exit_code == 127
    with pytest.raises(TransportError, match="exited with 5"):
        device.run(["sh", "-c", "exit 5"], check=True)


def test_timeout_kills_the_process_group(device: LocalDevice) -> None:
    with pytest.raises(CommandTimeout):
        device.run(["sh", "-c", "sleep 43.5 & sleep 44.5"], timeout_s=0.5)
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and p.info["cmdline"][-1:] in (["43.5"], ["44.5"])]
    assert left == []


def test_push_pull_with_progress_relative_to_workdir(device: LocalDevice, tmp_path: Path) -> None:
    source = tmp_path / "weird name;$(x).bin"
    source.write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    events: list[tuple[int, int]] = []
    device.push(str(source), "sub/dir/model.bin", progress=lambda d, t: events.append((d, t)))
    assert events[-1] == (source.stat().st_size,) * 2
    assert (tmp_path / "workdir" / "sub" / "dir" / "model.bin").read_bytes() == source.read_bytes()
    device.pull("sub/dir/model.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_missing_files_raise(device: LocalDevice, tmp_path: Path) -> None:
    with pytest.raises(RemoteFileMissing):
        device.pull("nope.bin", str(tmp_path / "nope.bin"))
    assert not (tmp_path / "nope.bin").exists()
    with pytest.raises(TransportError, match="not a local file"):
        device.push(str(tmp_path / "absent.bin"), "x.bin")


def test_info(device: LocalDevice) -> None:
    info = device.info()
    assert info.reachable and info.transport == "local" and info.name == "local"
    assert info.cores == os.cpu_count() and info.abi == os.uname().machine
    assert info.ram_bytes and info.free_bytes and info.os_version
    assert info.battery_pct is None
