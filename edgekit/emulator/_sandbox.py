"""The per-phone sandbox: one bubblewrap instance that gives a phone Android's paths and its own PIDs.

Layout inside (all from the phone's state directory unless noted): host ``/usr``, ``/etc`` (and the
``/bin``, ``/lib*`` links or dirs) and the host Python prefixes read-only; ``/system`` read-only with
``/system/bin/sh`` = busybox; ``/data`` and ``/sdcard`` read-write; ``/sys`` = the emulated sysfs
tree; ``/proc`` = a fresh procfs of the sandbox's PID namespace with ``/proc/meminfo`` replaced by the
phone's. Commands start through ``_spawner`` running inside (see there), so the phone never runs a
shell string on the host. This module must not write outside the state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgekit.errors import SandboxError

DEVICE_PATH = "/system/bin:/system/xbin:/vendor/bin:/usr/local/bin:/usr/bin:/bin"
SPAWNER_DEVICE_PATH = "/system/etc/edgekit-spawner.py"
SOCKET_DEVICE_DIR = "/dev/socket"
SOCKET_NAME = "edgekit-spawn"


def default_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": DEVICE_PATH,
        "HOME": "/data/local/tmp",
        "TMPDIR": "/data/local/tmp",
        "ANDROID_ROOT": "/system",
        "ANDROID_DATA": "/data",
        "EXTERNAL_STORAGE": "/sdcard",
        "SHELL": "/system/bin/sh",
        "LANG": "C.UTF-8",
    }
    env.update(extra or {})
    return env


class SandboxProcess:
    """A command started in the sandbox; ``wait`` gives its exit status, ``kill`` its process group."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._file = control.makefile("rb")
        self.pid: int | None = None
        self.returncode: int | None = None

    def _read_status(self) -> None:
        for raw in self._file:
            kind, _, value = raw.decode().strip().partition(" ")
            if kind == "P":
                self.pid = int(value)
            elif kind == "X":
                self.returncode = int(value)
                return
        self.returncode = 255 if self.returncode is None else self.returncode  # sandbox went away

    def wait(self) -> int:
        if self.returncode is None:
            self._read_status()
        assert self.returncode is not None
        with contextlib.suppress(OSError):
            self._file.close()
            self._control.close()
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self._control.shutdown(socket.SHUT_WR)


class Sandbox:
    def __init__(self, state_dir: Path, hostname: str) -> None:
        self.state_dir = state_dir
        self.hostname = hostname
        self.socket_path = state_dir / "run" / SOCKET_NAME
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_dir_fd = -1

    @property
    def pid(self) -> int:
        assert self._proc is not None, "sandbox not started"
        return self._proc.pid

    def _bwrap_argv(self) -> list[str]:
        bwrap = shutil.which("bwrap")
        busybox = shutil.which("busybox")
        if bwrap is None or busybox is None:
            raise SandboxError("the emulated phone needs bubblewrap (bwrap) and busybox on PATH")
        d = self.state_dir
        argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc"]
        argv += ["--unshare-uts", "--hostname", self.hostname, "--cap-drop", "ALL"]
        argv += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        for prefix in sorted({sys.base_prefix, sys.prefix}):
            if not prefix.startswith("/usr/"):
                argv += ["--ro-bind", prefix, prefix]
        argv += ["--proc", "/proc", "--ro-bind", str(d / "meminfo"), "/proc/meminfo"]
        argv += ["--dev", "/dev", "--bind", str(d / "run"), SOCKET_DEVICE_DIR]
        argv += ["--ro-bind", str(d / "sys"), "/sys", "--ro-bind", str(d / "system"), "/system"]
        argv += ["--ro-bind", busybox, "/system/bin/sh"]
        argv += ["--ro-bind", str(Path(__file__).with_name("_spawner.py")), SPAWNER_DEVICE_PATH]
        argv += ["--bind", str(d / "data"), "/data", "--bind", str(d / "sdcard"), "/sdcard"]
        argv += ["--chdir", "/"]
        return argv

    def start(self, timeout_s: float = 15.0) -> None:
        # bwrap needs the mount points to exist inside the read-only /system bind.
        for placeholder in ("system/bin/sh", "system/etc/edgekit-spawner.py"):
            path = self.state_dir / placeholder
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        (self.state_dir / "run").mkdir(exist_ok=True)
        if self._run_dir_fd < 0:
            self._run_dir_fd = os.open(self.state_dir / "run", os.O_PATH | os.O_DIRECTORY)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        argv = self._bwrap_argv()
        argv += ["--", sys.executable, "-I", "-S", SPAWNER_DEVICE_PATH, f"{SOCKET_DEVICE_DIR}/{SOCKET_NAME}"]
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=default_env(), start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not self.socket_path.exists():
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise SandboxError(f"bwrap exited with {self._proc.returncode}: {err.strip()[-400:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise SandboxError(f"sandbox did not come up within {timeout_s:g}s")
            time.sleep(0.02)

    def spawn(self, argv: Sequence[str], fds: tuple[int, int, int], *, tty: bool = False,
              env: Mapping[str, str] | None = None, cwd: str = "/") -> SandboxProcess:
        """Start ``argv`` inside the sandbox with the given stdin/stdout/stderr descriptors."""
        if self._proc is None or self._proc.poll() is not None:
            raise SandboxError("the phone's sandbox is not running")
        request = json.dumps({"argv": list(argv), "env": default_env(env), "cwd": cwd, "tty": tty}).encode()
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Through a directory descriptor: a deep state dir would overflow sun_path (108 bytes).
        control.connect(f"/proc/self/fd/{self._run_dir_fd}/{SOCKET_NAME}")
        socket.send_fds(control, [struct.pack("<I", len(request)) + request], list(fds))
        return SandboxProcess(control)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if self._run_dir_fd >= 0:
            os.close(self._run_dir_fd)
            self._run_dir_fd = -1
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # the PID namespace dies with its init
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
