"""The device lock is taken by every command that uses a device, not only by the farm: a manual
``edgekit push`` or ``edgekit profile`` while another edgekit process holds the device is refused with
one line naming the holder (exit 2), and two pushes of one artifact never delete each other's files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit.devices.local import LocalDevice
from edgekit.devices.push import PushResult, digest_artifact, push_artifact
from edgekit.errors import DeviceBusy

_HOLDER = textwrap.dedent(
    """
    import sys
    from edgekit.devices.lock import device_lock
    with device_lock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.readline()
    """
)


@pytest.fixture
def held_local() -> Iterator[int]:
    """Another edgekit process holding the ``local`` device (as a running farm does); its pid."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, "local"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)


def _edgekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "COLUMNS": "250"}, stdin=subprocess.DEVNULL)


def _artifact(path: Path) -> Path:
    path.mkdir()
    (path / "a.bin").write_bytes(os.urandom(3_000_000))
    (path / "b.bin").write_bytes(os.urandom(1_000_000))
    return path


def test_a_manual_push_while_another_process_holds_the_device_is_refused(held_local: int, tmp_path: Path,
                                                                          edgekit_home: Path) -> None:
    artifact = _artifact(tmp_path / "art")
    refused = _edgekit("push", str(artifact), "--device", "local")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: device 'local' is busy (locked by pid {held_local}); waited 0s"]
    assert not list(edgekit_home.rglob(digest_artifact(artifact).sha256)), "nothing may reach the device"


def test_a_manual_profile_while_another_process_holds_the_device_is_refused(held_local: int,
                                                                             tmp_path: Path) -> None:
    from edgekit.profile.run import ProfileRequest, profile

    with pytest.raises(DeviceBusy, match=f"locked by pid {held_local}"):
        profile(ProfileRequest(tmp_path), "local")


def test_two_pushes_of_one_artifact_never_delete_each_others_files(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path / "art")
    workdir = str(tmp_path / "device")
    Path(workdir).mkdir()  # the local device runs its commands there
    first_device, second_device = LocalDevice("local", workdir=workdir), LocalDevice("local", workdir=workdir)
    second: dict[str, object] = {}

    def push_second() -> None:
        try:
            second["result"] = push_artifact(second_device, artifact, workdir)
        except Exception as exc:
            second["error"] = exc

    def in_the_middle_of_the_first(done: int, total: int) -> None:
        # The second push starts (and ends) while the first one is half-way through its copy.
        if not second and 0 < done < total:
            thread = threading.Thread(target=push_second)
            thread.start()
            thread.join(60)

    first = push_artifact(first_device, artifact, workdir, progress=in_the_middle_of_the_first)
    assert isinstance(first, PushResult) and not first.skipped
    assert isinstance(second.get("error"), DeviceBusy), second
    final = Path(workdir) / "artifacts" / first.sha256
    assert sorted(p.name for p in final.iterdir()) == ["a.bin", "b.bin"]
    assert [p.name for p in (Path(workdir) / "artifacts").iterdir()] == [first.sha256]
    # Once the first is done the device is free: the same push finds it there.
    assert push_artifact(second_device, artifact, workdir).skipped
