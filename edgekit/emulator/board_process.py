"""Start and stop an emulated board as a child process, for tests and benchmarks.

``BoardProcess`` runs ``python -m edgekit.emulator.board serve`` (the same command a user runs), waits
for its ready line, writes an ssh config snippet and a known_hosts file pinning the board's host key,
and stops the board on ``stop()`` or when the ``with`` block ends. It never touches ``~/.ssh``.
Long-lived boards for users are the job of ``manager.py``; this is the throwaway variant.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from edgekit.emulator import _board_files
from edgekit.errors import EmulatorError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BoardProcess:
    """One emulated board served by a child process; restartable on the same port and state."""

    def __init__(self, state_dir: Path, *, name: str = "board", port: int | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.name = name
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, object] = {}

    @property
    def client_key(self) -> Path:
        return _board_files.client_key(self.state_dir)

    @property
    def user(self) -> str:
        return _board_files.login_user(self.state_dir)

    @property
    def truth_path(self) -> Path:
        return self.state_dir / "energy_truth.json"

    def start(self, ready_timeout_s: float = 20.0) -> BoardProcess:
        if self.proc is not None and self.proc.poll() is None:
            return self
        argv = [sys.executable, "-m", "edgekit.emulator.board", "serve", "--state-dir", str(self.state_dir),
                "--port", str(self.port), "--name", self.name, *self.extra_args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + ready_timeout_s
        line = b""
        while not line.endswith(b"\n"):
            remaining_s = deadline - time.monotonic()
            readable, _, _ = select.select([self.proc.stdout], [], [], max(0.0, remaining_s))
            chunk = os.read(self.proc.stdout.fileno(), 4096) if readable else b""
            if not chunk:
                self.stop()
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise EmulatorError(f"board '{self.name}' did not become ready on port {self.port}: "
                                        f"{err.strip()[-600:] or 'no output'}")
            line += chunk
        self.ready = json.loads(line.decode())
        return self

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the board (it stops sshd and everything on the board), SIGKILL after ``grace_s``."""
        self._signal(signal.SIGTERM, grace_s)

    def kill(self) -> None:
        """SIGKILL the board, as when a device loses power: everything on it at once.

        Returns only when nothing of the board runs any more, so its connections are closed before the
        caller's next step. Killing the serve process alone is not enough: its sandbox dies after it,
        through a chain of parent-death signals, and on a busy host a push could still complete on the
        dying board meanwhile.
        """
        sandbox = self._sandbox_pids()
        for pid in sandbox:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # the pid namespace's init: the kernel kills all it holds
        self._signal(signal.SIGKILL, 5.0)
        _wait_dead(sandbox, timeout_s=10.0)

    def _sandbox_pids(self) -> list[int]:
        """The sandbox (bwrap) process and its child, the init of the board's pid namespace."""
        root = self.ready.get("sshd_pid")
        if self.proc is None or self.proc.poll() is not None or not isinstance(root, int):
            return []
        return [root, *_children(root)]

    def _signal(self, signum: int, grace_s: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5.0)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {_board_files.host_public_key(self.state_dir)}\n"

    def write_ssh_config(self, path: Path, *, alias: str | None = None,
                         known_hosts: Path | None = None, strict: str = "yes") -> Path:
        """An ssh config with ``Host <alias>`` pointing at the board (for ``ssh -F path alias``)."""
        lines = [f"Host {alias or self.name}", "    HostName 127.0.0.1", f"    Port {self.port}",
                 f"    User {self.user}", f"    IdentityFile {self.client_key}", "    IdentitiesOnly yes",
                 "    BatchMode yes", f"    StrictHostKeyChecking {strict}"]
        if known_hosts is not None:
            lines.append(f"    UserKnownHostsFile {known_hosts}")
        path = Path(path)
        path.write_text("\n".join(lines) + "\n")
        return path

    def __enter__(self) -> BoardProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...); None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        fields = _stat_fields(int(entry)) if entry.isdigit() else None
        if fields and len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


def _wait_dead(pids: list[int], timeout_s: float) -> None:
    """Wait until each of ``pids`` has exited. A pid namespace's init exits only once every process in
    the namespace has, so this also waits for the board's sshd and its sessions."""
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)  # readable once the process has exited
        except OSError:
            continue  # already gone
        try:
            remaining_s = max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([pidfd], [], [], remaining_s)
            if not readable:
                raise EmulatorError(f"board process {pid} still runs {timeout_s:g}s after SIGKILL")
        finally:
            os.close(pidfd)
