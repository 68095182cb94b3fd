"""AdbDevice against a real adb server and the emulated phone."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from edgekit.devices import adb_server
from edgekit.devices.adb import AdbDevice
from edgekit.devices.base import DeviceUnreachable, TransportError
from tests.fixtures.phone import AdbServer, Phone, free_port

AWKWARD_NAMES = ["with space.txt", "quote's \"double\".txt", "$(touch pwned).txt", "semi;colon;rm -rf x.txt"]


@pytest.fixture
def device(phone: Phone) -> AdbDevice:
    return AdbDevice(phone.serial, server_port=phone.server.port, online_timeout_s=20)


def test_shell_v1_fallback(phone: Phone) -> None:
    device = AdbDevice(phone.serial, server_port=phone.server.port, use_shell_v2=False)
    result = device.run(["sh", "-c", "echo out; echo err >&2; exit 4"])
    assert result.exit_code == 4 and result.stdout == b"out\nerr\n" and result.stderr == b""


def test_argv_reaches_the_device_verbatim(device: AdbDevice) -> None:
    result = device.run(["printf", "%s\\n", *AWKWARD_NAMES])
    assert result.text().splitlines() == AWKWARD_NAMES


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_push_pull_awkward_names(device: AdbDevice, tmp_path: Path, name: str) -> None:
    src = tmp_path / name
    src.write_bytes(name.encode() * 100)
    remote = f"/data/local/tmp/edgekit/{name}"
    device.push(str(src), remote)
    assert device.run(["cat", remote]).stdout == src.read_bytes()
    listing = device.run(["ls", "/data/local/tmp/edgekit"], check=True).text().splitlines()
    assert name in listing and "pwned" not in listing
    back = tmp_path / "back"
    device.pull(remote, str(back))
    assert back.read_bytes() == src.read_bytes()


def test_push_refused_by_device_raises(device: AdbDevice, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises(TransportError, match="Read-only file system"):
        device.push(str(src), "/system/f")


def test_info(device: AdbDevice) -> None:
    info = device.info()
    assert info.reachable and info.transport == "adb"
    assert info.model == "EKP-1 Emulated Phone"
    assert info.os_version == "Android 14 (SDK 34)"
    assert info.abi == "x86_64" and info.cores == os.cpu_count()
    assert info.ram_bytes == 8 * 1024**3
    assert info.battery_pct is not None and 0 < info.battery_pct <= 100 and info.charging is False
    assert info.temperature_c is not None and 20 < info.temperature_c < 90
    assert info.free_bytes is not None and info.free_bytes > 0
    assert info.soc


def test_phone_killed_mid_push_then_retry_after_restart(device: AdbDevice, phone: Phone,
                                                        tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(40 * 1024 * 1024))
    proc = phone.process.proc
    assert proc is not None

    def crash_at_4mb(done: int, total: int) -> None:
        if done >= 4 * 1024 * 1024 and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    with pytest.raises(DeviceUnreachable, match=r"push .*big\.bin.* failed: ") as caught:
        device.push(str(src), "/data/local/tmp/edgekit/big.bin", progress=crash_at_4mb)
    print(caught.value)
    phone.process.start()  # same state dir, same port: the adb server reconnects by itself
    device.push(str(src), "/data/local/tmp/edgekit/big.bin")
    digest = device.run(["sha256sum", "/data/local/tmp/edgekit/big.bin"], check=True).text().split()[0]
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()


def test_unreachable_address_raises(phone: Phone) -> None:
    with pytest.raises(DeviceUnreachable, match=r"127\.0\.0\.1"):
        AdbDevice(f"127.0.0.1:{free_port()}", server_port=phone.server.port, online_timeout_s=1)


def test_server_is_started_when_not_running(phone: Phone, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    (tmp_path / ".android").mkdir()  # the same user's key: the phone only serves keys it trusts
    for key_file in ("adbkey", "adbkey.pub"):
        shutil.copy(phone.server.home / ".android" / key_file, tmp_path / ".android" / key_file)
    port = free_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    try:
        device = AdbDevice(phone.serial, online_timeout_s=20)  # port from the environment
        assert device.server_port == port
        assert device.run(["echo", "fresh server"]).stdout == b"fresh server\n"
    finally:
        AdbServer(port=port, home=tmp_path).adb("kill-server", timeout_s=30)


def test_adbutils_api_accepts_the_phone(phone: Phone, tmp_path: Path) -> None:
    import adbutils

    dev = adbutils.AdbClient(host="127.0.0.1", port=phone.server.port).device(phone.serial)
    assert dev.shell("echo hi") == "hi"
    v2 = dev.shell2("echo o; echo e >&2; exit 9", v2=True)
    assert (v2.returncode, v2.stdout, v2.stderr) == (9, "o\n", "e\n")
    assert dev.prop.model == "EKP-1 Emulated Phone"
    dev.sync.push(b"payload", "/data/local/tmp/adbutils.txt")
    assert dev.sync.read_bytes("/data/local/tmp/adbutils.txt") == b"payload"
    assert "adbutils.txt" in [entry.path for entry in dev.sync.list("/data/local/tmp")]
    assert dev.sync.stat("/data/local/tmp/nope").mode == 0


def _restore_server(server: AdbServer) -> None:
    """Put the session's own server (its HOME, its key) back on its port for the tests after this one."""
    server.adb("kill-server", timeout_s=30)
    server.adb("start-server", timeout_s=30, check=True)


def test_a_restarted_server_comes_back_on_the_devices_port(device: AdbDevice, phone: Phone) -> None:
    # adbutils' own fallback starts `adb start-server` on the default port (5037) when the server does not
    # answer, whatever port the device uses; the device must bring its server back on its own port instead.
    default_was_up = adb_server.server_running(adb_server.DEFAULT_PORT)
    phone.server.adb("kill-server", timeout_s=30)
    try:
        assert device.run(["echo", "back"], timeout_s=30).stdout == b"back\n"
        assert adb_server.server_running(device.server_port)
        if not default_was_up:
            assert not adb_server.server_running(adb_server.DEFAULT_PORT), "a server was started on 5037"
    finally:
        if not default_was_up and adb_server.server_running(adb_server.DEFAULT_PORT):
            subprocess.run(["adb", "-P", str(adb_server.DEFAULT_PORT), "kill-server"], capture_output=True,
                           timeout=30, check=False)
        _restore_server(phone.server)
