"""One farm job on the host its device is attached to: lock, connect, push, profile, classify.

``run_job_here`` is what both backends end in (a thread of the local backend, a Ray task on the node
that has the device). It never raises for a device failure: every failure becomes a ``JobOutcome``
that is *transient* (the device was offline, dropped, timed out, was busy: trying again may work) or
*permanent* (out of memory on the device, the artifact was rejected, the workload cannot run: trying
again would fail the same way). It does not ingest; the driver does, so every result reaches the
driver's store.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from edgekit import paths
from edgekit.devices.base import TransportError
from edgekit.devices.inventory import DeviceEntry, connect
from edgekit.errors import ArtifactError, EdgekitError
from edgekit.farm.backend import Job, JobOutcome, OutcomeStatus
from edgekit.farm.locks import DeviceBusy, device_lock

CONNECT_TIMEOUT_S = 20.0
LOCK_WAIT_S = 30.0  # a device held by another process this long counts as busy (transient)
_OOM_MARKERS = ("(oom)", "memoryerror", "out of memory", "cannot allocate memory")
_TRANSIENT_MARKERS = ("dropped during the run", "connection lost", "connection reset", "broken pipe")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def classify(exc: BaseException) -> tuple[OutcomeStatus, str]:
    """(transient|permanent, one-line reason) for an exception of a job."""
    chain = _chain(exc)
    text = " ".join(str(e).lower() for e in chain)
    reason = _one_line(exc)
    if any(marker in text for marker in _OOM_MARKERS):
        return "permanent", f"out of memory on the device: {reason}"
    if any(isinstance(e, DeviceBusy | TransportError | ConnectionError | TimeoutError) for e in chain):
        return "transient", reason
    if any(marker in text for marker in _TRANSIENT_MARKERS):
        return "transient", reason
    if isinstance(exc, ArtifactError):
        return "permanent", f"artifact rejected: {reason}"
    if isinstance(exc, EdgekitError):
        return "permanent", reason
    if isinstance(exc, OSError):  # a host-side I/O hiccup (a socket, a pipe): worth another try
        return "transient", f"{type(exc).__name__}: {reason}"
    return "permanent", f"{type(exc).__name__}: {reason}"


def _request(job: Job, artifact_dir: Path, entry: DeviceEntry) -> Any:
    from edgekit.export import manifest as mf
    from edgekit.profile.run import ProfileRequest

    values = dict(job.request)
    if values.get("runner", "auto") == "auto" and entry.tags.device_class == "phone":
        # The native runner drives .pte only; "auto" means the best runner that can run the artifact.
        runtime = mf.read_manifest(artifact_dir).get("runtime")
        values["runner"] = "native" if runtime == "executorch" else "python"
    return ProfileRequest(artifact_dir=artifact_dir, **values)


def _move_trace(trace_dir: Path, traces_root: Path) -> Path:
    """The trace dir under ``traces_root`` (profile_on writes under the home's traces dir)."""
    target = traces_root / trace_dir.name
    if trace_dir.resolve() == target.resolve():
        return trace_dir
    traces_root.mkdir(parents=True, exist_ok=True)
    shutil.move(str(trace_dir), str(target))
    return target


def run_job_here(job: Job, entry: DeviceEntry, *, artifact_dir: Path, traces_root: Path,
                 lock_wait_s: float = LOCK_WAIT_S) -> JobOutcome:
    """Run ``job`` on ``entry`` (attached to this host) and say how it went; see the module docstring.

    ``lock_wait_s``: how long to wait for a device another job (or process) holds before giving up
    with a transient "busy" outcome."""
    from edgekit.profile.run import default_python, new_run_id, profile_on

    started = time.monotonic()
    try:
        with device_lock(entry.name, wait_s=lock_wait_s):
            request = _request(job, artifact_dir, entry)
            device = connect(entry, timeout_s=CONNECT_TIMEOUT_S)
            try:
                result = profile_on(
                    device,
                    request,
                    workdir=entry.resolved_workdir(),
                    python=entry.python or default_python(entry.origin),
                    device_class=entry.tags.device_class,
                    run_id=new_run_id(entry.name),
                )
            finally:
                with contextlib.suppress(Exception):
                    device.close()
        trace_dir = _move_trace(result.trace_dir, traces_root)
    except Exception as exc:
        status, reason = classify(exc)
        return JobOutcome(status, reason, None, time.monotonic() - started)
    return JobOutcome("ok", None, trace_dir, time.monotonic() - started)


def default_traces_root() -> Path:
    """Where a job's trace lands on this host when the caller has no other place for it."""
    return paths.home() / "traces"
