"""Run several programs time-sliced on one host, so that their timings share the host's moments.

This shared VM's speed drifts by ±15% within seconds while it is otherwise idle (measured: the same
runner's 20th-percentile decode step at 7.7 ms in one process and 10.4 ms in the next, 20 s later), so
programs timed one after the other compare the moments, not the programs. ``run_time_sliced`` starts them
all (with ``env`` added to their environment), stops each (SIGSTOP to its process group) as soon as it says
it is loaded, and then continues exactly one at a time for ``slice_s``, in rotation, until the first of them
finishes; then lets the rest finish.
A step counts only if it began ``settle_ns`` after its program was continued and ended before it was
stopped again, so no counted step contains a pause or the refill of caches another program evicted, and
every program's counted steps are spread evenly over the same stretch of time. Every program must stamp
its steps with CLOCK_MONOTONIC (``time.monotonic_ns``, ``std::chrono::steady_clock``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Program:
    """A program to time: how to start it, when it is loaded, and how to read its (start, end) steps."""

    name: str
    argv: list[str]
    loaded: Callable[[], bool]
    steps: Callable[[], list[tuple[int, int]]]
    stdout: Path
    slices: list[tuple[int, int]] = field(default_factory=list)  # (continued, stopped), monotonic ns
    proc: subprocess.Popen | None = None
    anon_kb: int = 0  # the process group's anonymous memory once loaded, and how much of it is huge pages
    huge_kb: int = 0

    @property
    def log(self) -> Path:
        return self.stdout.with_suffix(".log")

    def start(self, env: dict[str, str] | None) -> None:
        with open(self.stdout, "w") as out, open(self.log, "w") as err:  # the child keeps its own descriptors
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=None if env is None else {**os.environ, **env})

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)  # the group: a supervisor and its runner stop together

    def measure_memory(self) -> None:
        assert self.proc is not None
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != self.proc.pid:
                    continue
                for line in (stat.parent / "smaps_rollup").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key == "Anonymous":
                        self.anon_kb += int(value.split()[0])
                    elif key == "AnonHugePages":
                        self.huge_kb += int(value.split()[0])

    def running(self) -> bool:
        assert self.proc is not None
        return self.proc.poll() is None

    def problem(self) -> str:
        return f"{self.name} exited {self.proc.returncode if self.proc else None}: {self.log.read_text()[-2000:]}"


def run_time_sliced(programs: list[Program], slice_s: float, settle_ns: int, env: dict[str, str] | None = None,
                    load_timeout_s: float = 300) -> dict[str, list[int]]:
    """Durations (ns) of each program's counted steps, by name (see the module's docstring)."""
    try:
        for program in programs:  # all load side by side; each waits stopped, once loaded, for the rest
            program.start(env)
        waiting, deadline = list(programs), time.monotonic() + load_timeout_s
        while waiting:
            for program in list(waiting):
                assert program.running(), f"while loading: {program.problem()}"
                if program.loaded():
                    program.signal(signal.SIGSTOP)
                    waiting.remove(program)
            assert time.monotonic() < deadline, f"{[p.name for p in waiting]} not loaded after {load_timeout_s} s"
            time.sleep(0.02)
        for program in programs:
            program.measure_memory()
        while all(program.running() for program in programs):
            for program in programs:
                program.signal(signal.SIGCONT)
                continued = time.monotonic_ns()
                time.sleep(slice_s)
                stopped = time.monotonic_ns()
                program.signal(signal.SIGSTOP)
                program.slices.append((continued, stopped))
        for program in programs:
            program.signal(signal.SIGCONT)
        for program in programs:
            assert program.proc is not None
            program.proc.wait(timeout=load_timeout_s)
            assert program.proc.returncode == 0, program.problem()
    finally:
        for program in programs:
            if program.proc is not None and program.running():
                program.signal(signal.SIGKILL)
                program.signal(signal.SIGCONT)
                program.proc.wait(timeout=30)
    return {p.name: [end - begin for begin, end in p.steps()
                     if any(cont + settle_ns <= begin and end <= stop for cont, stop in p.slices)]
            for p in programs}
