"""An emulated Android phone: persistent identity, sandboxed filesystem, battery, and an adb daemon.

``python -m edgekit.emulator.phone serve --state-dir DIR --port PORT [--name NAME] [--accept-new-keys]``
runs one phone in the foreground until SIGTERM/SIGINT and prints ``READY 127.0.0.1:PORT`` once adb can
connect (``--port 0`` picks a free port outside 5555-5585, the range adb servers scan). Like a real
phone it serves only adb servers holding a key it trusts: those in DIR/adb_keys and the key of the
user running it (``~/.android/adbkey``, the stock client's); ``--accept-new-keys`` also trusts (and
keeps) the key of any host that offers one, as tapping "Always allow" does. Everything it writes is
under DIR::

    identity.json   serial, model, SoC, ABI, SDK, cores, RAM, props (created once, then kept)
    adb_keys        adb public keys the phone trusts, one per line (the format of adbkey.pub)
    battery.json    charge left, saved at stop so the battery keeps draining across restarts
    data/ sdcard/   the device's /data (with /data/local/tmp) and /sdcard, read-write
    system/         /system: build.prop, getprop (a busybox sh script), sh = busybox
    sys/            the emulated sysfs: battery, thermal zones, cpufreq
    meminfo         shown as /proc/meminfo
    energy.json     ground-truth energy of the power model

Battery sign convention (AOSP's): ``current_now`` is in µA and negative while discharging (``status``
reads ``Discharging``); ``voltage_now`` is in µV. ``|voltage_now * current_now|`` is the power the
model applied over the last tick, so integrating it reproduces ``energy.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

from edgekit.emulator._adb_auth import Authorizer, user_key_dir
from edgekit.emulator._adb_shell import parse_shell_destination, run_shell
from edgekit.emulator._adb_sync import SEND_TMP_PREFIX, run_sync
from edgekit.emulator._atomic import write_atomic
from edgekit.emulator._devicefs import DeviceFs
from edgekit.emulator._sandbox import Sandbox, SandboxProcess
from edgekit.emulator._sysfs import SysfsAttributes
from edgekit.emulator.adbd import AdbDaemon, ServiceRunner
from edgekit.emulator.power import LoadPowerModel

log = logging.getLogger(__name__)

FEATURES = ("shell_v2", "stat_v2", "ls_v2", "fixed_push_mkdir")
BATTERY_CAPACITY_J = 4500e-3 * 3600 * 3.87  # 4500 mAh at 3.87 V nominal
IDLE_W = 0.6
PER_CORE_W = 1.1
_GETPROP = r"""#!/system/bin/sh
# getprop for the emulated phone: answers from /system/build.prop (key=value lines).
if [ $# -eq 0 ]; then
  while IFS= read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    echo "[${line%%=*}]: [${line#*=}]"
  done < /system/build.prop
  exit 0
fi
while IFS= read -r line; do
  if [ "${line%%=*}" = "$1" ]; then echo "${line#*=}"; exit 0; fi
done < /system/build.prop
echo "$2"
"""


def new_identity(name: str) -> dict:
    serial = "EKP" + secrets.token_hex(5).upper()
    cores = os.cpu_count() or 1
    props = {
        "ro.product.name": "ekp1_emu",
        "ro.product.model": "EKP-1 Emulated Phone",
        "ro.product.device": "ekp1",
        "ro.product.brand": "edgekit",
        "ro.product.manufacturer": "edgekit",
        "ro.product.cpu.abi": "x86_64",
        "ro.product.cpu.abilist": "x86_64",
        "ro.soc.manufacturer": "edgekit",
        "ro.soc.model": "EKS-HOST (host CPU)",
        "ro.hardware": "ekp1",
        "ro.board.platform": "ekhost",
        "ro.build.version.release": "14",
        "ro.build.version.sdk": "34",
        "ro.build.type": "userdebug",
        "ro.build.fingerprint": "edgekit/ekp1_emu/ekp1:14/EK1/1:userdebug/test-keys",
        "ro.debuggable": "1",
        "ro.serialno": serial,
        "ro.boot.serialno": serial,
        "sys.boot_completed": "1",
        "persist.sys.device_name": name,
    }
    return {"name": name, "serial": serial, "cores": cores, "ram_bytes": 8 * 1024**3,
            "cpu_min_khz": 300000, "cpu_max_khz": 2400000, "props": props}


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


class Battery:
    """Writes the battery, thermal and cpufreq files from the power model's ticks."""

    def __init__(self, sys_dir: Path, state_path: Path, cores: int, min_khz: int, max_khz: int) -> None:
        self.dir = sys_dir / "class" / "power_supply" / "battery"
        self.thermal = sys_dir / "class" / "thermal"
        self.cpu_dir = sys_dir / "devices" / "system" / "cpu"
        self.state_path = state_path
        self.cores, self.min_khz, self.max_khz = cores, min_khz, max_khz
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        self.charge_j = float(state.get("charge_j", 0.8 * BATTERY_CAPACITY_J))
        self.temp_c = 30.0
        self._shown: dict[Path, str] = {}
        self._attributes = SysfsAttributes()  # rewritten in place, as the kernel's: a reader may hold one open
        # Paths written on every tick, built once (the tick runs 100 times a second).
        self._tick_files = [self.dir / "voltage_now", self.dir / "current_now", self.dir / "capacity",
                            self.dir / "temp",  # tenths of a degree C
                            self.thermal / "thermal_zone0" / "temp", self.thermal / "thermal_zone1" / "temp"]
        self._freq_files = [self.cpu_dir / f"cpu{cpu}" / "cpufreq" / "scaling_cur_freq"
                            for cpu in range(cores)]

    def _show(self, path: Path, value: str) -> None:
        if self._shown.get(path) != value:
            self._attributes.show(path, value + "\n")
            self._shown[path] = value

    def create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, value in {"status": "Discharging", "present": "1", "health": "Good",
                            "technology": "Li-ion", "type": "Battery",
                            "charge_full_design": str(4500 * 1000)}.items():
            self._show(self.dir / name, value)
        for i, kind in enumerate(("cpu-thermal", "battery")):
            zone = self.thermal / f"thermal_zone{i}"
            zone.mkdir(parents=True, exist_ok=True)
            self._show(zone / "type", kind)
        for n in ("possible", "present", "online"):
            self.cpu_dir.mkdir(parents=True, exist_ok=True)
            self._show(self.cpu_dir / n, f"0-{self.cores - 1}" if self.cores > 1 else "0")
        for cpu in range(self.cores):
            freq = self.cpu_dir / f"cpu{cpu}" / "cpufreq"
            freq.mkdir(parents=True, exist_ok=True)
            self._show(freq / "cpuinfo_min_freq", str(self.min_khz))
            self._show(freq / "cpuinfo_max_freq", str(self.max_khz))
            self._show(freq / "scaling_max_freq", str(self.max_khz))
        self.on_tick(IDLE_W, 0.0)

    def on_tick(self, power_w: float, dt_s: float) -> None:
        self.charge_j = max(0.0, self.charge_j - power_w * dt_s)
        soc = self.charge_j / BATTERY_CAPACITY_J
        ocv_v = 3.5 + 0.7 * soc  # a crude open-circuit voltage curve
        voltage_v = ocv_v - 0.08 * power_w / ocv_v  # sag through ~80 mOhm of internal resistance
        voltage_uv = round(voltage_v * 1e6)
        current_ua = -round(power_w / (voltage_uv / 1e6) * 1e6)  # negative: discharging (AOSP)
        # The chip warms toward ambient + 6 K per watt above idle with a time constant of ~20 s.
        target_c = 30.0 + 6.0 * max(0.0, power_w - IDLE_W)
        self.temp_c += (target_c - self.temp_c) * min(1.0, dt_s / 20.0)
        busy_fraction = min(1.0, max(0.0, (power_w - IDLE_W) / (PER_CORE_W * self.cores)))
        freq_khz = int(self.min_khz + (self.max_khz - self.min_khz) * min(1.0, 4 * busy_fraction))
        values = (voltage_uv, current_ua, max(0, min(100, round(100 * soc))),
                  round(self.temp_c * 10), round(self.temp_c * 1000), round((self.temp_c - 2) * 1000))
        for path, value in zip(self._tick_files, values, strict=True):
            self._show(path, str(value))
        freq = str(freq_khz)
        for path in self._freq_files:
            self._show(path, freq)

    def save(self) -> None:
        _write_atomic(self.state_path, json.dumps({"charge_j": self.charge_j}))

    def close(self) -> None:
        self._attributes.close()


class Phone:
    """One emulated phone living in ``state_dir``: services for the adb daemon plus its sandbox."""

    def __init__(self, state_dir: Path, name: str | None = None) -> None:
        self.state_dir = state_dir.resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        identity_path = self.state_dir / "identity.json"
        if identity_path.exists():
            self.identity = json.loads(identity_path.read_text())
        else:
            self.identity = new_identity(name or self.state_dir.name)
            _write_atomic(identity_path, json.dumps(self.identity, indent=2))
        self.fs = DeviceFs(self.state_dir)
        self.sandbox = Sandbox(self.state_dir, hostname=self.identity["name"])
        ident = self.identity
        self.battery = Battery(self.state_dir / "sys", self.state_dir / "battery.json", ident["cores"],
                               ident["cpu_min_khz"], ident["cpu_max_khz"])
        self.power = LoadPowerModel(idle_w=IDLE_W, per_core_w=PER_CORE_W,
                                    truth_path=self.state_dir / "energy.json", on_tick=self._on_tick)
        self._last_tick_s: float | None = None

    def _on_tick(self, power_w: float) -> None:
        now = time.monotonic()
        dt_s = 0.0 if self._last_tick_s is None else now - self._last_tick_s
        self._last_tick_s = now
        self.battery.on_tick(power_w, dt_s)

    def banner(self) -> str:
        props = self.identity["props"]
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        return "device::" + "".join(f"{k}={props[k]};" for k in keys) + "features=" + ",".join(FEATURES)

    def prepare(self) -> None:
        d = self.state_dir
        for sub in ("data/local/tmp", "sdcard", "system/bin", "system/etc", "sys", "run"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        props = self.identity["props"]
        _write_atomic(d / "system" / "build.prop", "".join(f"{k}={v}\n" for k, v in props.items()))
        getprop = d / "system" / "bin" / "getprop"
        _write_atomic(getprop, _GETPROP)
        getprop.chmod(0o755)
        ram_kb = self.identity["ram_bytes"] // 1024
        _write_atomic(d / "meminfo", f"MemTotal:       {ram_kb} kB\nMemFree:        {ram_kb // 2} kB\n"
                      f"MemAvailable:   {ram_kb * 5 // 8} kB\nBuffers:        0 kB\n"
                      f"Cached:         {ram_kb // 8} kB\nSwapTotal:      0 kB\nSwapFree:       0 kB\n")
        self.battery.create()
        for root in (d / "data", d / "sdcard"):  # pushes cut short by a crash
            for leftover in root.rglob(SEND_TMP_PREFIX + "*"):
                leftover.unlink(missing_ok=True)

    def start(self) -> None:
        self.prepare()
        self.sandbox.start()
        self.power.add_root(self.sandbox.pid)
        self.power.start()

    def stop(self) -> None:
        self.power.stop()
        self.sandbox.stop()
        self.battery.save()
        self.battery.close()

    # -- adb services -------------------------------------------------------------------------------
    def open_service(self, destination: str) -> ServiceRunner | None:
        if destination == "sync:":
            return lambda stream: run_sync(stream, self.fs)
        request = parse_shell_destination(destination)
        if request is not None:
            return lambda stream: run_shell(stream, request, self._spawn)
        log.info("refusing unsupported service %r", destination)
        return None

    def _spawn(self, argv: list[str], fds: tuple[int, int, int], tty: bool,
               env: dict[str, str]) -> SandboxProcess:
        return self.sandbox.spawn(argv, fds, tty=tty, env=env)


def serve(state_dir: Path, port: int, name: str | None, *, accept_new_keys: bool = False) -> int:
    if 5555 <= port <= 5585:
        print(f"port {port} is in 5555-5585, which adb servers scan and grab; pick another", file=sys.stderr)
        return 2
    phone = Phone(state_dir, name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    phone.start()
    auth = Authorizer(phone.state_dir / "adb_keys", user_keys=[user_key_dir() / "adbkey.pub"],
                      accept_new_keys=accept_new_keys)
    daemon = AdbDaemon(phone.banner(), phone, auth)
    try:
        bound_port = daemon.bind(port)
        threading.Thread(target=daemon.serve_forever, name="adb-accept", daemon=True).start()
        print(f"READY 127.0.0.1:{bound_port}", flush=True)
        stop.wait()
    finally:
        daemon.shutdown()
        phone.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgekit.emulator.phone",
                                     description="Run an emulated Android phone reachable with adb connect.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run one emulated phone in the foreground")
    serve_cmd.add_argument("--state-dir", type=Path, required=True)
    serve_cmd.add_argument("--port", type=int, required=True)
    serve_cmd.add_argument("--name", default=None)
    serve_cmd.add_argument("--accept-new-keys", action="store_true",
                           help="trust (and keep) the adb key of any host that offers one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="phone: %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return serve(args.state_dir, args.port, args.name, accept_new_keys=args.accept_new_keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
