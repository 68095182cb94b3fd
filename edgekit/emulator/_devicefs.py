"""Maps an emulated phone's device paths to files under its state directory, for file sync.

The sandbox binds the same directories at the same device paths, so a file pushed through sync is the
file shell commands see. Only the mapped roots exist for sync. The device controls everything under
them (a shell on the phone can make any symlink, or swap a directory for one at any moment), while the
sync service runs on the host: so a path is never checked and then opened again by name. Every file
is reached from a descriptor of its root, one component at a time, with symbolic links refused at
each step: ``openat2(2)`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` where the kernel has it, else
``openat`` with ``O_NOFOLLOW`` per component. The caller then works on descriptors (``dir_fd``), so a
swap after the open changes nothing. Sync follows no links, not even ones that stay on the device.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_SYS_OPENAT2 = 437  # one number on every architecture since Linux 5.6 (the unified syscall table)
_OPEN_HOW = struct.Struct("QQQ")  # flags, mode, resolve
_LINK_REFUSED = "Permission denied (a symbolic link on the path; sync does not follow links)"
# What a virtual directory ("/", "/storage": parents of the mapped roots) stats as.
VIRTUAL_DIR_STAT = os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, 4096, 0, 0, 0))


def _load_openat2() -> Any:
    """The raw ``syscall`` entry if this kernel (and any seccomp filter) lets openat2 through."""
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    probe = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = ctypes.create_string_buffer(_OPEN_HOW.pack(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_BENEATH),
                                          _OPEN_HOW.size)
        fd = syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_long(probe), ctypes.c_char_p(b"."), how,
                     ctypes.c_size_t(_OPEN_HOW.size))
    finally:
        os.close(probe)
    if fd < 0:
        return None
    os.close(fd)
    return syscall


_openat2 = _load_openat2()


def open_beneath(dir_fd: int, relative: str, flags: int, mode: int = 0o644) -> int:
    """Open ``relative`` under ``dir_fd`` without following any symlink or leaving ``dir_fd``.

    A symlink anywhere on the path raises EACCES; other errors are the kernel's (ENOENT, ENOTDIR...).
    """
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PermissionError(errno.EACCES, "Permission denied (leaves the device)", relative)
    flags |= os.O_CLOEXEC
    if _openat2 is not None:  # RESOLVE_NO_SYMLINKS covers the last component too (ELOOP)
        return _openat2_beneath(dir_fd, "/".join(parts) or ".", flags, mode)
    flags |= os.O_NOFOLLOW
    fd = os.dup(dir_fd)
    try:
        for part in parts[:-1]:
            next_fd = _step(fd, part, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW, 0)
            os.close(fd)
            fd = next_fd
        return _step(fd, parts[-1] if parts else ".", flags, mode)
    finally:
        os.close(fd)


def _step(fd: int, name: str, flags: int, mode: int) -> int:
    """Open ``name`` in directory ``fd``, refusing a symlink with EACCES (``fd`` stays open)."""
    try:
        return os.open(name, flags, mode, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(fd, name):
            raise PermissionError(errno.EACCES, _LINK_REFUSED, name) from None
        raise


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _openat2_beneath(dir_fd: int, relative: str, flags: int, mode: int) -> int:
    assert _openat2 is not None
    how = ctypes.create_string_buffer(
        _OPEN_HOW.pack(flags, mode if flags & os.O_CREAT else 0,
                       _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS), _OPEN_HOW.size)
    fd = _openat2(ctypes.c_long(_SYS_OPENAT2), ctypes.c_long(dir_fd), ctypes.c_char_p(os.fsencode(relative)),
                  how, ctypes.c_size_t(_OPEN_HOW.size))
    if fd >= 0:
        return int(fd)
    err = ctypes.get_errno()
    if err in (errno.ELOOP, errno.EXDEV):  # a symlink on the path, or a way out of the root
        raise PermissionError(errno.EACCES, _LINK_REFUSED, relative)
    raise OSError(err, os.strerror(err), relative)


@dataclass(frozen=True)
class _Root:
    device: str
    host: Path
    writable: bool


class DeviceFs:
    """Device paths to descriptors under the phone's roots (``/data``, ``/sdcard``, ``/system``, ``/sys``)."""

    def __init__(self, state_dir: Path) -> None:
        self._roots = [
            _Root("/data", state_dir / "data", True),
            _Root("/sdcard", state_dir / "sdcard", True),
            _Root("/system", state_dir / "system", False),
            _Root("/sys", state_dir / "sys", False),
        ]
        self._dirs = {"/", "/storage"}  # device directories that exist only as parents of roots

    def _locate(self, device_path: str, *, for_write: bool) -> tuple[_Root, str]:
        """The root holding ``device_path`` and the path below it; OSError (ENOENT, EROFS) as the device."""
        if not device_path.startswith("/"):
            raise OSError(errno.ENOENT, "path must be absolute", device_path)
        if "\0" in device_path:  # a C string would end there; refuse rather than guess which file
            raise OSError(errno.EINVAL, "Invalid argument (a NUL byte in the path)", device_path)
        path = posixpath.normpath(device_path)
        path = "/" + path.lstrip("/")  # normpath keeps a leading '//'
        for root in self._roots:
            if path == root.device or path.startswith(root.device + "/"):
                if for_write and not root.writable:
                    raise OSError(errno.EROFS, "Read-only file system", device_path)
                return root, path[len(root.device):].lstrip("/")
        if path in self._dirs:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", device_path)
        code = errno.EROFS if for_write else errno.ENOENT
        raise OSError(code, os.strerror(code), device_path)

    def _root_fd(self, root: _Root) -> int:
        return os.open(root.host, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def open(self, device_path: str, flags: int = os.O_RDONLY) -> int:
        """A descriptor for an existing file or directory (IsADirectoryError for "/" and "/storage")."""
        root, relative = self._locate(device_path, for_write=False)
        root_fd = self._root_fd(root)
        try:
            return open_beneath(root_fd, relative, flags)
        finally:
            os.close(root_fd)

    def lstat(self, device_path: str) -> os.stat_result:
        """``lstat`` of a device path, its parents reached without following links."""
        try:
            parent_fd, name = self.open_parent(device_path, for_write=False)
        except IsADirectoryError:
            return VIRTUAL_DIR_STAT
        try:
            return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        finally:
            os.close(parent_fd)

    def open_parent(self, device_path: str, *, for_write: bool, create: bool = False) -> tuple[int, str]:
        """(descriptor of the parent directory, final name), creating missing parents if ``create``.

        For a root itself the name is "." and the descriptor is the root's.
        """
        root, relative = self._locate(device_path, for_write=for_write)
        parts = [p for p in relative.split("/") if p]
        fd = self._root_fd(root)
        try:
            for part in parts[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                next_fd = open_beneath(fd, part, os.O_PATH | os.O_DIRECTORY)
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1] if parts else "."

    def top_level(self) -> list[str]:
        """Names listed for ``/``."""
        return sorted(r.device.lstrip("/") for r in self._roots)
