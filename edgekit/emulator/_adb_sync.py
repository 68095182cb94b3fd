"""The ``sync:`` service of the emulated phone's adb daemon (what ``adb push/pull/ls`` speak).

Requests are ``id (4 ASCII bytes) + length (u32 LE) + path``. Served: STAT/LIST (v1, 32-bit fields,
lstat), STA2/LST2/LIS2 (v2: errno plus 64-bit fields), SEND (``path,mode``, then DATA chunks of at most
64 KiB and DONE with the mtime; answered OKAY or FAIL+message), RECV (DATA chunks, DONE or FAIL) and
QUIT. File names are bytes from the wire used as paths directly: they never pass through a shell.
Every file is reached through ``DeviceFs`` as a descriptor under the phone's roots and then used only
through that descriptor (or its directory's), so a symlink the device swaps in cannot lead a request to
the host's files. A push lands in a temporary file beside its target, renamed into place on DONE, so a
failed or cut push never leaves a half file under the requested name; a write error (a full disk) is
answered with FAIL. Lengths from the wire are checked before anything is read: a path over 4 KiB, a
DATA chunk over 64 KiB or a symlink target over 4 KiB ends the request with FAIL.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import struct

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
    """Sync follows no links: ``follow`` (STA2) on a symlink is refused rather than followed."""
    st = fs.lstat(path)
    if follow and stat.S_ISLNK(st.st_mode):
        raise PermissionError(errno.EACCES, "Permission denied (sync does not follow links)", path)
    return st


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
        dir_fd = fs.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(dir_fd) as it:
                for entry in it:
                    with contextlib.suppress(OSError):
                        entries.append((entry.name, entry.stat(follow_symlinks=False)))
        finally:
            os.close(dir_fd)
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


class _Upload:
    """Where a push goes: its directory (held open, so a swapped path cannot redirect it) and a temp file."""

    def __init__(self, fs: DeviceFs, path: str, mode: int) -> None:
        self.dir_fd, self.name = fs.open_parent(path, for_write=True, create=True)
        self.tmp_name, self.tmp_fd = "", -1
        try:
            if self.name == "." or _is_dir(self.dir_fd, self.name):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
            if not stat.S_ISLNK(mode):
                self.tmp_name = SEND_TMP_PREFIX + secrets.token_hex(8)
                self.tmp_fd = os.open(self.tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                      | os.O_CLOEXEC, 0o600, dir_fd=self.dir_fd)
        except BaseException:
            self.close()
            raise

    def finish(self, mode: int, mtime: int, link_target: bytes) -> None:
        """Move the temporary file (or a new symlink) into place, inside the directory held open."""
        if stat.S_ISLNK(mode):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name, dir_fd=self.dir_fd)
            os.symlink(os.fsdecode(link_target), self.name, dir_fd=self.dir_fd)
            return
        os.fchmod(self.tmp_fd, stat.S_IMODE(mode) or 0o644)
        if mtime:
            os.utime(self.tmp_fd, (mtime, mtime))
        os.close(self.tmp_fd)
        self.tmp_fd = -1
        os.replace(self.tmp_name, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        self.tmp_name = ""

    def close(self) -> None:
        """Release the descriptors and remove a temporary file that was not moved into place."""
        if self.tmp_fd >= 0:
            os.close(self.tmp_fd)
            self.tmp_fd = -1
        if self.tmp_name:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp_name, dir_fd=self.dir_fd)
            self.tmp_name = ""
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


def _is_dir(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _send(stream: Stream, out: _Out, fs: DeviceFs, spec: str) -> None:
    path, _, mode_text = spec.rpartition(",")
    if not path or not mode_text.isdigit():
        path, mode = spec, stat.S_IFREG | 0o644
    else:
        mode = int(mode_text)
    error: str | None = None
    upload: _Upload | None = None
    try:
        upload = _Upload(fs, path, mode)
    except OSError as exc:
        error = f"{path}: {exc.strerror or exc}"
    link_target = bytearray()  # only for symlinks, whose "data" is the link target
    mtime = 0
    try:
        while True:
            request_id, length = _REQUEST.unpack(stream.read_exact(_REQUEST.size))
            if request_id == b"DONE":
                mtime = length
                break
            if request_id != b"DATA" or length > SYNC_DATA_MAX_BYTES:
                error = error or f"unexpected {request_id!r} ({length} bytes, the limit is " \
                                 f"{SYNC_DATA_MAX_BYTES}) while receiving {path}"
                break
            data = stream.read_exact(length)
            if error is not None or upload is None:
                continue  # keep reading to DONE so the client hears FAIL, as adbd does
            if stat.S_ISLNK(mode):
                link_target += data
                if len(link_target) > _MAX_PATH_BYTES:
                    error = f"{path}: symlink target over {_MAX_PATH_BYTES} bytes"
                continue
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(upload.tmp_fd, view):]
            except OSError as exc:
                error = f"{path}: write failed: {exc.strerror or exc}"
        if error is None and upload is not None:
            try:
                upload.finish(mode, mtime, bytes(link_target))
            except OSError as exc:
                error = f"{path}: {exc.strerror or exc}"
            except ValueError:  # a NUL byte in a symlink target
                error = f"{path}: invalid symlink target"
    finally:
        if upload is not None:
            upload.close()
    if error is None:
        out.put(b"OKAY" + _U32.pack(0))
    else:
        _fail(out, error)


def _recv(out: _Out, fs: DeviceFs, path: str) -> None:
    try:
        fd = fs.open(path)
    except OSError as exc:
        _fail(out, f"{path}: {exc.strerror or exc}")
        return
    try:
        while chunk := os.read(fd, SYNC_DATA_MAX_BYTES):
            out.put(b"DATA" + _U32.pack(len(chunk)) + chunk)
    except OSError as exc:
        _fail(out, f"{path}: {exc.strerror or exc}")
        return
    finally:
        os.close(fd)
    out.put(b"DONE" + _U32.pack(0))
