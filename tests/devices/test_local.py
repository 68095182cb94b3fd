"""LocalDevice: this host as a device (argv commands, timeouts, copies, facts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgekit.devices.base import TransportError
from edgekit.devices.local import LocalDevice


@pytest.fixture
def device(tmp_path: Path) -> LocalDevice:
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    return LocalDevice(workdir=workdir)


def test_push_pull_with_progress_relative_to_workdir(device: LocalDevice, tmp_path: Path) -> None:
    source = tmp_path / "weird name;$(x).bin"
    source.write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    events: list[tuple[int, int]] = []
    device.push(str(source), "sub/dir/model.bin", progress=lambda d, t: events.append((d, t)))
    assert events[-1] == (source.stat().st_size,) * 2
    assert (tmp_path / "workdir" / "sub" / "dir" / "model.bin").read_bytes() == source.read_bytes()
    device.pull("sub/dir/model.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_push_of_a_missing_local_file_raises(device: LocalDevice, tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="not a local file"):
        device.push(str(tmp_path / "absent.bin"), "x.bin")


def test_info(device: LocalDevice) -> None:
    info = device.info()
    assert info.reachable and info.transport == "local" and info.name == "local"
    assert info.cores == os.cpu_count() and info.abi == os.uname().machine
    assert info.ram_bytes and info.free_bytes and info.os_version
    assert info.battery_pct is None
