"""Sensors of a Linux device, read by the agent's sampler: memory of a process, CPU frequencies, thermal
zones, the power source (battery, hwmon, RAPL, NVML; the first that exists wins) and static device facts.

Stdlib only. Every sensor read opens the file anew: emulated sysfs files are replaced atomically.
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform


def read_text(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 65536).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def read_int(path):
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def status_kb(pid):
    """(VmRSS, VmHWM) of ``pid`` in kB, None where unreadable."""
    data = read_bytes(f"/proc/{pid}/status")
    return field_kb(data, b"VmRSS:"), field_kb(data, b"VmHWM:")


def pss_kb(pid):
    return field_kb(read_bytes(f"/proc/{pid}/smaps_rollup"), b"Pss:")


def read_bytes(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def field_kb(data, key):
    """The number after ``key`` in a /proc ``Key:   123 kB`` listing, or None."""
    if not data:
        return None
    at = data.find(key)
    if at < 0:
        return None
    end = data.find(b"\n", at)
    try:
        return int(data[at + len(key):end if end >= 0 else None].split()[0])
    except (ValueError, IndexError):
        return None


def cpu_index(path):
    name = path.split("/cpufreq/")[0].rsplit("/cpu", 1)[1]
    return int(name) if name.isdigit() else 1 << 30


def thermal_zones():
    """[(label, temp path)]: label = the zone's type, made unique with the zone name when repeated."""
    zones = []
    seen = set()
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*"),
                       key=lambda p: int(p.rsplit("zone", 1)[1]) if p.rsplit("zone", 1)[1].isdigit() else 0):
        if not os.path.exists(zone + "/temp"):
            continue
        label = (read_text(zone + "/type") or "").strip() or os.path.basename(zone)
        if label in seen:
            label = f"{label}:{os.path.basename(zone)}"
        seen.add(label)
        zones.append((label, zone + "/temp"))
    return zones



# ------------------------------------------------------------------------------------------------
# power sources: the first that exists wins (battery, hwmon, RAPL, NVML)
# ------------------------------------------------------------------------------------------------
class PowerSource:
    """Reads one power source; ``read()`` returns (power_uw, energy_uj, voltage_uv, current_ua)."""

    name = None
    detail = None
    energy_range_uj = None

    def read(self):
        return None, None, None, None


class BatterySource(PowerSource):
    name = "battery"

    def __init__(self, base):
        self.base = base
        self.detail = base
        self.status = (read_text(base + "/status") or "").strip()
        current = read_int(base + "/current_now") or 0
        # Positive power = consumed. AOSP reports negative current while discharging, some devices
        # positive: calibrate on the sign seen now against status. Charging/Full/unknown keeps AOSP's.
        self.sign = -1
        if self.status == "Discharging" and current > 0:
            self.sign = 1
        self.detail = f"{base} (status {self.status or 'unknown'}, current sign {self.sign:+d})"
        self._v, self._i = base + "/voltage_now", base + "/current_now"

    def read(self):
        voltage_uv, current_ua = read_int(self._v), read_int(self._i)
        if voltage_uv is None or current_ua is None:
            return None, None, voltage_uv, current_ua
        return self.sign * voltage_uv * current_ua // 1_000_000, None, voltage_uv, current_ua


class HwmonSource(PowerSource):
    name = "hwmon"

    def __init__(self, power_path, energy_path, detail, rail=None):
        self._power, self._energy, self._rail = power_path, energy_path, rail
        self.detail = detail

    def read(self):
        power_uw = read_int(self._power) if self._power else None
        if self._rail is not None:  # INA3221: mV x mA = uW
            millivolts, milliamps = read_int(self._rail[0]), read_int(self._rail[1])
            if millivolts is not None and milliamps is not None:
                power_uw = millivolts * milliamps
        energy_uj = read_int(self._energy) if self._energy else None
        return power_uw, energy_uj, None, None


class RaplSource(PowerSource):
    name = "rapl"

    def __init__(self, zone):
        self._energy = zone + "/energy_uj"
        self.energy_range_uj = read_int(zone + "/max_energy_range_uj")
        label = (read_text(zone + "/name") or "").strip()
        self.detail = "{} ({})".format(zone, label or "package")

    def read(self):
        return None, read_int(self._energy), None, None


class NvmlSource(PowerSource):
    name = "nvml"

    def __init__(self, nvml):
        self._nvml = nvml
        self._handle = nvml.nvmlDeviceGetHandleByIndex(0)
        name = nvml.nvmlDeviceGetName(self._handle)
        self.detail = "nvml gpu 0 (%s)" % (name.decode() if isinstance(name, bytes) else name)

    def read(self):
        power_uw = energy_uj = None
        with contextlib.suppress(Exception):
            power_uw = int(self._nvml.nvmlDeviceGetPowerUsage(self._handle)) * 1000  # mW
        with contextlib.suppress(Exception):
            energy_uj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)) * 1000  # mJ
        return power_uw, energy_uj, None, None


def _hwmon_source():
    for hwmon in sorted(glob.glob("/sys/class/hwmon/hwmon*")):
        chip = (read_text(hwmon + "/name") or "").strip()
        powers = sorted(p for p in glob.glob(hwmon + "/power*_input") if read_int(p) is not None)
        energies = sorted(p for p in glob.glob(hwmon + "/energy*_input") if read_int(p) is not None)
        if powers or energies:
            used = [os.path.basename(p) for p in (powers[:1] + energies[:1])]
            return HwmonSource(powers[0] if powers else None, energies[0] if energies else None,
                               "{} {} {}".format(os.path.basename(hwmon), chip, "+".join(used)))
        # Jetson INA3221: in_power*_input (mW) where present, else curr*_input (mA) x in*_input (mV).
        in_powers = sorted(p for p in glob.glob(hwmon + "/in_power*_input") if read_int(p) is not None)
        if in_powers:
            return _MilliwattSource(in_powers[0], f"{os.path.basename(hwmon)} {chip} {os.path.basename(in_powers[0])}")
        for label_path in sorted(glob.glob(hwmon + "/in*_label")):
            channel = os.path.basename(label_path)[2:-6]
            volts, amps = f"{hwmon}/in{channel}_input", f"{hwmon}/curr{channel}_input"
            label = (read_text(label_path) or "").strip()
            if label.upper().startswith("VDD_IN") and read_int(volts) is not None \
                    and read_int(amps) is not None:
                return HwmonSource(None, None, f"{os.path.basename(hwmon)} {chip} rail '{label}'",
                                   rail=(volts, amps))
    return None


class _MilliwattSource(HwmonSource):
    def __init__(self, path, detail):
        super().__init__(None, None, detail)
        self._mw = path

    def read(self):
        milliwatts = read_int(self._mw)
        return (milliwatts * 1000 if milliwatts is not None else None), None, None, None


def detect_power_source():
    battery = "/sys/class/power_supply/battery"
    if read_int(battery + "/voltage_now") is not None and read_int(battery + "/current_now") is not None:
        return BatterySource(battery)
    hwmon = _hwmon_source()
    if hwmon is not None:
        return hwmon
    for zone in sorted(glob.glob("/sys/class/powercap/intel-rapl:*")):
        if zone.count(":") == 1 and read_int(zone + "/energy_uj") is not None:
            return RaplSource(zone)
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        return NvmlSource(pynvml)
    except Exception:  # absent, no driver, no GPU: no NVML power
        pass
    return PowerSource()



def device_facts(overrides):
    facts = {"name": platform.node(), "model": None, "soc": None, "cores": os.cpu_count(),
             "abi": platform.machine(), "ram_kb": None, "os": platform.platform(),
             "battery_pct": None, "charging": None, "temperature_mc": None}
    model = read_text("/sys/firmware/devicetree/base/model") or read_text(
        "/sys/devices/virtual/dmi/id/product_name")
    facts["model"] = model.replace("\0", "").strip() if model else None
    for line in (read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            facts["ram_kb"] = int(line.split()[1])
    battery = "/sys/class/power_supply/battery"
    capacity = read_int(battery + "/capacity")
    if capacity is not None:
        facts["battery_pct"] = float(capacity)
        status = (read_text(battery + "/status") or "").strip()
        facts["charging"] = status in ("Charging", "Full") if status else None
    zones = thermal_zones()
    temps = [t for t in (read_int(path) for _label, path in zones) if t is not None]
    facts["temperature_mc"] = max(temps) if temps else None
    facts.update({k: v for k, v in overrides.items() if v is not None})
    return facts


