"""``LocalDevice``: this host as a device, for profiling without hardware and for tests.

Commands run as argv (no shell) in their own process group, so a timeout kills the command and
everything it started. Copies stream in chunks with a progress callback and land atomically (a
temporary name, then a rename). Facts come from /proc, /sys and ``platform``. Nothing here talks to
the network.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from edgekit import limits
from edgekit.devices.base import (
    CommandResult,
    CommandTimeout,
    Device,
    DeviceInfo,
    ProgressFn,
    RemoteFileMissing,
    TransportError,
)
from edgekit.errors import LimitExceeded

CHUNK_BYTES = 1 << 20


class LocalDevice(Device):
    transport = "local"

    def __init__(self, name: str = "local", *, workdir: str | os.PathLike[str] | None = None) -> None:
        self.name = name
        self.workdir = str(workdir) if workdir is not None else None

    def run(self, argv: Sequence[str], *, timeout_s: float = 60.0, check: bool = False) -> CommandResult:
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("argv must name a program")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True, cwd=self.workdir)
        except FileNotFoundError:
            # What a shell answers for a missing program, so callers see the same thing on every device.
            return self._checked(CommandResult(argv, 127, b"", f"{argv[0]}: not found\n".encode()), check)
        except OSError as exc:
            raise TransportError(self.name, f"cannot start {argv[0]}: {exc}") from exc
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=5)  # a child that left the group may still hold the pipes
            raise CommandTimeout(self.name, argv, timeout_s) from exc
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        return self._checked(CommandResult(argv, code, stdout, stderr), check)

    def _checked(self, result: CommandResult, check: bool) -> CommandResult:
        return result.checked(self.name) if check else result

    def _path(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.workdir is None else Path(self.workdir) / p

    def _copy(self, source: Path, target: Path, progress: ProgressFn | None) -> None:
        total = source.stat().st_size
        part = target.with_name(target.name + ".edgekit-part")
        done = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as src, part.open("wb") as dst:
                while chunk := src.read(CHUNK_BYTES):
                    dst.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            shutil.copymode(source, part)
            part.replace(target)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise TransportError(self.name, f"copy of {source} to {target} failed: {exc}") from exc

    def push(self, local: str, remote: str, *, progress: ProgressFn | None = None) -> None:
        source = Path(local)
        if not source.is_file():
            raise TransportError(self.name, f"cannot push {local}: not a local file")
        self._copy(source, self._path(remote), progress)

    def pull(self, remote: str, local: str, *, progress: ProgressFn | None = None,
             max_bytes: int | None = None) -> None:
        source = self._path(remote)
        if not source.is_file():
            raise RemoteFileMissing(self.name, remote)
        caps = limits.current()
        cap, limit = ((caps.pull_file_bytes, caps.describe("pull_file_bytes")) if max_bytes is None
                      else (max_bytes, f"max_bytes = {max_bytes} bytes"))
        size = source.stat().st_size
        if size > cap:
            raise LimitExceeded(self.name, f"pull of {remote} ({size} bytes)", limit)
        self._copy(source, Path(local), progress)

    def info(self) -> DeviceInfo:
        free_dir = Path(self.workdir) if self.workdir else Path.home()
        while not free_dir.exists() and free_dir != free_dir.parent:
            free_dir = free_dir.parent
        os_release = platform.freedesktop_os_release() if hasattr(platform, "freedesktop_os_release") else {}
        return DeviceInfo(
            name=self.name, transport=self.transport, reachable=True,
            model=_read("/sys/firmware/devicetree/base/model")
            or _read("/sys/devices/virtual/dmi/id/product_name"),
            soc=_cpu_model() or platform.processor() or None,
            cores=os.cpu_count(), abi=platform.machine() or None, ram_bytes=_mem_total_bytes(),
            os_version=os_release.get("PRETTY_NAME") or platform.platform(),
            temperature_c=_temperature_c(), free_bytes=shutil.disk_usage(free_dir).free,
            extra={"kernel": platform.release(), "hostname": platform.node()},
        )


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\0", "").strip() or None
    except OSError:
        return None


def _cpu_model() -> str | None:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Model") and value.strip():
            return value.strip()
    return None


def _mem_total_bytes() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _temperature_c() -> float | None:
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        value = _read(str(zone / "temp"))
        if value and value.lstrip("-").isdigit():
            return int(value) / 1000
    return None
