"""Server-level adb operations, the one place edgekit talks to the adb server as a server: make sure one
answers (starting it with the stock ``adb`` client), connect and disconnect network devices, list what the
server sees.

The stock client is used on purpose: it honours ``ANDROID_ADB_SERVER_PORT`` (a private server per test
or per user) and starts the server when none runs, exactly as a user's own ``adb`` would. Talking to a
device (shell, push, pull) is the ``AdbDevice`` transport's job, not this module's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

from edgekit.devices.base import DeviceUnreachable, TransportError


@dataclass(frozen=True)
class AdbListing:
    serial: str
    state: str  # "device", "offline", "unauthorized", ...


DEFAULT_PORT = 5037


def _adb(*args: str, timeout_s: float = 30.0, port: int | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("adb")
    if binary is None:
        raise TransportError("adb", "the adb client is not installed (no 'adb' on PATH)")
    env = None if port is None else dict(os.environ, ANDROID_ADB_SERVER_PORT=str(port))
    try:
        return subprocess.run(
            [binary, *args], capture_output=True, text=True, timeout=timeout_s, check=False,
            stdin=subprocess.DEVNULL, env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise TransportError("adb", f"'adb {' '.join(args)}' timed out after {timeout_s:g}s") from exc


def server_port(port: int | None = None) -> int:
    """``port``, else ``ANDROID_ADB_SERVER_PORT``, else 5037 (the stock client's rule)."""
    return port if port is not None else int(os.environ.get("ANDROID_ADB_SERVER_PORT") or DEFAULT_PORT)


def server_running(port: int | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", server_port(port)), timeout=0.5):
            return True
    except OSError:
        return False


def start_server(timeout_s: float = 30.0, port: int | None = None) -> None:
    result = _adb("start-server", timeout_s=timeout_s, port=port)
    if result.returncode != 0:
        raise TransportError("adb", f"could not start the adb server on port {server_port(port)}: "
                                    f"{result.stderr.strip()[-300:]}")


def ensure_server(port: int | None = None, *, timeout_s: float = 15.0) -> int:
    """Make sure an adb server answers on ``port`` (starting one with the stock client); return the port."""
    if not server_running(port):
        start_server(timeout_s, port)
    return server_port(port)


def devices(timeout_s: float = 30.0) -> list[AdbListing]:
    """Devices the adb server sees (starting the server if none runs)."""
    start_server(timeout_s)
    result = _adb("devices", timeout_s=timeout_s)
    listing = []
    for line in result.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("*"):
            listing.append(AdbListing(parts[0], parts[1]))
    return listing


def connect(serial: str, *, timeout_s: float = 30.0) -> None:
    """``adb connect`` ``serial`` and wait (bounded) until the server lists it as ``device``."""
    start_server(timeout_s)
    deadline = time.monotonic() + timeout_s
    if {d.serial: d.state for d in devices(timeout_s)}.get(serial, "device") != "device":
        # A device that died and came back is "offline" to the server until it notices; start afresh.
        _adb("disconnect", serial, timeout_s=timeout_s)
    last = ""
    while True:
        result = _adb("connect", serial, timeout_s=timeout_s)
        last = (result.stdout + result.stderr).strip()
        if "connected to" in last:
            break
        if time.monotonic() > deadline:
            raise DeviceUnreachable(serial, f"adb connect failed: {last[-300:]}")
        time.sleep(0.3)
    while True:
        state = {d.serial: d.state for d in devices(timeout_s)}.get(serial)
        if state == "device":
            return
        if time.monotonic() > deadline:
            raise DeviceUnreachable(serial, f"adb lists it as '{state or 'absent'}' after connect")
        time.sleep(0.2)


def disconnect(serial: str, *, timeout_s: float = 10.0) -> None:
    """``adb disconnect`` ``serial``; a server that is not running has nothing to disconnect."""
    if shutil.which("adb") is None or not server_running():
        return
    with contextlib.suppress(TransportError):
        _adb("disconnect", serial, timeout_s=timeout_s)
