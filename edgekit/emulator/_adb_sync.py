"""The ``sync:`` service of the emulated phone's adb daemon (what ``adb push/pull/ls`` speak).

Requests are ``id (4 ASCII bytes) + length (u32 LE) + path``. Served: STAT/LIST (v1, 32-bit fields,
lstat), STA2/LST2/LIS2 (v2: errno plus 64-bit fields), SEND (``path,mode``, then DATA chunks of at most
64 KiB and DONE with the mtime; answered OKAY or FAIL+message), RECV (DATA chunks, DONE or FAIL) and
QUIT. File names are bytes from the wire used as paths directly: they never pass through a shell.
A push lands in a temporary file that is renamed into place on DONE, so a failed or cut push never
leaves a half file under the requested name; a write error (a full disk) is answered with FAIL.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import tempfile
from pathlib import Path

from edgekit.emulator._devicefs import DeviceFs
from edgekit.emulator.adbd import Stream

SYNC_DATA_MAX_BYTES = 64 * 1024
SEND_TMP_PREFIX = ".edgekit-sync-"  # a push in progress; the phone removes leftovers at start
_REQUEST = struct.Struct("<4sI")
_STAT_V1 = struct.Struct("<4sIII")
_DENT_V1 = struct.Struct("<4sIIII")
_STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
_DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")
_U32 = struct.Struct("<I")
_MAX_PATH_BYTES = 4096


class _Out:
    """Batches small sync replies into large WRTEs (a pull is many 64 KiB DATA packets)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    def put(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= self.stream.conn.max_payload_bytes:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.stream.send(bytes(self.buf))
            self.buf.clear()


def run_sync(stream: Stream, fs: DeviceFs) -> None:
    out = _Out(stream)
    while True:
        out.flush()
        request_id, length = _REQUEST.unpack(stream.read_exact(_REQUEST.size))
        if request_id == b"QUIT":
            return
        if length > _MAX_PATH_BYTES:
            _fail(out, "path too long")
            return
        path = os.fsdecode(stream.read_exact(length))
        if request_id == b"STAT":
            out.put(_stat_v1(fs, path))
        elif request_id in (b"STA2", b"LST2"):
            out.put(_stat_v2(fs, path, follow=request_id == b"STA2"))
        elif request_id in (b"LIST", b"LIS2"):
            _list(out, fs, path, v2=request_id == b"LIS2")
        elif request_id == b"SEND":
            _send(stream, out, fs, path)
        elif request_id == b"RECV":
            _recv(out, fs, path)
        else:
            _fail(out, f"unknown sync request {request_id!r}")
            out.flush()
            return


def _fail(out: _Out, message: str) -> None:
    data = message.encode()
    out.put(b"FAIL" + _U32.pack(len(data)) + data)


def _lstat(fs: DeviceFs, path: str, *, follow: bool = False) -> os.stat_result:
    try:
        host = fs.resolve(path)
    except IsADirectoryError:  # "/" and other parents of the mapped roots
        return os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, 4096, 0, 0, 0))
    return os.stat(host) if follow else os.lstat(host)


def _stat_v1(fs: DeviceFs, path: str) -> bytes:
    try:
        st = _lstat(fs, path)
    except OSError:
        return _STAT_V1.pack(b"STAT", 0, 0, 0)  # the v1 way of saying "no such file"
    return _STAT_V1.pack(b"STAT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF)


def _v2_fields(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            int(st.st_atime), int(st.st_mtime), int(st.st_ctime))


def _stat_v2(fs: DeviceFs, path: str, *, follow: bool) -> bytes:
    request_id = b"STA2" if follow else b"LST2"
    try:
        st = _lstat(fs, path, follow=follow)
    except OSError as exc:
        return _STAT_V2.pack(request_id, exc.errno or errno.EIO, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return _STAT_V2.pack(request_id, 0, *_v2_fields(st))


def _list(out: _Out, fs: DeviceFs, path: str, *, v2: bool) -> None:
    entries: list[tuple[str, os.stat_result]] = []
    try:
        host = fs.resolve(path)
        with os.scandir(host) as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    entries.append((entry.name, entry.stat(follow_symlinks=False)))
    except IsADirectoryError:
        for name in fs.top_level():
            with contextlib.suppress(OSError):
                entries.append((name, _lstat(fs, "/" + name)))
    except OSError:
        pass  # an unreadable or missing directory lists as empty, as on the device
    for name, st in entries:
        raw = os.fsencode(name)
        if v2:
            out.put(_DENT_V2.pack(b"DNT2", 0, *_v2_fields(st), len(raw)) + raw)
        else:
            out.put(_DENT_V1.pack(b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF,
                                  int(st.st_mtime) & 0xFFFFFFFF, len(raw)) + raw)
    if v2:
        out.put(_DENT_V2.pack(b"DONE", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    else:
        out.put(_DENT_V1.pack(b"DONE", 0, 0, 0, 0))


def _send(stream: Stream, out: _Out, fs: DeviceFs, spec: str) -> None:
    path, _, mode_text = spec.rpartition(",")
    if not path or not mode_text.isdigit():
        path, mode = spec, stat.S_IFREG | 0o644
    else:
        mode = int(mode_text)
    error: str | None = None
    tmp_fd, tmp_path = -1, ""
    target: Path | None = None
    try:
        target = fs.resolve(path, for_write=True)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_fd, tmp_path = tempfile.mkstemp(dir=target.parent, prefix=SEND_TMP_PREFIX)
    except OSError as exc:
        error = f"{path}: {exc.strerror or exc}"
    payload = bytearray()  # only for symlinks, whose "data" is the link target
    mtime = 0
    try:
        while True:
            request_id, length = _REQUEST.unpack(stream.read_exact(_REQUEST.size))
            if request_id == b"DONE":
                mtime = length
                break
            if request_id != b"DATA" or length > SYNC_DATA_MAX_BYTES:
                error = error or f"unexpected {request_id!r} while receiving {path}"
                break
            data = stream.read_exact(length)
            if error is not None:
                continue  # keep reading to DONE so the client hears FAIL, as adbd does
            try:
                if stat.S_ISLNK(mode):
                    payload += data
                else:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(tmp_fd, view) :]
            except OSError as exc:
                error = f"{path}: write failed: {exc.strerror or exc}"
        if error is None and target is not None:
            error = _finish_send(tmp_fd, tmp_path, target, mode, mtime, bytes(payload), path)
            tmp_fd = -1
    finally:
        if tmp_fd >= 0:
            os.close(tmp_fd)
        if tmp_path and (error is not None or os.path.exists(tmp_path)):
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
    if error is None:
        out.put(b"OKAY" + _U32.pack(0))
    else:
        _fail(out, error)


def _finish_send(tmp_fd: int, tmp_path: str, target: Path, mode: int, mtime: int,
                 link_target: bytes, path: str) -> str | None:
    """Close the temporary file (always) and move it, or a symlink, into place."""
    try:
        try:
            if not stat.S_ISLNK(mode):
                os.fchmod(tmp_fd, stat.S_IMODE(mode) or 0o644)
        finally:
            os.close(tmp_fd)
        if stat.S_ISLNK(mode):
            if target.is_symlink() or target.exists():
                target.unlink()
            os.symlink(os.fsdecode(link_target), target)
            return None
        if mtime:
            os.utime(tmp_path, (mtime, mtime))
        os.replace(tmp_path, target)
        return None
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"


def _recv(out: _Out, fs: DeviceFs, path: str) -> None:
    try:
        host = fs.resolve(path)
        with open(host, "rb") as f:
            while chunk := f.read(SYNC_DATA_MAX_BYTES):
                out.put(b"DATA" + _U32.pack(len(chunk)) + chunk)
    except OSError as exc:
        _fail(out, f"{path}: {exc.strerror or exc}")
        return
    out.put(b"DONE" + _U32.pack(0))
