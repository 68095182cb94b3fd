"""The agent's trace writer and sampler (supervisor side): one JSON object per line, flushed per line so
a kill loses little, and a sampling thread that records the runner's memory and the device's sensors.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import threading
import time

from agent_sensors import cpu_index, pss_kb, read_int, status_kb, thermal_zones

_MONO = time.monotonic_ns


class TraceWriter:
    """Appends one JSON object per line; thread-safe; flushed per line so a kill loses little."""

    def __init__(self, path):
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self.events = 0
        self.samples = 0

    def write(self, record):
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            if record.get("type") == "event":
                self.events += 1
            elif record.get("type") == "sample":
                self.samples += 1

    def write_raw(self, line, kind):
        with self._lock:
            self._file.write(line if line.endswith("\n") else line + "\n")
            self._file.flush()
            if kind == "event":
                self.events += 1
            elif kind == "sample":
                self.samples += 1

    def close(self):
        with self._lock:
            self._file.close()


class Sampler:
    """Samples every ``period_s`` from a thread until stopped; the runner's pid may change."""

    def __init__(self, writer, period_s, power, pss_period_s):
        self.writer = writer
        self.period_s = period_s
        self.power = power
        self.pid = None
        # smaps_rollup walks every page of the runner under its mmap lock (0.5 ms for a small onnxruntime
        # process, 10+ ms for a 135M-parameter fp32 one), so PSS is read at most every pss_period_s and
        # never more often than keeps that read under 0.5 % of one core; other samples carry null.
        self.pss_period_ns = int(pss_period_s * 1e9)
        self._pss_gap_ns = self.pss_period_ns
        self._last_pss_ns = None
        self._freq = sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"),
                            key=cpu_index)
        self._zones = thermal_zones()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgekit-sampler", daemon=True)

    def sample(self):
        ts_ns = _MONO()
        pid = self.pid
        rss = hwm = pss = None
        if pid is not None:
            rss, hwm = status_kb(pid)
            if self._last_pss_ns is None or ts_ns - self._last_pss_ns >= self._pss_gap_ns:
                cpu_ns = time.thread_time_ns()
                pss = pss_kb(pid)
                self._pss_gap_ns = max(self.pss_period_ns, 200 * (time.thread_time_ns() - cpu_ns))
                self._last_pss_ns = ts_ns
        power_uw, energy_uj, voltage_uv, current_ua = self.power.read()
        return {"type": "sample", "ts_ns": ts_ns, "rss_kb": rss, "hwm_kb": hwm, "pss_kb": pss,
                "cpu_freq_khz": [read_int(p) for p in self._freq],
                "thermal_mc": {label: read_int(path) for label, path in self._zones},
                "power_uw": power_uw, "energy_uj": energy_uj, "voltage_uv": voltage_uv,
                "current_ua": current_ua}

    def _loop(self):
        # The sampler yields to the runner: a lower priority for this thread only (Linux: per-thread nice).
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        next_ns = _MONO()
        period_ns = int(self.period_s * 1e9)
        while not self._stop.is_set():
            self.writer.write(self.sample())
            next_ns += period_ns
            delay_s = (next_ns - _MONO()) / 1e9
            if delay_s < 0:  # fell behind (a loaded device): resynchronise instead of bursting
                next_ns = _MONO()
                delay_s = 0
            self._stop.wait(delay_s)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)


