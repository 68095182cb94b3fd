"""The emulated board's /sys: a power sensor (hwmon), a thermal zone, cpufreq and the board model.

Files are laid out like a Linux sysfs under ``<state dir>/rootfs/sys`` and bind-mounted read-only at
/sys inside the board. Values are written in place (``_sysfs.SysfsAttributes``, as the phone's), so a reader
that opens the file each time and a reader that keeps it open and re-reads from offset 0 both see the
current value.

Units are the kernel's: hwmon power in microwatts (``power1_input``), energy in microjoules
(``energy1_input``), temperature in millidegrees Celsius, frequency in kHz. This module only writes
files; the load/power model that decides the power lives in ``power.py``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from edgekit.emulator._sysfs import SysfsAttributes

HWMON = "class/hwmon/hwmon0"
THERMAL = "class/thermal/thermal_zone0"
MODEL = "firmware/devicetree/base/model"


class BoardSensors:
    """Owns the sensor files of one board and keeps them consistent with the power it is told."""

    def __init__(self, sys_root: Path, *, model: str, idle_w: float, per_core_w: float,
                 ambient_c: float = 38.0, c_per_w: float = 6.0, thermal_tau_s: float = 3.0,
                 min_freq_khz: int = 1_500_000, max_freq_khz: int = 2_400_000) -> None:
        self.sys_root = Path(sys_root)
        self.model = model
        self.idle_w = idle_w
        self.per_core_w = per_core_w
        self.ambient_c = ambient_c
        self.c_per_w = c_per_w
        self.thermal_tau_s = thermal_tau_s
        self.min_freq_khz = min_freq_khz
        self.max_freq_khz = max_freq_khz
        self.temp_c = ambient_c
        self._attributes = SysfsAttributes()
        self._last_tick: float | None = None
        self._lock = threading.Lock()

    # -- layout ----------------------------------------------------------------------------------
    def create(self) -> None:
        """(Re)create the sysfs tree with idle values: counters start at zero, like after a boot."""
        cores = os.cpu_count() or 1
        self._static(f"{HWMON}/name", "board_power\n")
        self._static(f"{THERMAL}/type", "cpu-thermal\n")
        self._static(MODEL, self.model + "\0")
        cpu_list = f"0-{cores - 1}\n" if cores > 1 else "0\n"
        for name in ("online", "possible", "present"):
            self._static(f"devices/system/cpu/{name}", cpu_list)
        for index in range(cores):
            base = f"devices/system/cpu/cpu{index}/cpufreq"
            self._static(f"{base}/scaling_min_freq", f"{self.min_freq_khz}\n")
            self._static(f"{base}/scaling_max_freq", f"{self.max_freq_khz}\n")
            self._static(f"{base}/cpuinfo_max_freq", f"{self.max_freq_khz}\n")
        self.update(self.idle_w, 0.0)

    def _static(self, relative: str, text: str) -> None:
        path = self.sys_root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def _write(self, relative: str, value: int) -> None:
        self._attributes.show(self.sys_root / relative, f"{value}\n")

    # -- updates ---------------------------------------------------------------------------------
    def update(self, power_w: float, energy_j: float) -> None:
        """Publish one sample: power, the energy counter, and the temperature/frequency it implies."""
        with self._lock:
            now = time.monotonic()
            dt_s = 0.0 if self._last_tick is None else now - self._last_tick
            self._last_tick = now
            target_c = self.ambient_c + self.c_per_w * max(0.0, power_w - self.idle_w)
            self.temp_c += (target_c - self.temp_c) * min(1.0, dt_s / self.thermal_tau_s)
            busy = power_w - self.idle_w > 0.1 * self.per_core_w
            freq_khz = self.max_freq_khz if busy else self.min_freq_khz
            self._write(f"{HWMON}/power1_input", round(power_w * 1e6))
            self._write(f"{HWMON}/energy1_input", round(energy_j * 1e6))
            self._write(f"{THERMAL}/temp", round(self.temp_c * 1000))
            for index in range(os.cpu_count() or 1):
                self._write(f"devices/system/cpu/cpu{index}/cpufreq/scaling_cur_freq", freq_khz)

    def close(self) -> None:
        with self._lock:
            self._attributes.close()
