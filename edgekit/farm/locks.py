"""Per-device exclusive locks: at most one job on a device at a time, across threads and processes.

A lock is an ``fcntl.flock`` on ``<edgekit home>/locks/device-<name>.lock``, so a second edgekit process
on the same host (another farm, a manual ``edgekit profile`` run through the farm code) is excluded as
well as another thread of this one; the kernel drops it when the holder dies, so a crashed farm never
leaves a device locked. The holder's pid is written into the file for the "busy" message.
This module knows nothing about devices beyond their names.
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
_held_here: set[str] = set()  # flock is per open file, so two threads of one process need this too


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
        _held_here.add(device)
        return True


def _release_in_process(device: str) -> None:
    with _thread_guard:
        _held_here.discard(device)


@contextlib.contextmanager
def device_lock(device: str, *, wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the device's lock for the block; ``DeviceBusy`` if it stays taken for ``wait_s``."""
    path = lock_path(device)
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
