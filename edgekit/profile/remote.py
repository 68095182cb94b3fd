"""The device side of one profiling run, seen from the host: one attempt in its own remote directory,
pulling what it wrote, finding and killing what it left running, and the host's record of it.

``run.py`` decides what to do (retry, give up, raise); this module only does it.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import limits
from edgekit.devices.base import CommandResult, Device
from edgekit.errors import DeviceUnreachable, EdgekitError, LimitExceeded, RemoteFileMissing
from edgekit.profile.conditioning import Conditioning

TRACE_FILES = ("trace.jsonl", "summary.json", "runner.stderr")


def pull_files(device: Device, remote_dir: str, local_dir: Path) -> list[str]:
    """Pull the run's files that exist; the names pulled. A file the device does not have is skipped; a drop
    (``DeviceUnreachable``) is raised: the files may well be there, so it is not "no trace".

    All of them together stay under the ``pull_run_bytes`` limit (each also under ``pull_file_bytes``);
    a file over what is left raises ``LimitExceeded`` naming the limit rather than being skipped."""
    local_dir.mkdir(parents=True, exist_ok=True)
    caps = limits.current()
    left = caps.pull_run_bytes
    pulled = []
    for name in TRACE_FILES:
        local = local_dir / name
        try:
            device.pull(posixpath.join(remote_dir, name), str(local), max_bytes=min(left, caps.pull_file_bytes))
        except LimitExceeded as exc:
            limit = caps.describe("pull_run_bytes" if left < caps.pull_file_bytes else "pull_file_bytes")
            raise LimitExceeded(device.name, exc.what, limit) from exc
        except RemoteFileMissing:
            continue
        pulled.append(name)
        left -= local.stat().st_size
    return pulled


def leftover_processes(device: Device, marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of device processes whose command line contains ``marker``. procps' ``ps`` cuts
    command lines at 80 columns when it cannot tell a terminal's width, which would hide the marker: the
    width is given (busybox and toybox do not cut what goes to a pipe)."""
    result = device.run(["env", "COLUMNS=65535", "ps", "-eo", "pid,args"], timeout_s=30.0)
    if not result.ok:
        result = device.run(["ps", "-A", "-o", "pid,args"], timeout_s=30.0)
    found = []
    for line in result.text().splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit() and marker in args and " ps " not in f" {args} ":
            found.append((int(pid), args.strip()))
    return found


# Signals each pid's process group (the agent leads one: sshd and adbd start a command in its own session,
# so its runner child and samplers go with it) and the pid itself; a pid that leads no group only gets the
# second kill. No "--": busybox's kill refuses it.
_KILL_GROUPS = 'sig=$1; shift; for p; do kill -s "$sig" "-$p" 2>/dev/null; kill -s "$sig" "$p" 2>/dev/null; done; true'


def _kill(device: Device, signal_name: str, pids: list[int]) -> None:
    device.run(["sh", "-c", _KILL_GROUPS, "edgekit-kill", signal_name, *(str(p) for p in pids)], timeout_s=30.0)


def kill_leftovers(device: Device, marker: str, attempts: int = 3, grace_s: float = 2.0) -> list[str]:
    """Stop every process of the run that is still there, with its process group: SIGTERM first, so an
    agent can write what it has (the sh agent writes its partial trace then), SIGKILL for what is left
    after ``grace_s``. Returns what survives (normally nothing)."""
    left = leftover_processes(device, marker)
    if left:
        _kill(device, "TERM", [pid for pid, _ in left])
        deadline = time.monotonic() + grace_s
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = leftover_processes(device, marker)
    for _ in range(attempts):
        if not left:
            return []
        _kill(device, "KILL", [pid for pid, _ in left])
        time.sleep(0.2)
        left = leftover_processes(device, marker)
    return [args for _, args in left]


class Attempt:
    """One execution of the agent in its own remote run directory, with its input files pushed first."""

    def __init__(self, device: Device, argv: list[str], remote_dir: str, inputs: dict[str, str]) -> None:
        self.device = device
        self.remote_dir = remote_dir
        self.argv = argv
        self.inputs = inputs  # file name in the run directory -> text
        self.start_ns = self.end_ns = 0

    def run(self, timeout_s: float) -> CommandResult:
        self.device.run(["mkdir", "-p", self.remote_dir], timeout_s=30.0, check=True)
        with tempfile.TemporaryDirectory(prefix="edgekit-profile-") as tmp:
            for name, text in self.inputs.items():
                local = Path(tmp) / name
                local.write_text(text)
                self.device.push(str(local), posixpath.join(self.remote_dir, name))
        self.start_ns = time.monotonic_ns()
        try:
            result = self.device.run(self.argv, timeout_s=timeout_s)
        finally:
            self.end_ns = time.monotonic_ns()
        if result.exit_code == 255:
            # The agent never exits 255 (0 ok, 1 failed, 143 terminated); ssh does when the connection
            # dies under a command that had started, which the transport cannot tell from an exit code.
            raise DeviceUnreachable(
                self.device.name,
                f"connection lost while the agent ran (exit 255): {result.stderr_tail(300).strip() or 'no message'}",
            )
        return result

    @property
    def wall_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def reopen_device(lost: Device, reopen: Callable[[], Device], wait_s: float) -> Device:
    """``lost`` closed and a freshly connected device in its place, trying again (with backoff) while it is
    still coming back."""
    with contextlib.suppress(EdgekitError):
        lost.close()
    deadline = time.monotonic() + wait_s
    delay_s = 0.5
    while True:
        try:
            return reopen()
        except DeviceUnreachable:
            if time.monotonic() + delay_s > deadline:
                raise
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)


def keep_partial(device: Device, remote_dir: str, keep: Path, why: str) -> None:
    """Pull what a lost attempt left (the device may be back already) and mark it partial."""
    keep.mkdir(parents=True, exist_ok=True)
    pulled: list[str] = []
    with contextlib.suppress(EdgekitError):
        pulled = pull_files(device, remote_dir, keep)
    write_json(keep / "PARTIAL.json", {"reason": "device lost mid-run", "error": why, "pulled": pulled})


def host_facts(
    run_id: str, device: Device, attempt: Attempt, conditioning: Conditioning, attempts: int,
    result: CommandResult | None, runner: str, outcome: str,
) -> dict[str, Any]:  # fmt: skip
    return {
        "run_id": run_id,
        "device": device.name,
        "transport": device.transport,
        "outcome": outcome,
        "argv": attempt.argv,
        "exit_code": result.exit_code if result else None,
        "stderr_tail": result.stderr_tail(2000) if result else None,
        "command_start_ns": attempt.start_ns,
        "command_end_ns": attempt.end_ns,
        "host_wall_s": attempt.wall_s,
        "attempts": attempts,
        "runner": runner,
        "conditioning": conditioning.to_dict(),
    }


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
