"""The farm driver: export ahead of need, hand cells to devices, retry, quarantine, resume, stop cleanly.

Policy, in one place:
- resume: a cell whose key is stored ``ok`` for this farm is skipped (the run says how many);
- exports run in one background thread, in the order the cells need them, once per (model, recipe),
  through the content-hash cache; an export that fails (the parity gate, say) makes its cells permanent
  failures with the export's reason, and every other cell goes on;
- each device runs one job at a time (the backend's rule and the device lock's), all devices in parallel;
- a transient outcome is retried up to ``retries`` times, after ``backoff_s * 2**(attempt-1)`` seconds;
  a permanent one is recorded with its reason and never retried;
- ``quarantine_after`` failed jobs in a row quarantine a device for the rest of the run: its remaining
  cells are recorded failed, saying so;
- an ok cell is ingested together with its farm row (one transaction); failed cells are recorded too;
- SIGINT (or ``stop``): no new job starts, running ones get ``grace_s`` to finish and are kept, then the
  run ends with ``interrupted`` set; a second SIGINT stops waiting at once.
The driver alone writes the store, whichever backend ran the jobs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from rich.console import Console

from edgekit.errors import EdgekitError, StoreBusy
from edgekit.farm.backend import Backend, Job, JobOutcome
from edgekit.farm.config import Cell, Farm, expand, select_devices
from edgekit.farm.display import DeviceRow, FarmView
from edgekit.farm.exporter import Artifact, Exporter
from edgekit.farm.local import LocalBackend

__all__ = ["FarmResult", "LocalBackend", "run_farm"]

MAX_BACKOFF_S = 300.0
STORE_BUSY_WAIT_S = 60.0
_POLL_S = 0.2


@dataclass
class _Pending:
    cell: Cell
    attempt: int = 1


@dataclass
class _Device:
    row: DeviceRow
    queue: list[_Pending]
    running: _Pending | None = None
    job: Job | None = None  # the running job, to stop it on the device when it is abandoned
    future: concurrent.futures.Future[JobOutcome] | None = None
    submitted_at: float = 0.0
    backoff_until: float = 0.0
    consecutive_failures: int = 0
    quarantined: bool = False
    job_seconds: float = 0.0  # the device's own work (sum of ok and failed jobs' wall time on its host)


@dataclass
class JobRecord:
    """One finished job, for the summary and the benchmark."""

    device: str
    cell: str
    attempt: int
    status: str
    seconds: float  # on the device's host
    latency_s: float  # submit to result, on the driver


@dataclass
class FarmResult:
    farm: str
    total: int
    skipped: int
    ok: int = 0
    failed: int = 0
    interrupted: bool = False
    quarantined: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (cell label, reason)
    jobs: list[JobRecord] = field(default_factory=list)
    device_seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def not_run(self) -> int:
        return self.total - self.skipped - self.ok - self.failed

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def summary(self) -> str:
        parts = [f"farm '{self.farm}': {self.ok + self.skipped}/{self.total} cells ok"]
        if self.skipped:
            parts.append(f"{self.skipped} already stored")
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.not_run:
            parts.append(f"{self.not_run} not run")
        if self.quarantined:
            parts.append(f"quarantined: {', '.join(self.quarantined)}")
        line = ", ".join(parts) + f" ({self.wall_s:.1f}s)"
        if self.interrupted:
            line = "interrupted: " + line + "; run the same farm again to resume"
        return line


def _label(cell: Cell) -> str:
    return f"{cell.model}/{cell.recipe}/{cell.workload_name}"


@contextlib.contextmanager
def _store() -> Iterator[Any]:
    """The results store for one write, waiting a while if another process has it open."""
    from edgekit.store import Store

    deadline = time.monotonic() + STORE_BUSY_WAIT_S
    while True:
        try:
            store = Store()
            break
        except StoreBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def _sigint_sets(stop: threading.Event) -> Iterator[None]:
    """SIGINT sets ``stop`` (first) or raises KeyboardInterrupt (second); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Driver:
    def __init__(self, farm: Farm, backend: Backend, view: FarmView, devices: dict[str, _Device],
                 exporter: Exporter, result: FarmResult) -> None:
        self.farm = farm
        self.backend = backend
        self.view = view
        self.devices = devices
        self.exporter = exporter
        self.result = result
        self.spec = farm.spec

    # --- recording ---------------------------------------------------------------------------------

    def _record_failed(self, dev: _Device, pending: _Pending, reason: str, sha: str | None) -> None:
        from edgekit.store.farm import record_failed

        cell = pending.cell
        with _store() as store:
            record_failed(store, self._record(cell), reason, pending.attempt, sha)
        self.result.failed += 1
        self.result.failures.append((f"{cell.device}: {_label(cell)}", reason))
        dev.row.done += 1
        dev.row.failed += 1
        self.view.event(f"[{cell.device}] {_label(cell)}: FAILED after {pending.attempt} attempt(s): {reason}")

    def _record(self, cell: Cell) -> Any:
        from edgekit.store.farm import CellRecord

        return CellRecord(self.farm.name, cell.key, cell.model, cell.recipe, cell.device, cell.workload_name)

    def _record_ok(self, dev: _Device, pending: _Pending, outcome: JobOutcome, artifact: Artifact) -> None:
        from edgekit.store.farm import ingest_cell

        cell = pending.cell
        assert outcome.trace_dir is not None and artifact.path is not None and artifact.sha is not None
        try:
            with _store() as store:
                ingest_cell(store, self._record(cell), outcome.trace_dir / "trace.jsonl", artifact.path,
                            pending.attempt, artifact.sha, outcome.result)
        except EdgekitError as exc:
            self._failure(dev, pending, "permanent", f"the trace could not be stored: {exc}", artifact.sha)
            return
        dev.consecutive_failures = 0
        self.result.ok += 1
        dev.row.done += 1
        dev.row.ok += 1
        self.view.event(f"[{cell.device}] {_label(cell)}: ok in {outcome.seconds:.1f}s "
                        f"(attempt {pending.attempt}) [{dev.row.done}/{dev.row.total}]")

    def _failure(self, dev: _Device, pending: _Pending, status: str, reason: str, sha: str | None) -> None:
        dev.consecutive_failures += 1
        cell = pending.cell
        if status == "transient" and pending.attempt <= self.spec.retries and not self._quarantine_due(dev):
            delay = min(self.spec.backoff_s * 2 ** (pending.attempt - 1), MAX_BACKOFF_S)
            dev.queue.insert(0, _Pending(cell, pending.attempt + 1))
            dev.backoff_until = time.monotonic() + delay
            dev.row.state = "backoff"
            self.view.event(f"[{cell.device}] {_label(cell)}: attempt {pending.attempt} failed ({reason}); "
                            f"retrying in {delay:g}s")
            return
        if status == "transient":
            reason = f"transient failure, gave up after {pending.attempt} attempt(s): {reason}"
        self._record_failed(dev, pending, reason, sha)
        if self._quarantine_due(dev):
            self._quarantine(dev, reason)

    def _quarantine_due(self, dev: _Device) -> bool:
        return dev.consecutive_failures >= self.spec.quarantine_after

    def _quarantine(self, dev: _Device, last: str) -> None:
        dev.quarantined = True
        dev.row.state = "quarantined"
        name = dev.row.name
        self.result.quarantined.append(name)
        self.view.event(f"[{name}] QUARANTINED after {dev.consecutive_failures} failures in a row; "
                        f"its {len(dev.queue)} remaining cell(s) are recorded failed")
        why = f"device '{name}' quarantined after {dev.consecutive_failures} failures in a row (last: {last})"
        while dev.queue:
            pending = dev.queue.pop(0)
            artifact = self.exporter.get((pending.cell.model, pending.cell.recipe))
            self._record_failed(dev, _Pending(pending.cell, pending.attempt - 1), why,
                                artifact.sha if artifact else None)

    # --- the loop ----------------------------------------------------------------------------------

    def collect(self, dev: _Device) -> None:
        future, pending = dev.future, dev.running
        assert future is not None and pending is not None
        dev.future = dev.running = dev.job = None
        dev.row.state = "idle"
        artifact = self.exporter.get((pending.cell.model, pending.cell.recipe)) or Artifact()
        try:
            outcome = future.result()
        except Exception as exc:  # the backend itself failed (a lost Ray task, a bug): retry it
            outcome = JobOutcome("transient", f"the backend lost the job: {type(exc).__name__}: {exc}", None, 0.0)
        latency = time.monotonic() - dev.submitted_at
        dev.job_seconds += outcome.seconds
        self.result.jobs.append(JobRecord(dev.row.name, _label(pending.cell), pending.attempt, outcome.status,
                                          outcome.seconds, latency))
        if outcome.status == "ok" and outcome.trace_dir is not None:
            self._record_ok(dev, pending, outcome, artifact)
        else:
            reason = outcome.reason or "the job reported no reason"
            self._failure(dev, pending, "permanent" if outcome.status == "permanent" else "transient", reason,
                          artifact.sha)

    def dispatch(self, dev: _Device) -> None:
        now = time.monotonic()
        if dev.quarantined or dev.future is not None or now < dev.backoff_until:
            return
        while dev.queue:
            pending = dev.queue[0]
            artifact = self.exporter.get((pending.cell.model, pending.cell.recipe))
            if artifact is None:
                dev.row.state, dev.row.cell = "waiting", f"{_label(pending.cell)} (exporting)"
                return
            if artifact.error is not None:
                dev.queue.pop(0)
                self._record_failed(dev, _Pending(pending.cell, 0), artifact.error, None)
                continue
            assert artifact.path is not None and artifact.sha is not None
            from edgekit.profile.run import new_run_id

            dev.queue.pop(0)
            cell = pending.cell
            job = Job(farm=self.farm.name, cell_key=cell.key, model=cell.model, recipe=cell.recipe,
                      device=cell.device, workload_name=cell.workload_name, workload=cell.workload,
                      artifact_dir=artifact.path, artifact_sha=artifact.sha, attempt=pending.attempt,
                      run_id=new_run_id(cell.device))
            dev.running, dev.job, dev.submitted_at = pending, job, time.monotonic()
            try:
                dev.future = self.backend.submit(job)
            except Exception as exc:  # the backend could not take it (cluster gone): a transient outcome
                dev.future = concurrent.futures.Future()
                dev.future.set_exception(exc)
            dev.row.state, dev.row.cell, dev.row.attempt = "running", _label(cell), pending.attempt
            self.view.progress(f"[{cell.device}] {_label(cell)}: attempt {pending.attempt} started")
            return
        dev.row.state = "done"

    def _stop_abandoned(self, dev: _Device) -> None:
        """Stop the abandoned job's agent on the device: it would run on, beside whatever measures next."""
        if dev.job is None:
            return
        try:
            self.backend.abandon(dev.job)
        except Exception as exc:  # the device may be what failed; its next job clears what is left
            self.view.event(f"[{dev.row.name}] could not stop the abandoned job on the device: {exc}")

    def running(self) -> list[concurrent.futures.Future[JobOutcome]]:
        return [d.future for d in self.devices.values() if d.future is not None]

    def loop(self, stop: threading.Event, grace_s: float) -> None:
        grace_deadline: float | None = None
        while True:
            for dev in self.devices.values():
                if dev.future is not None and dev.future.done():
                    self.collect(dev)
            if stop.is_set() and grace_deadline is None:
                grace_deadline = time.monotonic() + grace_s
                self.result.interrupted = True
                self.exporter.stop.set()
                busy = len(self.running())
                self.view.event(f"stopping: no new jobs; waiting up to {grace_s:g}s for {busy} running job(s)")
            if grace_deadline is None:
                for dev in self.devices.values():
                    self.dispatch(dev)
            elif time.monotonic() > grace_deadline:
                for dev in self.devices.values():
                    if dev.future is not None:
                        self.view.event(f"[{dev.row.name}] abandoned its running job (not stored)")
                        self._stop_abandoned(dev)
                        dev.future = dev.running = dev.job = None
            running = self.running()
            if not running and (grace_deadline is not None or all(
                    d.quarantined or not d.queue for d in self.devices.values())):
                break
            self.view.refresh()
            if running:
                concurrent.futures.wait(running, timeout=_POLL_S, return_when=concurrent.futures.FIRST_COMPLETED)
            else:
                time.sleep(_POLL_S)
        for dev in self.devices.values():
            if dev.row.state not in ("quarantined", "done"):
                dev.row.state = "stopped" if dev.queue else "done"
            self.result.device_seconds[dev.row.name] = dev.job_seconds


def run_farm(farm: Farm, backend: Backend | None = None, *, console: Console | None = None,
             live: bool | None = None, grace_s: float = 60.0, stop: threading.Event | None = None) -> FarmResult:
    """Run every cell of ``farm`` not already stored ok (see the module docstring)."""
    from edgekit.store.farm import ok_keys

    started = time.monotonic()
    backend = backend or LocalBackend()
    console = console or Console(markup=False, highlight=False)  # names and reasons are text
    stop = stop or threading.Event()
    entries = select_devices(farm, backend.devices())
    cells = expand(farm, entries)
    with _store() as store:
        done_keys = ok_keys(store, farm.name)
    todo = [c for c in cells if c.key not in done_keys]
    result = FarmResult(farm.name, total=len(cells), skipped=len(cells) - len(todo))
    devices = {e.name: _Device(DeviceRow(e.name, total=0), []) for e in entries}
    for cell in todo:
        devices[cell.device].queue.append(_Pending(cell))
        devices[cell.device].row.total += 1
    pairs = list(dict.fromkeys((c.model, c.recipe) for c in todo))
    exporter = Exporter(farm, pairs, stop)
    view = FarmView(f"farm {farm.name}", [d.row for d in devices.values()], console, live)
    if result.skipped:
        console.print(f"resuming farm '{farm.name}': {result.skipped} of {len(cells)} cells already in the "
                      f"store, {len(todo)} to run", highlight=False)
    else:
        console.print(f"farm '{farm.name}': {len(cells)} cells on {len(entries)} device(s), "
                      f"{len(pairs)} artifact(s) to export", highlight=False)
    try:
        with _sigint_sets(stop), view:
            exporter.start()
            _Driver(farm, backend, view, devices, exporter, result).loop(stop, grace_s)
    finally:
        exporter.close(lambda line: console.print(line, highlight=False))
        backend.close()
    result.wall_s = time.monotonic() - started
    return result
