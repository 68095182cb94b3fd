"""How much edgekit accepts from a device: every cap on what a device sends, in one place.

A device is not trusted: a broken or hostile one can announce a 4 GB packet, stream a file without end,
print without end or go silent. Each reader of device data takes its bound from ``current()`` and
raises ``LimitExceeded`` naming the limit, its value and the variable that changes it, before it
allocates or writes past the bound. Defaults fit real traces (a few MB) with a wide margin; each can be
overridden with ``EDGEKIT_LIMIT_<NAME>`` (e.g. ``EDGEKIT_LIMIT_PULL_FILE_BYTES=8000000000``).

This module only holds numbers; it must not import the rest of edgekit's layers.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from edgekit.errors import ConfigError

ENV_PREFIX = "EDGEKIT_LIMIT_"


@dataclass(frozen=True)
class Limits:
    # One file pulled from a device (a trace, a summary, the runner's stderr).
    pull_file_bytes: int = 1 << 30
    # Everything pulled for one profiling run together.
    pull_run_bytes: int = 2 << 30
    # One adb shell protocol v2 packet (adbd sends at most a few hundred kB).
    shell_packet_bytes: int = 1 << 20
    # One adb sync packet (DATA is at most 64 KiB in the protocol; a FAIL message is short).
    sync_packet_bytes: int = 1 << 20
    # stdout (and, separately, stderr) kept from one command run on a device.
    command_output_bytes: int = 64 << 20
    # One line read from a device where lines are read (the size header of an SSH pull).
    line_bytes: int = 16 << 20
    # A trace file read back on the host.
    trace_file_bytes: int = 1 << 30
    # A transfer during which the device sends nothing and does not close is given up after this.
    stall_s: float = 60.0

    def describe(self, name: str) -> str:
        """``name = value (EDGEKIT_LIMIT_NAME changes it)``: what an error shows about a limit."""
        value = getattr(self, name)
        shown = f"{value:g} s" if isinstance(value, float) else f"{value} bytes"
        return f"{name} = {shown} ({ENV_PREFIX}{name.upper()} changes it)"


def current() -> Limits:
    """The limits in force: defaults, each overridden by its ``EDGEKIT_LIMIT_<NAME>`` when set.

    Read on every call (it is cheap) so a test or a user's shell can change a limit without a restart.
    """
    values: dict[str, float] = {}
    for field in dataclasses.fields(Limits):
        raw = os.environ.get(ENV_PREFIX + field.name.upper())
        if raw is None or not raw.strip():
            continue
        try:
            value = float(raw) if field.type in ("float", float) else int(raw)
        except ValueError as exc:
            raise ConfigError(f"{ENV_PREFIX}{field.name.upper()}={raw!r} is not a number") from exc
        if value <= 0:
            raise ConfigError(f"{ENV_PREFIX}{field.name.upper()}={raw!r} must be positive")
        values[field.name] = value
    return Limits(**values)  # type: ignore[arg-type]
