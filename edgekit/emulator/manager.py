"""Start, stop, list and inspect emulated devices (phones and boards) running on this host.

Each emulated device lives in ``<edgekit home>/emulators/<name>/``: that directory is the state
directory handed to ``python -m edgekit.emulator.<kind> serve``, which keeps its identity and files
there. This module adds ``manager.json`` (kind, port, pid) and ``serve.log``. The port is chosen once,
outside adb's local emulator range 5555-5585, and kept, so a device has the same identity and address
after a stop and a start.

After a phone starts it is connected to the adb server (``adb connect 127.0.0.1:PORT``; the stock
client honours ``ANDROID_ADB_SERVER_PORT``). After a board starts an ssh config snippet is written to
``<state dir>/ssh_config`` so ``ssh -F <snippet> <name>`` works with the board's client key and pinned
host key.

This module manages processes and files only; it must not speak the devices' protocols itself.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from edgekit import paths
from edgekit.emulator._ports import port_accepts
from edgekit.errors import EmulatorError

Kind = Literal["phone", "board"]
KINDS: tuple[Kind, ...] = ("phone", "board")
_ADB_EMULATOR_PORTS = range(5555, 5586)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_STATE_FILE = "manager.json"
_LOG_FILE = "serve.log"
SSH_CONFIG_FILE = "ssh_config"
KNOWN_HOSTS_FILE = "known_hosts"


@dataclass
class EmulatorState:
    name: str
    kind: str
    port: int
    pid: int | None = None
    pid_create_time: float | None = None
    started_at: float | None = None


@dataclass
class EmulatorStatus:
    name: str
    kind: str
    port: int
    running: bool
    pid: int | None
    state_dir: str
    address: str
    ssh_config: str | None = None
    energy: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def emulators_dir() -> Path:
    path = paths.home() / "emulators"
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir(name: str) -> Path:
    return emulators_dir() / name


def _load(name: str) -> EmulatorState | None:
    path = state_dir(name) / _STATE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return EmulatorState(**data)
    except (ValueError, TypeError) as exc:
        raise EmulatorError(f"emulator '{name}': unreadable state file {path}: {exc}") from exc


def _save(state: EmulatorState) -> None:
    path = state_dir(state.name) / _STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(path)


def _known_names() -> builtins.list[str]:
    return sorted(p.name for p in emulators_dir().iterdir() if (p / _STATE_FILE).is_file())


def _alive(state: EmulatorState) -> bool:
    """True when the recorded pid is still our serve process (not a zombie, not a reused pid)."""
    if state.pid is None:
        return False
    try:
        proc = psutil.Process(state.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(state.pid)
            return False
        return state.pid_create_time is None or abs(proc.create_time() - state.pid_create_time) < 1.0
    except psutil.Error:
        return False


def _reap(pid: int) -> None:
    """Collect the exit status of a serve process this process started (harmless otherwise)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _free_port() -> int:
    """A free loopback TCP port outside adb's emulator range, picked once per device."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _ADB_EMULATOR_PORTS:
            return port
    raise EmulatorError("could not find a free loopback port outside 5555-5585")


def _next_name(kind: str) -> str:
    taken = set(_known_names())
    index = 1
    while f"{kind}-{index}" in taken:
        index += 1
    return f"{kind}-{index}"


def _log_tail(name: str, n_chars: int = 600) -> str:
    path = state_dir(name) / _LOG_FILE
    if not path.is_file():
        return ""
    return path.read_text(errors="replace")[-n_chars:].strip()


def _address(state: EmulatorState) -> str:
    return f"127.0.0.1:{state.port}"


def _port_released(port: int, *, wait_s: float) -> bool:
    """True once nothing listens on ``port``; a crashed device's children may need a moment to go."""
    deadline = time.monotonic() + wait_s
    while port_accepts(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def start(
    kind: str, name: str | None = None, *, ready_timeout_s: float = 30.0, port_release_s: float = 5.0
) -> EmulatorStatus:
    """Start (or restart) an emulated device and wait until it accepts connections."""
    if kind not in KINDS:
        raise EmulatorError(f"emulator kind must be one of {', '.join(KINDS)}, got '{kind}'")
    name = name or _next_name(kind)
    if not _NAME_RE.match(name):
        raise EmulatorError(f"emulator name must match {_NAME_RE.pattern}, got '{name}'")
    state = _load(name)
    if state is not None and state.kind != kind:
        raise EmulatorError(f"emulator '{name}' already exists as a {state.kind}, not a {kind}")
    if state is not None and _alive(state):
        return status(name)
    directory = state_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    if state is None:
        state = EmulatorState(name=name, kind=kind, port=_free_port())
    elif not _port_released(state.port, wait_s=port_release_s):
        raise EmulatorError(f"emulator '{name}': its port {state.port} is taken by another process")
    argv = [sys.executable, "-m", f"edgekit.emulator.{kind}", "serve",
            "--state-dir", str(directory), "--port", str(state.port), "--name", name]
    with (directory / _LOG_FILE).open("ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(directory),
        )
    state.pid = proc.pid
    with contextlib.suppress(psutil.Error):
        state.pid_create_time = psutil.Process(proc.pid).create_time()
    state.started_at = time.time()
    _save(state)
    deadline = time.monotonic() + ready_timeout_s
    while not port_accepts(state.port):
        if proc.poll() is not None:
            raise EmulatorError(
                f"emulator '{name}' exited with code {proc.returncode} while starting: {_log_tail(name)}"
            )
        if time.monotonic() > deadline:
            _terminate(state)
            raise EmulatorError(
                f"emulator '{name}' did not accept connections on port {state.port} within "
                f"{ready_timeout_s:g}s: {_log_tail(name)}"
            )
        time.sleep(0.1)
    if proc.poll() is not None:  # something else answered on the port and the device could not bind it
        raise EmulatorError(
            f"emulator '{name}' exited with code {proc.returncode} while starting: {_log_tail(name)}"
        )
    if kind == "phone":
        from edgekit.devices import adb_server

        adb_server.connect(_address(state), timeout_s=ready_timeout_s)
    else:
        write_ssh_config(state)
    return status(name)


def _terminate(state: EmulatorState, grace_s: float = 10.0) -> None:
    """SIGTERM the serve process group, SIGKILL it after ``grace_s``."""
    if state.pid is None or not _alive(state):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(state.pid)
        if not _alive(state):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(state.pid, signal.SIGKILL)
    for _ in range(100):
        _reap(state.pid)
        if not _alive(state):
            return
        time.sleep(0.05)


def stop(name: str, *, grace_s: float = 10.0) -> EmulatorStatus:
    """Stop a running emulated device; its state directory (identity, port, files) is kept."""
    state = _load(name)
    if state is None:
        from edgekit.errors import UnknownName

        raise UnknownName("emulator", name, _known_names())
    if state.kind == "phone":
        from edgekit.devices import adb_server

        adb_server.disconnect(_address(state))
    _terminate(state, grace_s)
    state.pid = None
    state.pid_create_time = None
    _save(state)
    return status(name)


def ensure(kind: str, count: int, *, ready_timeout_s: float = 30.0) -> builtins.list[EmulatorStatus]:
    """Make ``count`` emulated devices of ``kind`` run, restarting stopped ones before creating new ones."""
    if kind not in KINDS:
        raise EmulatorError(f"emulator kind must be one of {', '.join(KINDS)}, got '{kind}'")
    if count < 0:
        raise EmulatorError(f"number of {kind}s must be >= 0, got {count}")
    mine = [s for s in list() if s.kind == kind]
    running = [s for s in mine if s.running]
    stopped = [s for s in mine if not s.running]
    started: builtins.list[EmulatorStatus] = []
    while len(running) + len(started) < count:
        name = stopped.pop(0).name if stopped else None
        started.append(start(kind, name, ready_timeout_s=ready_timeout_s))
    return [*running[:count], *started]


def stop_all(*, grace_s: float = 10.0) -> builtins.list[EmulatorStatus]:
    return [stop(name, grace_s=grace_s) for name in _known_names()]


def _energy(directory: Path) -> dict[str, Any] | None:
    """The ground-truth energy the serve process writes (a JSON file with 'energy' in its name)."""
    for path in sorted(directory.glob("*energy*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        return data if isinstance(data, dict) else {"value": data}
    return None


def status(name: str) -> EmulatorStatus:
    state = _load(name)
    if state is None:
        from edgekit.errors import UnknownName

        raise UnknownName("emulator", name, _known_names())
    directory = state_dir(name)
    ssh_config = directory / SSH_CONFIG_FILE
    return EmulatorStatus(
        name=state.name,
        kind=state.kind,
        port=state.port,
        running=_alive(state),
        pid=state.pid if _alive(state) else None,
        state_dir=str(directory),
        address=_address(state),
        ssh_config=str(ssh_config) if state.kind == "board" and ssh_config.is_file() else None,
        energy=_energy(directory),
    )


def list() -> builtins.list[EmulatorStatus]:
    return [status(name) for name in _known_names()]


def write_ssh_config(state: EmulatorState) -> Path:
    """Write ``ssh_config`` + ``known_hosts`` for a board so ``ssh -F <snippet> <name>`` just works."""
    from edgekit.emulator import _board_files

    directory = state_dir(state.name)
    host_key = _board_files.host_public_key(directory)
    known_hosts = directory / KNOWN_HOSTS_FILE
    known_hosts.write_text(f"[127.0.0.1]:{state.port} {host_key}\n")
    config = directory / SSH_CONFIG_FILE
    config.write_text(
        f"Host {state.name}\n"
        f"    HostName 127.0.0.1\n"
        f"    Port {state.port}\n"
        f"    User {_board_files.login_user(directory)}\n"
        f"    IdentityFile {_board_files.client_key(directory)}\n"
        f"    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known_hosts}\n"
        f"    StrictHostKeyChecking yes\n"
        f"    BatchMode yes\n"
    )
    return config
