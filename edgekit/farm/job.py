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
import posixpath
import shutil
import time
from pathlib import Path

from edgekit import paths
from edgekit.errors import ArtifactError, EdgekitError, OutOfMemory
from edgekit.farm.backend import Job, JobOutcome, OutcomeStatus
from edgekit.farm.locks import device_lock
from edgekit.inventory import DeviceEntry, connect

CONNECT_TIMEOUT_S = 20.0
LOCK_WAIT_S = 30.0  # a device held by another process this long counts as busy (transient)


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
    """(transient|permanent, one-line reason) for an exception of a job, decided by types only.

    The outermost ``EdgekitError`` of the chain decides through its ``retryable`` field (an error that
    wraps a timeout says itself whether it is worth another try). A host-side ``OSError`` (a socket, a
    pipe, ``ConnectionError``, ``TimeoutError``) is transient; any other exception is a bug: permanent."""
    reason = _one_line(exc)
    ours = next((e for e in _chain(exc) if isinstance(e, EdgekitError)), None)
    if isinstance(ours, OutOfMemory):
        return "permanent", f"out of memory on the device: {reason}"
    if ours is not None:
        if ours.retryable:
            return "transient", reason
        if isinstance(ours, ArtifactError):
            return "permanent", f"artifact rejected: {reason}"
        return "permanent", reason
    if isinstance(exc, OSError):
        return "transient", f"{type(exc).__name__}: {reason}"
    return "permanent", f"{type(exc).__name__}: {reason}"


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
    from edgekit.profile.run import ProfileRequest, default_python, new_run_id, profile_on, stop_stale_runs

    started = time.monotonic()
    try:
        with device_lock(entry.name, wait_s=lock_wait_s):
            # The farm retries, so the run itself does not.
            request = ProfileRequest(artifact_dir, job.workload, retries=0)
            device = connect(entry, timeout_s=CONNECT_TIMEOUT_S)
            try:
                stop_stale_runs(device, entry.resolved_workdir())
                result = profile_on(
                    device,
                    request,
                    workdir=entry.resolved_workdir(),
                    python=entry.python or default_python(entry.origin),
                    device_class=entry.tags.device_class,
                    run_id=job.run_id or new_run_id(entry.name),
                )
            finally:
                with contextlib.suppress(Exception):
                    device.close()
        trace_dir = _move_trace(result.trace_dir, traces_root)
    except Exception as exc:
        status, reason = classify(exc)
        return JobOutcome(status, reason, None, time.monotonic() - started)
    result.trace_dir = trace_dir
    result.trace.path = trace_dir / result.trace.path.name
    return JobOutcome("ok", None, trace_dir, time.monotonic() - started, result)


def stop_job(job: Job, entry: DeviceEntry) -> list[str]:
    """Kill what ``job`` left running on its device (an abandoned or cancelled job: the agent does not stop
    because the host stopped waiting for it); what survived. Bounded by the connect timeout and the kill."""
    from edgekit.profile.remote import kill_leftovers

    if not job.run_id:
        return []
    device = connect(entry, timeout_s=CONNECT_TIMEOUT_S)
    try:
        return kill_leftovers(device, posixpath.join(entry.resolved_workdir(), "runs", job.run_id) + "/")
    finally:
        with contextlib.suppress(Exception):
            device.close()


def default_traces_root() -> Path:
    """Where a job's trace lands on this host when the caller has no other place for it."""
    return paths.home() / "traces"
