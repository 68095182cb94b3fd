"""Verified, content-addressed, atomic push: to the local device, the emulated phone (real adb server)
and the emulated board (real sshd). Device-side files are inspected through the emulators' state
directories, which hold the devices' storage."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

from edgekit import inventory
from edgekit.devices.push import (
    InsufficientSpace,
    PushError,
    PushResult,
    digest_artifact,
    push_artifact,
)
from edgekit.emulator.manager import EmulatorStatus
from edgekit.errors import ArtifactError


def _artifact(directory: Path, size_bytes: int = 300_000, n_files: int = 2) -> Path:
    (directory / "weights").mkdir(parents=True)
    (directory / "manifest.json").write_text('{"format": "test"}')
    for index in range(n_files):
        (directory / "weights" / f"part{index}.bin").write_bytes(os.urandom(size_bytes))
    return directory


def _host_path(st: EmulatorStatus, remote: str) -> Path:
    """Where a device path of an emulated device lives on this host (its state directory)."""
    state_dir = Path(st.state_dir)
    if st.kind == "phone":
        return state_dir / remote.lstrip("/")
    return state_dir / "rootfs" / remote.lstrip("/")


def _same_tree(local: Path, remote: Path) -> bool:
    files = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
    return all((remote / f).read_bytes() == (local / f).read_bytes() for f in files)


def _tmp_dirs(artifacts_dir: Path) -> list[Path]:
    return [p for p in artifacts_dir.glob(".tmp-*")] if artifacts_dir.is_dir() else []


# -- the digest -----------------------------------------------------------------------------------------
def test_digest_covers_names_and_contents_in_a_stable_order(tmp_path: Path) -> None:
    a = _artifact(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert digest_artifact(a).sha256 == digest_artifact(b).sha256
    listing = "".join(f"{hashlib.sha256((a / f.relpath).read_bytes()).hexdigest()}  {f.relpath}\n"
                      for f in digest_artifact(a).files)
    assert digest_artifact(a).sha256 == hashlib.sha256(listing.encode()).hexdigest()
    (b / "weights" / "part0.bin").rename(b / "weights" / "renamed.bin")
    assert digest_artifact(b).sha256 != digest_artifact(a).sha256
    (a / "manifest.json").write_text('{"format": "changed"}')
    assert digest_artifact(a).sha256 != digest_artifact(b).sha256


def test_bad_artifact_directories(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        digest_artifact(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="holds no files"):
        digest_artifact(tmp_path / "empty")


# -- the local device ----------------------------------------------------------------------------------
def test_push_to_the_local_device(tmp_path: Path, edgekit_home: Path) -> None:
    artifact = _artifact(tmp_path / "art")
    sha = digest_artifact(artifact).sha256
    entry = inventory.get()  # the embedded default
    with inventory.open_device() as device:
        result = push_artifact(device, artifact, entry.resolved_workdir())
        assert result.device == "local" and not result.skipped
        assert result.remote_path == str(edgekit_home / "local-device" / "artifacts" / sha)
        assert _same_tree(artifact, Path(result.remote_path))
        assert push_artifact(device, artifact, entry.resolved_workdir()).skipped
        # a file missing at the final path is not "present": the push repairs it
        (Path(result.remote_path) / "manifest.json").unlink()
        again = push_artifact(device, artifact, entry.resolved_workdir())
        assert not again.skipped and _same_tree(artifact, Path(result.remote_path))


# -- emulated phone and board -------------------------------------------------------------------------
@pytest.fixture(params=["phone", "board"])
def emulated(request: pytest.FixtureRequest, emulators: ModuleType) -> Iterator[EmulatorStatus]:
    yield emulators.start(request.param, f"push-{request.param}")


def test_push_is_content_addressed_verified_and_skipped_when_present(
    emulated: EmulatorStatus, tmp_path: Path
) -> None:
    artifact = _artifact(tmp_path / "art")
    sha = digest_artifact(artifact).sha256
    entry = inventory.get(emulated.name)
    workdir = entry.resolved_workdir()
    with inventory.connect(entry) as device:
        first = push_artifact(device, artifact, workdir)
        assert isinstance(first, PushResult) and not first.skipped
        assert first.remote_path == f"{workdir}/artifacts/{sha}"
        assert first.sent_bytes == first.total_bytes > 600_000 and first.mb_per_s > 0
        final = _host_path(emulated, first.remote_path)
        assert _same_tree(artifact, final)
        assert not _tmp_dirs(final.parent)
        # the device's own sha256sum agrees with the local digest
        remote = device.run(["sha256sum", f"{first.remote_path}/manifest.json"], check=True)
        local_sha = hashlib.sha256((artifact / "manifest.json").read_bytes()).hexdigest()
        assert remote.text().split()[0] == local_sha

        second = push_artifact(device, artifact, workdir)
        assert second.skipped and second.sent_bytes == 0 and second.remote_path == first.remote_path

        # same size, one flipped byte: only a hash on the device can tell
        victim = final / "weights" / "part1.bin"
        data = bytearray(victim.read_bytes())
        data[1000] ^= 0xFF
        victim.write_bytes(bytes(data))
        third = push_artifact(device, artifact, workdir)
        assert not third.skipped
        assert _same_tree(artifact, final)
        assert not list(final.parent.glob(".old-*")) and not _tmp_dirs(final.parent)


def _kill_device(pid: int | None) -> None:
    """Pull the plug: SIGKILL the emulator's whole process group, no goodbye to clients."""
    assert pid is not None, "the device is not running"
    process = psutil.Process(pid)
    os.killpg(pid, signal.SIGKILL)
    process.wait(timeout=10)  # gone (and reaped: the test process started it) before anyone restarts it


def _push_in_thread(entry: inventory.DeviceEntry, artifact: Path, **kwargs: Any
                    ) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            with inventory.connect(entry, timeout_s=3.0) as device:
                outcome["result"] = push_artifact(device, artifact, entry.resolved_workdir(), **kwargs)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for_partial_copy(artifacts_dir: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for tmp in _tmp_dirs(artifacts_dir):
            if any(p.stat().st_size > 0 for p in tmp.rglob("*.bin")):
                return
        time.sleep(0.01)
    pytest.fail(f"no partial copy appeared under {artifacts_dir} within {timeout_s}s")


def test_device_killed_mid_push_leaves_nothing_at_final_path(
    emulated: EmulatorStatus, emulators: ModuleType, tmp_path: Path
) -> None:
    artifact = _artifact(tmp_path / "art", size_bytes=40_000_000, n_files=2)
    sha = digest_artifact(artifact).sha256
    entry = inventory.get(emulated.name)
    artifacts_dir = _host_path(emulated, f"{entry.resolved_workdir()}/artifacts")
    thread, outcome = _push_in_thread(entry, artifact, retries=0)
    _wait_for_partial_copy(artifacts_dir)
    _kill_device(emulated.pid)
    thread.join(60)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), PushError), outcome
    assert not (artifacts_dir / sha).exists()

    restarted = emulators.start(emulated.kind, emulated.name)
    assert restarted.port == emulated.port
    with inventory.connect(inventory.get(emulated.name)) as device:
        result = push_artifact(device, artifact, entry.resolved_workdir())
    assert not result.skipped
    assert _same_tree(artifact, artifacts_dir / sha)
    assert not _tmp_dirs(artifacts_dir)


def test_push_retries_with_backoff_across_a_device_restart(emulators: ModuleType, tmp_path: Path) -> None:
    st = emulators.start("board", "flaky-board")
    artifact = _artifact(tmp_path / "art", size_bytes=40_000_000, n_files=2)
    entry = inventory.get(st.name)
    artifacts_dir = _host_path(st, f"{entry.resolved_workdir()}/artifacts")
    thread, outcome = _push_in_thread(entry, artifact, retries=5, backoff_s=0.5,
                                      reopen=lambda: inventory.connect(entry, timeout_s=3.0))
    _wait_for_partial_copy(artifacts_dir)
    _kill_device(st.pid)
    emulators.start("board", st.name)
    thread.join(120)
    result = outcome.get("result")
    assert isinstance(result, PushResult), outcome
    assert result.attempts >= 2 and not result.skipped
    assert _same_tree(artifact, artifacts_dir / result.sha256)
    assert not _tmp_dirs(artifacts_dir)


# -- full disk ------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_fs() -> Iterator[Callable[[Path, str], Path]]:
    """Mount a small tmpfs (root only) and unmount it afterwards; fails loudly when mount is refused."""
    mounted: list[Path] = []

    def mount(path: Path, options: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(f"the full-disk test needs to mount a tmpfs (root): {proc.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_full_disk_on_the_device_is_a_clear_error_before_copying(
    emulators: ModuleType, tiny_fs: Callable[[Path, str], Path], edgekit_home: Path, tmp_path: Path
) -> None:
    """The board's workdir really is a 1 MB filesystem: its df says so and the push refuses up front."""
    workdir_on_host = edgekit_home / "emulators" / "small-board" / "rootfs" / "home" / "edgekit"
    tiny_fs(workdir_on_host, "size=1m")
    st = emulators.start("board", "small-board")
    artifact = _artifact(tmp_path / "art", size_bytes=2_000_000, n_files=1)
    entry = inventory.get(st.name)
    with inventory.connect(entry) as device, pytest.raises(InsufficientSpace) as exc:
        push_artifact(device, artifact, entry.resolved_workdir())
    message = str(exc.value)
    assert message.startswith(
        "push to device 'small-board': not enough free space in /home/edgekit/artifacts"
    )
    assert "needs 2.0 MB" in message and exc.value.free_bytes is not None
    assert exc.value.free_bytes < 1_100_000
    assert not _tmp_dirs(workdir_on_host / "artifacts")


def test_write_that_runs_out_of_space_on_the_phone_is_a_clear_error(
    emulators: ModuleType, tiny_fs: Callable[[Path, str], Path], edgekit_home: Path, tmp_path: Path
) -> None:
    """Plenty of bytes free but only a few inodes: df passes, a later write fails with ENOSPC."""
    workdir_on_host = edgekit_home / "emulators" / "small-phone" / "data" / "local" / "tmp" / "edgekit"
    tiny_fs(workdir_on_host, "size=16m,nr_inodes=6")
    st = emulators.start("phone", "small-phone")
    artifact = _artifact(tmp_path / "art", size_bytes=10_000, n_files=6)
    entry = inventory.get(st.name)
    with inventory.connect(entry) as device, pytest.raises(InsufficientSpace) as exc:
        push_artifact(device, artifact, entry.resolved_workdir())
    message = str(exc.value)
    assert message.startswith("push to device 'small-phone': ran out of space in "
                              "/data/local/tmp/edgekit/artifacts writing weights/part")
    sha = digest_artifact(artifact).sha256
    assert not (workdir_on_host / "artifacts" / sha).exists()
    assert not _tmp_dirs(workdir_on_host / "artifacts")
