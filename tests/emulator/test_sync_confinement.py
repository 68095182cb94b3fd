"""The phone's sync service stays inside the phone: symlinks made on the device, or swapped in while a
request is under way, never lead it to the host's files."""

from __future__ import annotations

import os
import socket
import stat
import struct
import time
from pathlib import Path

import pytest

from edgekit.emulator import _devicefs
from edgekit.emulator._devicefs import DeviceFs
from tests.fixtures.phone import Phone

_U32 = struct.Struct("<I")


def _exact(sock: socket.socket, n_bytes: int) -> bytes:
    buf = b""
    while len(buf) < n_bytes:
        chunk = sock.recv(n_bytes - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return buf


def _sync_session(phone: Phone) -> socket.socket:
    """A raw ``sync:`` stream to the phone through the stock adb server (its smart-socket protocol)."""
    sock = socket.create_connection(("127.0.0.1", phone.server.port), timeout=20)
    for request in (f"host:transport:{phone.serial}", "sync:"):
        sock.sendall(b"%04x%s" % (len(request), request.encode()))
        status = _exact(sock, 4)
        assert status == b"OKAY", sock.recv(200)
    return sock


def _open_under(pid: int, directory: Path) -> bool:
    """Whether process ``pid`` holds a descriptor on ``directory`` or on something inside it."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target == str(directory) or target.startswith(f"{directory}/"):
            return True
    return False


def test_a_push_cannot_follow_a_directory_swapped_for_a_symlink(phone: Phone, tmp_path: Path) -> None:
    outside = tmp_path / "host-dir"  # a host directory the phone must never write to
    outside.mkdir()
    (outside / "secret").write_bytes(b"host secret")
    assert phone.adb("shell", "mkdir -p /data/local/tmp/d").returncode == 0
    pushed_dir = phone.state_dir / "data" / "local" / "tmp" / "d"
    assert phone.process.proc is not None
    with _sync_session(phone) as sock:
        spec = b"/data/local/tmp/d/evil," + str(stat.S_IFLNK | 0o777).encode()
        link_target = b"pushed-link"
        sock.sendall(b"SEND" + _U32.pack(len(spec)) + spec + b"DATA" + _U32.pack(len(link_target)) + link_target)
        # The phone has taken up the push once it holds its directory (or a file in it) open: then the
        # device swaps that directory for a symlink to the host directory, before the push completes.
        deadline = time.monotonic() + 10
        while not _open_under(phone.process.proc.pid, pushed_dir):
            assert time.monotonic() < deadline, "the phone never took up the push"
            time.sleep(0.01)
        swap = f"mv /data/local/tmp/d /data/local/tmp/d.real && ln -s {outside} /data/local/tmp/d"
        assert phone.adb("shell", swap).returncode == 0
        sock.sendall(b"DONE" + _U32.pack(1_700_000_000))
        reply = _exact(sock, 8)
        if reply[:4] == b"FAIL":
            _exact(sock, _U32.unpack(reply[4:])[0])
        sock.sendall(b"QUIT" + _U32.pack(0))
    assert sorted(os.listdir(outside)) == ["secret"], "the push reached the host directory"
    assert (outside / "secret").read_bytes() == b"host secret"
    if reply[:4] == b"OKAY":  # it landed where it was checked: the directory now named d.real
        assert os.readlink(phone.state_dir / "data" / "local" / "tmp" / "d.real" / "evil") == "pushed-link"


def test_symlinks_out_of_the_device_are_not_followed(phone: Phone, tmp_path: Path) -> None:
    outside = tmp_path / "host-dir"
    outside.mkdir()
    (outside / "secret").write_bytes(b"host secret")
    assert phone.adb("shell", f"ln -s {outside}/secret /data/local/tmp/leak && "
                              f"ln -s {outside} /data/local/tmp/leakdir").returncode == 0
    for device_path in ("/data/local/tmp/leak", "/data/local/tmp/leakdir/secret"):
        out = phone.adb("pull", device_path, str(tmp_path / "pulled"))
        assert out.returncode != 0, device_path
        assert not (tmp_path / "pulled").exists()
    listing = phone.adb("ls", "/data/local/tmp/leakdir").stdout
    assert b"secret" not in listing
    src = tmp_path / "f"
    src.write_bytes(b"x")
    out = phone.adb("push", str(src), "/data/local/tmp/leakdir/new")
    assert out.returncode != 0 and b"Permission denied" in out.stdout + out.stderr
    assert sorted(os.listdir(outside)) == ["secret"]


def test_nul_bytes_in_names_fail_and_the_session_goes_on(phone: Phone) -> None:
    with _sync_session(phone) as sock:
        spec = b"/data/local/tmp/nul-link," + str(stat.S_IFLNK | 0o777).encode()
        sock.sendall(b"SEND" + _U32.pack(len(spec)) + spec + b"DATA" + _U32.pack(3) + b"a\0b"
                     + b"DONE" + _U32.pack(0))
        reply = _exact(sock, 8)
        assert reply[:4] == b"FAIL", reply
        _exact(sock, _U32.unpack(reply[4:])[0])
        path = b"/data/local/tmp\0/x"
        sock.sendall(b"STAT" + _U32.pack(len(path)) + path)
        assert _exact(sock, 16) == b"STAT" + bytes(12)  # "no such file", and still answering
        sock.sendall(b"QUIT" + _U32.pack(0))
    assert not (phone.state_dir / "data" / "local" / "tmp" / "nul-link").is_symlink()


@pytest.fixture(params=["openat2", "walk"])
def device_fs(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DeviceFs:
    """The same confinement with openat2(2) and with the O_NOFOLLOW walk kept for older kernels."""
    if request.param == "walk":
        monkeypatch.setattr(_devicefs, "_openat2", None)
    elif _devicefs._openat2 is None:
        pytest.skip("this kernel (or its seccomp filter) has no openat2")
    state = tmp_path / "state"
    (state / "data" / "a" / "b").mkdir(parents=True)
    (state / "data" / "a" / "b" / "f").write_bytes(b"device file")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"host secret")
    (state / "data" / "link").symlink_to(outside)
    (state / "data" / "a" / "flink").symlink_to(outside / "secret")
    (state / "data" / "a" / "inner").symlink_to("b")  # stays on the device, and still is not followed
    return DeviceFs(state)


def test_device_fs_reaches_files_and_refuses_every_link(device_fs: DeviceFs, tmp_path: Path) -> None:
    fd = device_fs.open("/data/a/b/f")
    try:
        assert os.read(fd, 100) == b"device file"
    finally:
        os.close(fd)
    for path in ("/data/link/secret", "/data/a/flink", "/data/a/inner/f"):
        with pytest.raises(PermissionError):
            os.close(device_fs.open(path))
    with pytest.raises(OSError):  # not "/data/a/b/f", which a C string would make of it
        os.close(device_fs.open("/data/a/b/f\0tail"))
    with pytest.raises(PermissionError):
        device_fs.lstat("/data/link/secret")
    assert stat.S_ISLNK(device_fs.lstat("/data/a/flink").st_mode)  # the link itself, not its target
    with pytest.raises(PermissionError):
        device_fs.open_parent("/data/link/sub/new", for_write=True, create=True)
    assert not (tmp_path / "outside" / "sub").exists()
    with pytest.raises(OSError):
        device_fs.open_parent("/system/x", for_write=True)  # read-only root
    dir_fd, name = device_fs.open_parent("/data/new/deeper/file", for_write=True, create=True)
    os.close(dir_fd)
    assert name == "file" and (tmp_path / "state" / "data" / "new" / "deeper").is_dir()
