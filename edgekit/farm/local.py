"""The local backend: the farm's devices attached to this host, one worker thread per device.

Each device gets a daemon thread that runs its jobs one after another through ``run_job_here`` (which
also takes the cross-process device lock), so all devices work in parallel and no device ever runs two
jobs. Threads are daemons on purpose: an interrupted farm that gives up waiting for a running job can
exit without being held hostage by it (the job's own timeout bounds what it leaves on the device).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from pathlib import Path

from edgekit import inventory
from edgekit.errors import UnknownName
from edgekit.farm.backend import Job, JobOutcome
from edgekit.farm.job import default_traces_root, run_job_here, stop_job
from edgekit.inventory import DeviceEntry

_Item = tuple[Job, "concurrent.futures.Future[JobOutcome]"] | None


class _DeviceWorker:
    def __init__(self, entry: DeviceEntry, traces_root: Path) -> None:
        self.entry = entry
        self.traces_root = traces_root
        self.jobs: queue.Queue[_Item] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name=f"farm-{entry.name}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.jobs.get()
            if item is None:
                return
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                outcome = run_job_here(job, self.entry, artifact_dir=job.artifact_dir, traces_root=self.traces_root)
            except BaseException as exc:  # run_job_here classifies device failures; this is a bug
                future.set_exception(exc)
            else:
                future.set_result(outcome)


class LocalBackend:
    """Runs jobs on the devices of this host's inventory (file entries, running emulators, local)."""

    def __init__(self, inventory_file: str | Path | None = None, *, traces_root: Path | None = None) -> None:
        self._entries = inventory.load(inventory_file)
        self._traces_root = traces_root or default_traces_root()
        self._workers: dict[str, _DeviceWorker] = {}
        self._lock = threading.Lock()

    def devices(self) -> list[DeviceEntry]:
        return list(self._entries)

    def submit(self, job: Job) -> concurrent.futures.Future[JobOutcome]:
        with self._lock:
            worker = self._workers.get(job.device)
            if worker is None:
                entry = next((e for e in self._entries if e.name == job.device), None)
                if entry is None:
                    raise UnknownName("device", job.device, [e.name for e in self._entries])
                worker = self._workers[job.device] = _DeviceWorker(entry, self._traces_root)
        future: concurrent.futures.Future[JobOutcome] = concurrent.futures.Future()
        worker.jobs.put((job, future))
        return future

    def abandon(self, job: Job) -> None:
        """Kill the job's agent on its device; its worker thread then sees the run end and moves on."""
        entry = next((e for e in self._entries if e.name == job.device), None)
        if entry is not None:
            stop_job(job, entry)

    def close(self) -> None:
        with self._lock:
            for worker in self._workers.values():
                worker.jobs.put(None)
            self._workers.clear()
