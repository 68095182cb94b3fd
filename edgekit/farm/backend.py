"""The seam between the farm scheduler and where jobs run: one ``Job`` in, one ``JobOutcome`` out.

The scheduler (``scheduler.py``) decides *what* runs and *when* (matrix, retries, quarantine, resume);
a ``Backend`` decides *where*: the local backend runs a job in a thread on this host, the Ray backend
(``ray_backend.py``) runs it in a Ray task on the node that has the device attached. Both end in
``job.run_job_here`` on the device's host, and both hand the driver a trace directory on the driver's
disk, so the driver alone writes the store.

This module holds data and the protocol only; it must not import Ray or touch a device.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from edgekit.workload import Workload

if TYPE_CHECKING:
    from edgekit.inventory import DeviceEntry
    from edgekit.profile.run import ProfileResult

OutcomeStatus = Literal["ok", "transient", "permanent"]
DEVICE_RESOURCE_PREFIX = "edgekit_device_"


def device_resource(name: str) -> str:
    """The Ray custom resource a node advertises for a device it has attached (amount 1)."""
    return f"{DEVICE_RESOURCE_PREFIX}{name}"


@dataclass(frozen=True)
class Job:
    """One attempt at one cell of the matrix, everything the device's host needs to run it."""

    farm: str  # farm name from farm.yaml
    cell_key: str  # stable content key of (model, recipe name and content, device, workload name, workload)
    model: str
    recipe: str
    device: str  # inventory device name
    workload_name: str
    workload: Workload
    artifact_dir: Path  # the exported artifact on the DRIVER host
    artifact_sha: str  # its content address (manifest sha)
    attempt: int  # 1-based
    # The profile run's id (its directory on the device is <workdir>/runs/<run_id>): chosen by the driver so
    # it can stop what an abandoned or cancelled job left running there. Empty: chosen where the job runs.
    run_id: str = ""


@dataclass
class JobOutcome:
    """What came of one attempt; transient ones may be retried, permanent ones never are."""

    status: OutcomeStatus
    reason: str | None  # one line; None when ok
    trace_dir: Path | None  # on the driver host: the pulled trace dir, ready for edgekit.store ingest
    seconds: float  # wall time of the job on the device host
    # The validated trace and its metrics when the job ran in this process (the local backend); a job
    # from another host brings its files only, and the driver validates them once.
    result: ProfileResult | None = None


class Backend(Protocol):
    """Where jobs run. ``submit`` never blocks on the job; device failures come back as outcomes."""

    def devices(self) -> list[DeviceEntry]:
        """Every device this backend can run jobs on."""
        ...

    def submit(self, job: Job) -> concurrent.futures.Future[JobOutcome]:
        """Start ``job`` on its device (at most one at a time per device is the caller's rule too)."""
        ...

    def abandon(self, job: Job) -> None:
        """The driver stopped waiting for ``job``: stop what it runs on its device (bounded, best effort)."""
        ...

    def close(self) -> None:
        """Release workers / the cluster connection; running jobs are let finish or abandoned."""
        ...
