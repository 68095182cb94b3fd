"""The emulated phone against the stock adb client and server (and a raw old-protocol peer)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.emulator._adb_auth import ADB_AUTH_SIGNATURE, sign_token
from tests.emulator._adb_peer import A_VERSION_OLD, RawPeer, frame, load_key
from tests.fixtures.phone import Phone, PhoneFactory


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_shell_echo(phone: Phone) -> None:
    out = phone.adb("shell", "echo", "hi")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"hi\n"


def test_exit_code_and_stderr_are_separate(phone: Phone) -> None:
    out = phone.adb("shell", "echo to-out; echo to-err >&2; exit 3")
    assert out.returncode == 3
    assert out.stdout == b"to-out\n"
    assert out.stderr == b"to-err\n"


def test_stdin_reaches_the_command(phone: Phone) -> None:
    out = phone.adb("shell", "cat", stdin=b"line one\nline two\n")
    assert out.stdout == b"line one\nline two\n"


@pytest.mark.parametrize("size_bytes", [1024, 50 * 1024 * 1024], ids=["1KB", "50MB"])
def test_push_pull_round_trip(phone: Phone, tmp_path: Path, size_bytes: int) -> None:
    src = tmp_path / "src.bin"
    with src.open("wb") as f:
        f.write(os.urandom(size_bytes))
    assert phone.adb("push", str(src), "/data/local/tmp/dir/a.bin").returncode == 0
    seen = phone.adb("shell", "sha256sum /data/local/tmp/dir/a.bin").stdout.split()[0].decode()
    assert seen == _sha256(src)
    back = tmp_path / "back.bin"
    assert phone.adb("pull", "/data/local/tmp/dir/a.bin", str(back)).returncode == 0
    assert _sha256(back) == _sha256(src)


def test_pull_of_missing_file_fails(phone: Phone, tmp_path: Path) -> None:
    out = phone.adb("pull", "/data/local/tmp/absent", str(tmp_path / "x"))
    assert out.returncode != 0
    assert not (tmp_path / "x").exists()


def test_writes_outside_writable_roots_fail(phone: Phone, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    assert phone.adb("push", str(src), "/system/bin/evil").returncode != 0
    assert phone.adb("push", str(src), "/data/../../etc/evil").returncode != 0
    # a symlink made on the device must not lead sync out of the device
    assert phone.adb("shell", "ln -s / /data/local/tmp/escape").returncode == 0
    out = phone.adb("push", str(src), "/data/local/tmp/escape/tmp/evil")
    assert out.returncode != 0
    assert b"Permission denied" in out.stderr + out.stdout


def test_write_failure_during_push_is_reported(phone_factory: PhoneFactory, tmp_path: Path) -> None:
    small_disk = phone_factory("small", file_size_limit_bytes=4 * 1024 * 1024)
    src = tmp_path / "too-big.bin"
    src.write_bytes(os.urandom(6 * 1024 * 1024))
    out = small_disk.adb("push", str(src), "/data/local/tmp/too-big.bin")
    assert out.returncode != 0
    assert b"write failed" in out.stderr + out.stdout
    leftovers = small_disk.adb("shell", "ls -a /data/local/tmp").stdout.split()
    assert b"too-big.bin" not in leftovers and not any(b"sync" in name for name in leftovers)


def test_exec_out_is_binary_clean(phone: Phone) -> None:
    out = phone.adb("exec-out", "printf '\\000\\001\\377'")
    assert out.stdout == b"\x00\x01\xff"


def test_a_native_binary_runs_and_there_is_no_python(phone: Phone, tmp_path: Path) -> None:
    source = tmp_path / "hello.c"
    source.write_text('#include <stdio.h>\nint main(void) { puts("native hello"); return 0; }\n')
    subprocess.run(["g++", "-x", "c", "-O1", "-o", str(tmp_path / "hello"), str(source)], check=True)
    assert phone.adb("push", str(tmp_path / "hello"), "/data/local/tmp/hello").returncode == 0
    assert phone.adb("shell", "/data/local/tmp/hello").stdout == b"native hello\n"
    # A phone has no Python: not on PATH, not at the host's paths, not even the standard library.
    for probe in ("which python3 python", f"{sys.executable} -c 1", "/usr/bin/python3 -c 1",
                  "ls /usr/lib/python3* /usr/bin"):
        out = phone.adb("shell", probe)
        assert out.returncode != 0 or not out.stdout.strip(), f"{probe}: {out.stdout!r}"
    assert phone.adb("shell", "ls /system/bin/sh /system/bin/ps /system/bin/sha256sum").returncode == 0
    assert phone.adb("shell", "touch /usr/lib/edgekit-probe").returncode != 0  # host dirs are read-only


def test_getprop(phone: Phone) -> None:
    assert phone.adb("shell", "getprop ro.product.model").stdout.strip() == b"EKP-1 Emulated Phone"
    listing = phone.adb("shell", "getprop").stdout.decode()
    assert "[ro.build.version.sdk]: [34]" in listing
    assert phone.adb("shell", "getprop no.such.prop fallback").stdout.strip() == b"fallback"


def test_two_phones_are_isolated(phone_factory: PhoneFactory, tmp_path: Path) -> None:
    a, b = phone_factory("alpha"), phone_factory("beta")
    src = tmp_path / "only-on-alpha"
    src.write_bytes(b"secret")
    assert a.adb("push", str(src), "/data/local/tmp/only-on-alpha").returncode == 0
    assert a.adb("shell", "cat /data/local/tmp/only-on-alpha").stdout == b"secret"
    assert b.adb("shell", "cat /data/local/tmp/only-on-alpha").returncode != 0
    # each phone has its own PID namespace: a sleeper on alpha is invisible on beta
    sleeper = subprocess.Popen(["adb", "-P", str(a.server.port), "-s", a.serial, "shell", "sleep 7 # marker"],
                               env=a.server.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while b"sleep 7" not in a.adb("shell", "ps -ef").stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b"sleep 7" in a.adb("shell", "ps -ef").stdout
        assert b"sleep 7" not in b.adb("shell", "ps -ef").stdout
    finally:
        sleeper.kill()
        sleeper.wait()
    assert a.adb("shell", "getprop ro.serialno").stdout != b.adb("shell", "getprop ro.serialno").stdout


def test_identity_and_files_survive_restart(phone: Phone, tmp_path: Path) -> None:
    serial_before = phone.adb("shell", "getprop ro.serialno").stdout.strip()
    assert phone.adb("shell", "echo kept > /data/local/tmp/kept.txt").returncode == 0
    phone.restart()
    phone.wait_online()
    assert phone.adb("shell", "getprop ro.serialno").stdout.strip() == serial_before
    assert phone.adb("shell", "cat /data/local/tmp/kept.txt").stdout == b"kept\n"


def _battery(phone: Phone) -> tuple[int, int]:
    base = phone.state_dir / "sys/class/power_supply/battery"
    return int((base / "voltage_now").read_text()), int((base / "current_now").read_text())


def _truth(phone: Phone) -> float:
    return float(json.loads((phone.state_dir / "energy.json").read_text())["energy_j"])


def test_battery_files_respond_to_load_and_match_ground_truth(phone: Phone) -> None:
    listing = phone.adb("shell", "cat /sys/class/power_supply/battery/status "
                        "/sys/class/power_supply/battery/capacity /sys/class/thermal/thermal_zone0/temp "
                        "/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq").stdout.split()
    assert listing[0] == b"Discharging" and 0 < int(listing[1]) <= 100 and len(listing) == 4
    time.sleep(0.3)
    _, idle_ua = _battery(phone)
    assert idle_ua < 0  # negative while discharging
    busy = subprocess.Popen(
        ["adb", "-P", str(phone.server.port), "-s", phone.serial, "shell",
         "timeout 1.5 sh -c 'while :; do :; done'"],
        env=phone.server.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    # Sample the sensor files like an on-device agent (every 20 ms) and integrate V * |I|.
    energy_start_j, estimate_j, peak_ua = _truth(phone), 0.0, 0
    t_prev = time.monotonic()
    v_uv, i_ua = _battery(phone)
    t_end = t_prev + 2.5
    while (now := time.monotonic()) < t_end:
        estimate_j += (v_uv / 1e6) * (abs(i_ua) / 1e6) * (now - t_prev)
        t_prev = now
        v_uv, i_ua = _battery(phone)
        peak_ua = max(peak_ua, abs(i_ua))
        time.sleep(0.02)
    truth_j = _truth(phone) - energy_start_j
    busy.wait(timeout=10)
    assert peak_ua > abs(idle_ua) * 1.5, (idle_ua, peak_ua)
    assert truth_j > 0
    print(f"sampled {estimate_j:.3f} J vs ground truth {truth_j:.3f} J")
    assert abs(estimate_j - truth_j) / truth_j < 0.03, (estimate_j, truth_j)


# -- a raw peer speaking the oldest protocol version (checksums on) --------------------------------
def test_old_protocol_peer_gets_checksums(phone: Phone) -> None:
    key = load_key(phone.server.home / ".android" / "adbkey")
    with RawPeer(phone.process.port, version=A_VERSION_OLD) as peer:
        token = peer.hello()
        assert token.command == b"AUTH" and token.check == sum(token.data)
        peer.send(frame(b"AUTH", ADB_AUTH_SIGNATURE, 0, sign_token(key, token.data)))
        reply = peer.read()
        assert reply is not None
        assert reply.command == b"CNXN" and reply.arg0 == A_VERSION_OLD
        assert reply.data.startswith(b"device::") and b"shell_v2" in reply.data
        assert reply.check == sum(reply.data)
        local_id = peer.open(7, b"shell:echo old-peer")
        assert local_id
        output = b""
        while (message := peer.read()) is not None and message.command != b"CLSE":
            assert message.command == b"WRTE" and message.check == sum(message.data)
            output += message.data
            peer.send(frame(b"OKAY", 7, local_id))
        assert output == b"old-peer\n"
