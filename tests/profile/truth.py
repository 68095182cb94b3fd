"""Ground truth from the emulators, read from the host while a profile runs.

The emulated devices integrate their power model into a JSON file (``energy_j`` so far, ``t_s`` since
the model started), rewritten every tick (10 ms). Power is constant between two ticks, so the truth's
energy is exactly linear between consecutive ticks. ``TruthPoller`` reads the file every few ms,
keeps each tick once, and places the ticks on the host's monotonic clock: the tick time is
``read time - t_s`` minimised over all reads (a read can only come after the write), plus ``t_s``.
The emulated devices share the host's kernel, so that clock is the trace's ``ts_ns`` clock too.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import threading
import time
from pathlib import Path


class TruthPoller:
    def __init__(self, path: Path, period_s: float = 0.003) -> None:
        self.path = path
        self.period_s = period_s
        self._reads: list[tuple[int, float, float]] = []  # (read ns, t_s, energy_j)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._ticks_ns: list[int] = []
        self._energy_j: list[float] = []

    def _loop(self) -> None:
        last_t = None
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                truth = json.loads(self.path.read_text())
                now = time.monotonic_ns()
                if truth["t_s"] != last_t:
                    last_t = truth["t_s"]
                    self._reads.append((now, float(truth["t_s"]), float(truth["energy_j"])))
            self._stop.wait(self.period_s)

    def __enter__(self) -> TruthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        offset_ns = min(read_ns - round(t_s * 1e9) for read_ns, t_s, _ in self._reads)
        self._ticks_ns = [offset_ns + round(t_s * 1e9) for _, t_s, _ in self._reads]
        self._energy_j = [e for _, _, e in self._reads]

    def energy_at(self, ts_ns: int) -> float:
        """Cumulative true energy (J) at ``ts_ns`` on the host's monotonic clock."""
        ticks = self._ticks_ns
        if not ticks[0] <= ts_ns <= ticks[-1]:
            raise ValueError("time outside the polled span")
        i = bisect.bisect_right(ticks, ts_ns)
        if i >= len(ticks):
            return self._energy_j[-1]
        t0, t1 = ticks[i - 1], ticks[i]
        e0, e1 = self._energy_j[i - 1], self._energy_j[i]
        return e0 + (e1 - e0) * (ts_ns - t0) / (t1 - t0)

    def energy_between(self, start_ns: int, end_ns: int) -> float:
        return self.energy_at(end_ns) - self.energy_at(start_ns)
