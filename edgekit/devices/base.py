"""The device contract: the one seam every transport (adb, ssh, local) implements.

A ``Device`` runs argv commands (never a shell string the caller has to quote), copies files both ways
with a progress callback, reports facts about itself, and closes. Higher layers (push, profile, farm)
only ever talk to this contract; a transport module must not leak its library's exceptions, it raises
``TransportError`` (or a subclass) instead.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import (
    CommandFailed,
    CommandTimeout,
    DeviceUnreachable,
    RemoteFileMissing,
    TransportError,
)

# The contract's errors, defined with every other one in edgekit.errors.
__all__ = [
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "Device",
    "DeviceInfo",
    "DeviceUnreachable",
    "ProgressFn",
    "RemoteFileMissing",
    "TransportError",
]

# Called with (bytes_done, bytes_total) as a copy progresses.
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    def stderr_tail(self, n_chars: int = 400) -> str:
        return self.stderr.decode("utf-8", errors="replace")[-n_chars:]

    def checked(self, device: str) -> CommandResult:
        """This result, or ``CommandFailed`` (argv, exit code, stderr tail) when the command exited non-zero."""
        if not self.ok:
            raise CommandFailed(device, self.argv, self.exit_code, self.stderr_tail() or self.text()[-400:])
        return self


@dataclass
class DeviceInfo:
    """Live facts about a device; ``None`` means the device did not say."""

    name: str
    transport: str
    reachable: bool
    model: str | None = None
    soc: str | None = None
    cores: int | None = None
    abi: str | None = None
    ram_bytes: int | None = None
    os_version: str | None = None
    battery_pct: float | None = None
    charging: bool | None = None
    temperature_c: float | None = None
    free_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Device(abc.ABC):
    """One device reached through one transport. Use as a context manager or call ``close``."""

    name: str
    transport: str

    @abc.abstractmethod
    def run(self, argv: Sequence[str], *, timeout_s: float = 60.0, check: bool = False) -> CommandResult:
        """Run ``argv`` on the device. With ``check``, a non-zero exit raises ``TransportError``."""

    @abc.abstractmethod
    def push(self, local: str, remote: str, *, progress: ProgressFn | None = None) -> None:
        """Copy a local file to ``remote`` (a full path on the device)."""

    @abc.abstractmethod
    def pull(self, remote: str, local: str, *, progress: ProgressFn | None = None,
             max_bytes: int | None = None) -> None:
        """Copy a device file to ``local``; a missing remote file is an error, never an empty file.

        A file larger than ``max_bytes`` (default: the ``pull_file_bytes`` limit of ``edgekit.limits``)
        is refused with ``LimitExceeded`` and nothing is left at ``local``."""

    @abc.abstractmethod
    def info(self) -> DeviceInfo:
        """Live facts (model, SoC, cores, RAM, battery, temperature, ...)."""

    def close(self) -> None:  # noqa: B027 - optional for transports with nothing to release
        """Release connections."""

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
