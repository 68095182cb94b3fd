"""Emulated sysfs attributes, rewritten in place as the kernel's are.

A sysfs attribute keeps one inode for its whole life and produces its current value on every read, so a
sampler may hold it open and ``pread`` it at offset 0 each tick (the phone agent's ``edgekit_sampler`` does).
Replacing the file by a rename would leave such a reader on the old inode forever. Here each value goes in
with one ``pwrite`` at offset 0, the newline included, and a shorter value's leftover tail is cut off after;
between the two a reader of the first line (every reader of a one-number attribute) already sees the new
value whole.
"""

from __future__ import annotations

import os
from pathlib import Path


class SysfsAttributes:
    """Open descriptors of the attributes written so far; ``show`` rewrites one, ``close`` releases them."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def show(self, path: Path, text: str) -> None:
        fd = self._fds.get(path)
        if fd is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._fds[path] = fd
        data = text.encode()
        os.pwrite(fd, data, 0)
        if os.fstat(fd).st_size > len(data):
            os.ftruncate(fd, len(data))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
