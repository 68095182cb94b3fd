"""Load-driven power model shared by the emulated phone and the emulated board.

Power is ``idle_w + per_core_w * busy_cores``, where ``busy_cores`` is the CPU time the device's
processes (registered roots and all their live descendants) used over a short sliding window, divided
by that window. A background thread re-evaluates it every ``period_s``, hands the value to ``on_tick``
(which writes the device's sensor files), and integrates it into a ground-truth energy counter that is
rewritten atomically to ``truth_path`` as JSON ``{"energy_j", "t_s", "power_w"}``.

The truth is exactly the integral of the values passed to ``on_tick``: a sensor that shows the latest
tick's power (battery voltage x current) is therefore right by construction, and an agent sampling it
at 10-100 ms integrates to within sampling error. The window (default 0.2 s) smooths the 10 ms
granularity of /proc CPU accounting so a sample does not land on a random spike. CPU time of a process
that exits between two ticks is lost (at most one period of it); processes reparented out of the tree
are no longer counted. Linux only (/proc).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edgekit.emulator._atomic import write_atomic

_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()  # the name may contain spaces and parentheses
    return int(fields[11]) + int(fields[12])


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return kids


def process_tree(roots: set[int]) -> set[int]:
    """``roots`` and all their live descendants."""
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(_children(pid))
    return seen


class LoadPowerModel:
    """Power = idle_w + per_core_w * (CPU cores kept busy by the device's processes)."""

    def __init__(self, *, idle_w: float, per_core_w: float, truth_path: Path,
                 on_tick: Callable[[float], None], period_s: float = 0.01, window_s: float = 0.2) -> None:
        self.idle_w = idle_w
        self.per_core_w = per_core_w
        self.truth_path = Path(truth_path)
        self.on_tick = on_tick
        self.period_s = period_s
        self.window_s = max(window_s, period_s)
        self._roots: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy_j = 0.0
        self._power_w = idle_w
        self._t0 = 0.0

    def add_root(self, pid: int) -> None:
        """This pid and all its descendants are the device's load."""
        with self._lock:
            self._roots.add(pid)

    @property
    def energy_j(self) -> float:
        with self._lock:
            return self._energy_j

    @property
    def power_w(self) -> float:
        with self._lock:
            return self._power_w

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="power-model", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        last_ticks: dict[int, int] = {}
        history: collections.deque[tuple[float, float]] = collections.deque()  # (t_s, cpu_s in window)
        cpu_total_s = 0.0
        last_t = time.monotonic()
        history.append((last_t, 0.0))
        self.on_tick(self.idle_w)
        while not self._stop.wait(self.period_s):
            now = time.monotonic()
            with self._lock:
                roots = {pid for pid in self._roots if os.path.exists(f"/proc/{pid}")}
                self._roots = roots
            ticks_now: dict[int, int] = {}
            for pid in process_tree(roots):
                ticks = _cpu_ticks(pid)
                if ticks is not None:
                    ticks_now[pid] = ticks
                    cpu_total_s += max(0, ticks - last_ticks.get(pid, ticks)) / _CLOCK_TICKS_PER_S
            last_ticks = ticks_now
            history.append((now, cpu_total_s))
            while len(history) > 2 and now - history[1][0] >= self.window_s:
                history.popleft()
            t_old, cpu_old = history[0]
            busy_cores = (cpu_total_s - cpu_old) / max(now - t_old, 1e-6)
            # The power shown since the previous tick is what the truth integrates.
            dt_s = now - last_t
            last_t = now
            with self._lock:
                self._energy_j += self._power_w * dt_s
                self._power_w = self.idle_w + self.per_core_w * busy_cores
                power_w, energy_j = self._power_w, self._energy_j
            with contextlib.suppress(Exception):
                self.on_tick(power_w)
            self._write_truth(energy_j, now - self._t0, power_w)

    def _write_truth(self, energy_j: float, t_s: float, power_w: float) -> None:
        with contextlib.suppress(OSError):
            write_atomic(self.truth_path,
                         json.dumps({"energy_j": energy_j, "t_s": t_s, "power_w": power_w}).encode())
