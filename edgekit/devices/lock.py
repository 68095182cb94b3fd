"""Per-device exclusive locks: at most one workload on a device at a time, across threads and processes.

A lock is an ``fcntl.flock`` on ``<edgekit home>/locks/device-<name>.lock``, so a farm, a manual
``edgekit profile``/``run``/``push`` and a study on the same host exclude each other as well as two
threads of one process; the kernel drops it when the holder dies, so a crashed process never leaves a
device locked. The holder's pid is written into the file for the "busy" message. The lock is re-entrant
within one thread: a profile that holds it pushes its artifact (which takes it too) without waiting on
itself. This module knows nothing about devices beyond their names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from edgekit import paths
from edgekit.errors import DeviceBusy

_POLL_S = 0.1
_thread_guard = threading.Lock()
# device -> (holding thread's ident, depth): flock is per open file, so two threads of one process need this
# too, and it lets the holding thread take the lock again.
_held_here: dict[str, tuple[int, int]] = {}


def lock_path(device: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", device)
    directory = paths.home() / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"device-{safe}.lock"


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = path.read_text().strip()
        if text:
            return f"pid {int(text)}"
    return "another job"


def _claim_in_process(device: str) -> bool:
    with _thread_guard:
        if device in _held_here:
            return False
        _held_here[device] = (threading.get_ident(), 1)
        return True


def _reenter(device: str) -> bool:
    """Take the lock again when this thread holds it already (True), else leave it (False)."""
    with _thread_guard:
        holder = _held_here.get(device)
        if holder is None or holder[0] != threading.get_ident():
            return False
        _held_here[device] = (holder[0], holder[1] + 1)
        return True


def _release_in_process(device: str) -> None:
    with _thread_guard:
        _held_here.pop(device, None)


def _leave(device: str) -> None:
    with _thread_guard:
        ident, depth = _held_here[device]
        _held_here[device] = (ident, depth - 1)


@contextlib.contextmanager
def device_lock(device: str, *, wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the device's lock for the block; ``DeviceBusy`` if it stays taken for ``wait_s``."""
    path = lock_path(device)
    if _reenter(device):
        try:
            yield path
        finally:
            _leave(device)
        return
    deadline = time.monotonic() + wait_s
    while not _claim_in_process(device):
        if time.monotonic() >= deadline:
            raise DeviceBusy(device, f"this process (pid {os.getpid()})", wait_s)
        time.sleep(_POLL_S)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise DeviceBusy(device, _holder(path), wait_s) from None
                    time.sleep(_POLL_S)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield path
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        _release_in_process(device)
