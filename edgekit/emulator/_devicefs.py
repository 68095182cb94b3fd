"""Maps an emulated phone's device paths to host paths under its state directory, for file sync.

The sandbox binds the same directories at the same device paths, so a file pushed through sync is the
file shell commands see. Only the mapped roots exist for sync; a path that leaves its root (``..``, or
a symlink pointing out of the state directory) is refused, never followed to the host.
"""

from __future__ import annotations

import errno
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class _Root:
    device: str
    host: Path
    writable: bool


class DeviceFs:
    def __init__(self, state_dir: Path) -> None:
        self._roots = [
            _Root("/data", state_dir / "data", True),
            _Root("/sdcard", state_dir / "sdcard", True),
            _Root("/system", state_dir / "system", False),
            _Root("/sys", state_dir / "sys", False),
        ]
        self._dirs = {"/", "/storage"}  # device directories that exist only as parents of roots

    def resolve(self, device_path: str, *, for_write: bool = False) -> Path:
        """Host path for ``device_path``; raises OSError (ENOENT, EROFS, EACCES) like the device would."""
        if not device_path.startswith("/"):
            raise OSError(errno.ENOENT, "path must be absolute", device_path)
        path = posixpath.normpath(device_path)
        path = "/" + path.lstrip("/")  # normpath keeps a leading '//'
        for root in self._roots:
            if path == root.device or path.startswith(root.device + "/"):
                if for_write and not root.writable:
                    raise OSError(errno.EROFS, "Read-only file system", device_path)
                host = root.host / path[len(root.device) :].lstrip("/")
                real_root = os.path.realpath(root.host)
                real = os.path.realpath(host)
                if real != real_root and not real.startswith(real_root + os.sep):
                    raise OSError(errno.EACCES, "Permission denied (leaves the device)", device_path)
                return host
        if path in self._dirs:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", device_path)
        raise OSError(errno.EROFS if for_write else errno.ENOENT, os.strerror(
            errno.EROFS if for_write else errno.ENOENT), device_path)

    def top_level(self) -> list[str]:
        """Names listed for ``/``."""
        return sorted(r.device.lstrip("/") for r in self._roots)
