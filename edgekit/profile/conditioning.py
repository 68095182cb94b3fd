"""Bringing a device to a comparable state before a measurement: cool-down and battery facts.

``cool_down`` polls the device's thermal zones and returns once the hottest is below ``threshold_c`` or
``max_wait_s`` has passed (the survey this tool follows simply waited 10 s between tests; with a
threshold, a cool device starts at once and a hot one waits up to the same bound). It also records the
battery level and whether the device is charging, because energy read from a charging battery is not
what the SoC drew. This module only reads the device; it never changes a setting on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.devices.base import Device
from edgekit.workload import DEFAULT_THRESHOLD_C

POLL_S = 1.0
# One line per zone (millidegrees), then the battery's capacity and status where it has one.
_PROBE = r"""
for z in /sys/class/thermal/thermal_zone*/temp; do [ -r "$z" ] && echo "t $(cat "$z")"; done
b=/sys/class/power_supply/battery
[ -r $b/capacity ] && echo "c $(cat $b/capacity)"
[ -r $b/status ] && echo "s $(cat $b/status)"
true
"""


@dataclass
class DeviceState:
    hottest_c: float | None
    battery_pct: float | None
    charging: bool | None
    battery_status: str | None


@dataclass
class Conditioning:
    threshold_c: float
    max_wait_s: float
    waited_s: float
    reached_threshold: bool
    start: DeviceState
    end: DeviceState

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_state(device: Device) -> DeviceState:
    result = device.run(["sh", "-c", _PROBE], timeout_s=30.0)
    temps: list[float] = []
    capacity: float | None = None
    status: str | None = None
    for line in result.text().splitlines():
        kind, _, value = line.partition(" ")
        value = value.strip()
        if kind == "t" and value.lstrip("-").isdigit():
            temps.append(int(value) / 1000)
        elif kind == "c" and value.isdigit():
            capacity = float(value)
        elif kind == "s" and value:
            status = value
    charging = None if status is None else status in ("Charging", "Full")
    return DeviceState(max(temps) if temps else None, capacity, charging, status)


def cool_down(
    device: Device,
    *,
    max_wait_s: float = 10.0,
    threshold_c: float = DEFAULT_THRESHOLD_C,
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Conditioning:
    """Wait until the hottest zone is below ``threshold_c`` or ``max_wait_s`` passed."""
    started = time.monotonic()
    first = state = read_state(device)
    while True:
        cool = state.hottest_c is None or state.hottest_c < threshold_c
        waited_s = time.monotonic() - started
        if cool or waited_s >= max_wait_s:
            return Conditioning(threshold_c, max_wait_s, round(waited_s, 3), cool, first, state)
        sleep(min(poll_s, max(0.0, max_wait_s - waited_s)))
        state = read_state(device)
