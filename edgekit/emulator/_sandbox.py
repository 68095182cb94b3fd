"""The per-phone sandbox: one bubblewrap instance that gives a phone Android's paths and its own PIDs.

Layout inside (all from the phone's state directory unless noted): the host's shared libraries
(``/usr/lib``, ``/lib*``) and ``/etc`` read-only, and nothing else of the host's ``/usr``: no host
programs and no Python (its standard library directories are hidden too), as on a real phone;
``/system`` read-only with busybox as ``/system/bin/busybox`` and every applet (``sh`` included) linked to
it, like Android's toybox; ``/data`` and ``/sdcard`` read-write; ``/sys`` = the emulated sysfs tree;
``/proc`` = a fresh procfs of the sandbox's PID namespace with ``/proc/meminfo`` replaced by the phone's.
Commands start through the C launcher running inside as PID 1 (``spawner.c``), so the phone never runs a
shell string on the host. This module must not write outside the state directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgekit.emulator._spawner import encode_request, spawner_binary
from edgekit.errors import SandboxError

DEVICE_PATH = "/system/bin:/system/xbin:/vendor/bin"
SPAWNER_DEVICE_PATH = "/system/etc/edgekit-spawner"
BUSYBOX_DEVICE_PATH = "/system/bin/busybox"
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

    def _bwrap_argv(self, busybox: str, spawner: Path) -> list[str]:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxError("the emulated phone needs bubblewrap (bwrap) on PATH")
        d = self.state_dir
        argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc"]
        argv += ["--unshare-uts", "--hostname", self.hostname, "--cap-drop", "ALL"]
        # Shared libraries only (the native runner and busybox are dynamically linked), no host programs.
        for libdir in ("/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32"):
            if os.path.isdir(libdir):
                argv += ["--ro-bind", libdir, libdir]
        for top in ("/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        for stdlib in sorted(glob.glob("/usr/lib/python3*")):  # a phone has no Python, not even its library
            argv += ["--tmpfs", stdlib]
        argv += ["--ro-bind", "/etc", "/etc"]
        argv += ["--proc", "/proc", "--ro-bind", str(d / "meminfo"), "/proc/meminfo"]
        argv += ["--dev", "/dev", "--bind", str(d / "run"), SOCKET_DEVICE_DIR]
        argv += ["--ro-bind", str(d / "sys"), "/sys", "--ro-bind", str(d / "system"), "/system"]
        argv += ["--ro-bind", busybox, BUSYBOX_DEVICE_PATH]
        argv += ["--ro-bind", str(spawner), SPAWNER_DEVICE_PATH]
        argv += ["--bind", str(d / "data"), "/data", "--bind", str(d / "sdcard"), "/sdcard"]
        argv += ["--chdir", "/"]
        return argv

    def _install_applets(self, busybox: str) -> None:
        """``/system/bin/<applet>`` -> busybox for every applet it has, as Android's toybox links its tools."""
        listed = subprocess.run([busybox, "--list"], capture_output=True, text=True, timeout=30, check=False)
        bin_dir = self.state_dir / "system" / "bin"
        for applet in listed.stdout.split():
            link = bin_dir / applet
            if applet == "busybox" or link.is_symlink():
                continue
            if link.exists():  # the phone's own tools (getprop) stay; an older layout's empty sh goes
                if link.stat().st_size:
                    continue
                link.unlink()
            link.symlink_to("busybox")

    def start(self, timeout_s: float = 15.0) -> None:
        busybox = shutil.which("busybox")
        if busybox is None:
            raise SandboxError("the emulated phone needs busybox on PATH")
        spawner = spawner_binary()
        # bwrap needs the mount points to exist inside the read-only /system bind.
        for placeholder in ("system/bin/busybox", "system/etc/edgekit-spawner"):
            path = self.state_dir / placeholder
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                path.unlink()
            path.touch(exist_ok=True)
        self._install_applets(busybox)
        (self.state_dir / "run").mkdir(exist_ok=True)
        if self._run_dir_fd < 0:
            self._run_dir_fd = os.open(self.state_dir / "run", os.O_PATH | os.O_DIRECTORY)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        argv = self._bwrap_argv(busybox, spawner)
        argv += ["--", SPAWNER_DEVICE_PATH, f"{SOCKET_DEVICE_DIR}/{SOCKET_NAME}"]
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
        request = encode_request(list(argv), default_env(env), cwd, tty)
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Through a directory descriptor: a deep state dir would overflow sun_path (108 bytes).
        control.connect(f"/proc/self/fd/{self._run_dir_fd}/{SOCKET_NAME}")
        socket.send_fds(control, [request], list(fds))
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
