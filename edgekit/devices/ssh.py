"""``SshDevice``: a Linux board reached with the system OpenSSH client over one multiplexed connection.

Why the system client: it was the fastest push in ``bench/ssh_transports.py`` (``ssh host 'cat > f'``
over a ControlMaster connection beat scp, asyncssh and paramiko SFTP), and it gives users exactly the
ssh_config semantics they know (Host aliases, HostName, User, Port, IdentityFile, ProxyJump, Include,
Match) without re-implementing them.

Behaviour users rely on:
- host key verification is always on (``StrictHostKeyChecking yes``); ``accept_new_host_key=True``
  switches to ``accept-new``, which records an unknown key but still refuses a changed one;
- key authentication only (``BatchMode yes``: never a password or passphrase prompt);
- argv is quoted element by element for the remote shell, so no name is ever interpreted;
- a command that times out is killed on the device (its process group), not left running;
- push/pull stream through the connection with a progress callback and land atomically (a temporary
  name, then a rename); a missing remote file is an error, never an empty local file;
- what the board sends is bounded (``edgekit.limits``): a command's output stops at
  ``command_output_bytes`` (the command is killed), a pull refuses a file over ``pull_file_bytes`` before
  reading it and never reads past the size the board announced, and a pull during which the board
  sends nothing for ``stall_s`` is given up.

Every failure is a ``TransportError``: ``HostKeyRejected``, ``DeviceUnreachable``,
``CommandTimeout``, ``RemoteFileMissing``, ``LimitExceeded``. This module must not print or prompt.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import select
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from edgekit import limits
from edgekit.devices.base import CommandResult, Device, DeviceInfo, ProgressFn
from edgekit.errors import (
    CommandTimeout,
    DeviceUnreachable,
    HostKeyRejected,
    LimitExceeded,
    RemoteFileMissing,
    TransportError,
)

CHUNK_BYTES = 1 << 20
_PID_MARKER = b"edgekit-pid "
# Starts argv in a shell that first reports its pid (= its process group) so a timeout can kill it.
_LAUNCH = "exec sh -c 'printf \"edgekit-pid %s\\n\" \"$$\"; exec \"$@\"' edgekit-run "
_MISSING_EXIT = 44
_SHORT_EXIT = 45
_UNREACHABLE = re.compile(
    r"Connection refused|Connection timed out|No route to host|Could not resolve hostname|"
    r"Connection closed by|closed by remote host|Connection reset|Broken pipe|client_loop|"
    r"kex_exchange_identification|Network is unreachable|mux_client|ControlSocket", re.IGNORECASE)


class SshDevice(Device):
    """A device reached with ``ssh``; ``host`` may be an alias from the ssh config.

    ``port``, ``user`` and ``identity_file`` override the ssh config when given. ``ssh_config`` and
    ``known_hosts`` default to the user's own files (``~/.ssh/config``, ``~/.ssh/known_hosts``).
    """

    transport = "ssh"

    def __init__(self, host: str, *, name: str | None = None, port: int | None = None,
                 user: str | None = None, identity_file: str | os.PathLike[str] | None = None,
                 ssh_config: str | os.PathLike[str] | None = None,
                 known_hosts: str | os.PathLike[str] | None = None,
                 accept_new_host_key: bool = False, workdir: str = "edgekit",
                 connect_timeout_s: float = 10.0, control_persist_s: int = 60) -> None:
        if shutil.which("ssh") is None:
            raise TransportError(name or host, "the OpenSSH client ('ssh') is not installed")
        self.host = host
        self.name = name or host
        self.workdir = workdir
        # Short (socket paths max out near 100 chars), private, and only created once a command runs.
        self._control_dir = os.path.join(tempfile.gettempdir(), f"ek-ssh-{secrets.token_hex(6)}")
        options = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "accept-new" if accept_new_host_key else "yes",
            "ControlMaster": "auto",
            "ControlPath": os.path.join(self._control_dir, "%C"),
            "ControlPersist": str(control_persist_s),
            "ConnectTimeout": str(max(1, round(connect_timeout_s))),
            "ServerAliveInterval": "5",
            "ServerAliveCountMax": "3",
            "LogLevel": "ERROR",
        }
        if known_hosts is not None:
            options["UserKnownHostsFile"] = str(Path(known_hosts).expanduser())
        if identity_file is not None:
            options["IdentityFile"] = str(Path(identity_file).expanduser())
            options["IdentitiesOnly"] = "yes"
        self._base = ["ssh", "-T"]
        if ssh_config is not None:
            self._base += ["-F", str(Path(ssh_config).expanduser())]
        for key, value in options.items():
            self._base += ["-o", f"{key}={value}"]
        if port is not None:
            self._base += ["-p", str(port)]
        if user is not None:
            self._base += ["-l", user]

    # -- plumbing --------------------------------------------------------------------------------
    def _spawn(self, remote_command: str, *, stdin: int | IO[bytes] | None = subprocess.DEVNULL,
               stdout: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
        try:
            os.makedirs(self._control_dir, mode=0o700, exist_ok=True)
            return subprocess.Popen([*self._base, "--", self.host, remote_command], stdin=stdin,
                                    stdout=stdout, stderr=subprocess.PIPE)
        except OSError as exc:
            raise TransportError(self.name, f"cannot start ssh: {exc}") from exc

    def _failure(self, stderr: bytes, what: str) -> TransportError:
        """The error for an ssh exit 255 (ssh itself failed), from what ssh said on stderr."""
        text = stderr.decode("utf-8", errors="replace").strip()
        changed = "Host key for" in text and "has changed" in text
        if changed or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return HostKeyRejected(self.name, (
                f"host key of '{self.host}' has CHANGED since it was recorded; refusing to connect. "
                "If the device was reinstalled, remove the old key with `ssh-keygen -R <host>` "
                "(or `-R '[host]:port'`) in the known_hosts file in use, then connect again"))
        if "Host key verification failed" in text or "host key is known" in text:
            return HostKeyRejected(self.name, (
                f"host key of '{self.host}' is not known; refusing to connect. Verify the key, then "
                "accept it with accept_new_host_key=True (records it in known_hosts) or add it with "
                "`ssh-keyscan` to the known_hosts file in use"))
        if "Permission denied" in text:
            return TransportError(self.name, f"authentication failed for '{self.host}' (key auth only): "
                                  f"{text[-300:]}")
        if _UNREACHABLE.search(text) or not text:
            return DeviceUnreachable(self.name, f"{what}: {text[-300:] or 'connection lost'}")
        return TransportError(self.name, f"{what}: ssh failed: {text[-300:]}")

    def connect(self) -> SshDevice:
        """Open (or reuse) the shared connection now, so key and reachability errors surface early."""
        self.run(["true"], timeout_s=30.0, check=True)
        return self

    # -- commands --------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, timeout_s: float = 60.0, check: bool = False) -> CommandResult:
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("argv must name a program")
        caps = limits.current()
        proc = self._spawn(_LAUNCH + shlex.join(argv))
        stdout, stderr = bytearray(), bytearray()
        overflow = threading.Event()
        # The pid line comes on top of the command's own output.
        cap = caps.command_output_bytes + len(_PID_MARKER) + 24
        readers = [_reader(proc.stdout, stdout, cap, proc, overflow),
                   _reader(proc.stderr, stderr, cap, proc, overflow)]
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            self._kill_remote(bytes(stdout))
            _stop(proc)
            for reader in readers:
                reader.join(timeout=5)
            raise CommandTimeout(self.name, argv, timeout_s) from exc
        if overflow.is_set():
            # The shared connection still holds our pipes while the command runs there: end it first.
            self._kill_remote(bytes(stdout))
            for reader in readers:
                reader.join(timeout=5)
            raise LimitExceeded(self.name, f"output of command {argv[:3]}", caps.describe("command_output_bytes"))
        for reader in readers:
            reader.join()
        started, out = _strip_marker(bytes(stdout))
        if proc.returncode == 255 and (not started or _UNREACHABLE.search(stderr.decode(errors="replace"))):
            raise self._failure(bytes(stderr), f"command {argv[:3]}")
        result = CommandResult(argv=argv, exit_code=proc.returncode, stdout=out, stderr=bytes(stderr))
        return result.checked(self.name) if check else result

    def _kill_remote(self, stdout_so_far: bytes) -> None:
        """Kill the timed-out command's process group on the device (best effort, bounded)."""
        match = re.search(rb"(?:^|\n)edgekit-pid (\d+)\n", stdout_so_far)
        if match is None:
            return
        pid = int(match.group(1))
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([*self._base, "--", self.host,
                            f"kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid}"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=15)

    # -- files -----------------------------------------------------------------------------------
    def push(self, local: str, remote: str, *, progress: ProgressFn | None = None) -> None:
        source = Path(local)
        if not source.is_file():
            raise TransportError(self.name, f"cannot push {local}: not a local file")
        total = source.stat().st_size
        quoted = shlex.quote(remote)
        # The board renames only a complete copy: when the link drops, sshd ends ``cat`` with a plain
        # end of input, and without the count a truncated file would take the final name.
        command = (f"f={quoted}; n={total}; d=$(dirname -- \"$f\") && mkdir -p -- \"$d\" && "
                   "cat > \"$f.edgekit-part\" && s=$(wc -c < \"$f.edgekit-part\") && "
                   "if [ $s -eq $n ]; then mv -f -- \"$f.edgekit-part\" \"$f\"; else "
                   "rm -f -- \"$f.edgekit-part\"; echo \"received $s of $n bytes\" >&2; "
                   f"exit {_SHORT_EXIT}; fi")
        proc = self._spawn(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert proc.stdin is not None
        stderr = bytearray()
        reader = _reader(proc.stderr, stderr)
        done = 0
        try:
            with source.open("rb") as src:
                while chunk := src.read(CHUNK_BYTES):
                    proc.stdin.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the connection went away: ssh's exit status and stderr say why
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _stop(proc)
        reader.join(timeout=5)
        if proc.returncode == 0 and done == total:
            return
        what = f"push of {local} to {remote} failed after {done} of {total} bytes"
        if proc.returncode in (255, None) or proc.returncode < 0:
            raise self._failure(bytes(stderr), what)
        raise TransportError(self.name, f"{what}: {bytes(stderr).decode(errors='replace').strip()[-300:]}")

    def pull(self, remote: str, local: str, *, progress: ProgressFn | None = None,
             max_bytes: int | None = None) -> None:
        caps = limits.current()
        cap, limit = ((caps.pull_file_bytes, caps.describe("pull_file_bytes")) if max_bytes is None
                      else (max_bytes, f"max_bytes = {max_bytes} bytes"))
        quoted = shlex.quote(remote)
        command = (f"f={quoted}; [ -f \"$f\" ] || "
                   f"{{ echo \"no such file: $f\" >&2; exit {_MISSING_EXIT}; }}; "
                   "wc -c < \"$f\" && exec cat -- \"$f\"")
        proc = self._spawn(command)
        assert proc.stdout is not None
        stdout = _BoundedReader(proc.stdout.fileno(), caps.stall_s)
        stderr = bytearray()
        reader = _reader(proc.stderr, stderr, caps.command_output_bytes, proc)
        target = Path(local)
        part = target.with_name(target.name + ".edgekit-part")
        total, done = -1, 0
        try:
            header = stdout.line(caps.line_bytes)
            if header.strip().isdigit():
                total = int(header)
                if total > cap:
                    raise LimitExceeded(self.name, f"pull of {remote} ({total} bytes)", limit)
                target.parent.mkdir(parents=True, exist_ok=True)
                with part.open("wb") as out:
                    # Never past the size announced: a file that grows while it is read is not followed.
                    while chunk := stdout.read(min(CHUNK_BYTES, total + 1 - done)):
                        done += len(chunk)
                        if done > total:
                            raise TransportError(self.name, f"pull of {remote}: the board sent more than the "
                                                            f"{total} bytes it announced")
                        out.write(chunk)
                        if progress is not None:
                            progress(done, total)
            proc.wait(timeout=caps.stall_s)
        except TransportError:
            part.unlink(missing_ok=True)
            raise
        except (_Stalled, subprocess.TimeoutExpired) as exc:
            part.unlink(missing_ok=True)
            raise DeviceUnreachable(self.name, f"pull of {remote}: the board sent nothing and did not close; "
                                               f"gave up after {caps.describe('stall_s')}") from exc
        finally:
            if proc.poll() is None:
                _stop(proc)
            reader.join(timeout=5)
        if proc.returncode == 0 and done == total:
            part.replace(target)
            return
        part.unlink(missing_ok=True)
        if proc.returncode == _MISSING_EXIT:
            raise RemoteFileMissing(self.name, remote)
        what = f"pull of {remote} failed after {done} of {max(total, 0)} bytes"
        if proc.returncode == 255 or proc.returncode < 0:
            raise self._failure(bytes(stderr), what)
        raise TransportError(self.name, f"{what}: {bytes(stderr).decode(errors='replace').strip()[-300:]}")

    # -- facts -----------------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        try:
            result = self.run(["sh", "-c", _INFO_SCRIPT, "edgekit-info", self.workdir], timeout_s=30.0)
        except DeviceUnreachable as exc:
            return DeviceInfo(name=self.name, transport=self.transport, reachable=False,
                              extra={"error": str(exc)})
        facts = dict(line.split("=", 1) for line in result.text().splitlines() if "=" in line)
        return parse_info(self.name, self.transport, facts)

    def close(self) -> None:
        if os.path.isdir(self._control_dir):
            if os.listdir(self._control_dir):
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run([*self._base, "-O", "exit", "--", self.host], stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=10)
            shutil.rmtree(self._control_dir, ignore_errors=True)


# Prints key=value facts; every probe is optional (boards differ), so failures print nothing.
_INFO_SCRIPT = r"""
w=$1; case $w in /*) ;; *) w=$HOME/$w;; esac
m=$(tr -d '\0' < /sys/firmware/devicetree/base/model 2>/dev/null ||
   tr -d '\0' < /proc/device-tree/model 2>/dev/null)
[ -n "$m" ] || m=$(cat /sys/devices/virtual/dmi/id/product_name 2>/dev/null)
echo "model=$m"
s=$(grep -m1 -E '^(Hardware|model name|Model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2-)
echo "soc=$(echo $s)"
echo "cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "hostname=$(uname -n)"
echo "mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null)"
echo "os=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
echo "temp_mc=$(cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null)"
d=$w; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "free_kb=$(df -Pk "$d" 2>/dev/null | awk 'NR==2 {print $4}')"
echo "workdir=$w"
"""


def parse_info(name: str, transport: str, facts: dict[str, str]) -> DeviceInfo:
    """A ``DeviceInfo`` from the key=value facts the info script prints (empty means unknown)."""

    def num(key: str) -> int | None:
        value = facts.get(key, "").strip()
        return int(value) if value.lstrip("-").isdigit() else None

    def text(key: str) -> str | None:
        return facts.get(key, "").strip() or None

    mem_kb, temp_mc, free_kb = num("mem_kb"), num("temp_mc"), num("free_kb")
    return DeviceInfo(
        name=name, transport=transport, reachable=True, model=text("model"), soc=text("soc"),
        cores=num("cores"), abi=text("arch"), ram_bytes=mem_kb * 1024 if mem_kb is not None else None,
        os_version=text("os"), battery_pct=None, charging=None,
        temperature_c=temp_mc / 1000 if temp_mc is not None else None,
        free_bytes=free_kb * 1024 if free_kb is not None else None,
        extra={k: v for k in ("kernel", "hostname", "workdir") if (v := text(k)) is not None},
    )


class _Stalled(Exception):
    """No byte within the stall limit (turned into ``DeviceUnreachable`` by the caller)."""


class _BoundedReader:
    """Reads a pipe with a bound on the time between bytes, so a silent board cannot hold a pull forever."""

    def __init__(self, fd: int, stall_s: float) -> None:
        self._fd = fd
        self._stall_s = stall_s
        self._pending = b""

    def read(self, n_bytes: int) -> bytes:
        """Up to ``n_bytes``; b"" at the end of the stream."""
        if self._pending:
            chunk, self._pending = self._pending[:n_bytes], self._pending[n_bytes:]
            return chunk
        readable, _, _ = select.select([self._fd], [], [], self._stall_s)
        if not readable:
            raise _Stalled
        return os.read(self._fd, n_bytes)

    def line(self, max_bytes: int) -> bytes:
        """One line, at most ``max_bytes`` long; what was read past it is kept for ``read``."""
        data = b""
        while b"\n" not in data:
            if len(data) > max_bytes:
                return data  # not a size header: the caller treats it as a failed pull
            chunk = self.read(65536)
            if not chunk:
                return data
            data += chunk
        line, _, self._pending = data.partition(b"\n")
        return line + b"\n"


def _reader(stream: IO[bytes] | None, sink: bytearray, cap: int | None = None,
            proc: subprocess.Popen[bytes] | None = None,
            overflow: threading.Event | None = None) -> threading.Thread:
    """A thread copying ``stream`` into ``sink``; past ``cap`` bytes it sets ``overflow`` and kills
    ``proc`` (the local ssh) instead of buffering without end."""

    def pump() -> None:
        if stream is None:
            return
        while chunk := os.read(stream.fileno(), 65536):
            if cap is not None and len(sink) + len(chunk) > cap:
                if overflow is not None:
                    overflow.set()
                if proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                return
            sink.extend(chunk)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _strip_marker(stdout: bytes) -> tuple[bool, bytes]:
    """(whether the command started, its stdout without the pid line and anything before it)."""
    start = 0 if stdout.startswith(_PID_MARKER) else stdout.find(b"\n" + _PID_MARKER) + 1
    if start == 0 and not stdout.startswith(_PID_MARKER):
        return False, stdout
    end = stdout.find(b"\n", start)
    return True, stdout[end + 1:] if end >= 0 else b""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
