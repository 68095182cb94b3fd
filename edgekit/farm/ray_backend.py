"""The Ray backend: farm jobs run as Ray tasks on the node that has the job's device attached.

Each host with devices runs a node (``ray_node``) advertising one custom resource per device; a job's
task requests its device's resource (amount 1, ``num_cpus=0``), so Ray can place it only there. The
artifact travels through the object store, put once per content sha, and is unpacked into the node's
edgekit cache (a node that has it already never fetches it). The task runs ``job.run_job_here`` and
returns the trace directory as ``{relative path: bytes}``; the driver writes it under its own traces
directory, so results reach the driver's store and nowhere else.

Failure policy: Ray never retries a task (``max_retries=0``): the farm scheduler owns retries. A node
that dies under a task (``NodeDiedError``, a crashed worker, a lost object) and a device whose node is
absent from the cluster for ``resource_wait_s`` both give a *transient* outcome, so the scheduler
retries (a returned node re-advertises the resource) and, after its retries, records the cell failed.
Every wait is bounded, so the driver never hangs on a lost node.

This module must not import Ray at module level (``edgekit[ray]`` is optional) and must not write
the store (the scheduler ingests).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edgekit import limits, paths
from edgekit.errors import ConfigError, LimitExceeded, UnknownName
from edgekit.farm.backend import Job, JobOutcome, OutcomeStatus, device_resource
from edgekit.farm.ray_node import (
    INVENTORY_ENV,
    KV_DEVICE_PREFIX,
    KV_NAMESPACE,
    RayNodeError,
    entry_from_record,
    import_ray,
    is_loopback,
)
from edgekit.inventory import DeviceEntry
from edgekit.manifest import plain_name

CONNECT_TIMEOUT_S = 60.0
RESOURCE_WAIT_S = 60.0  # how long a job waits for its device's node to be (back) in the cluster
JOB_TIMEOUT_S = 3600.0  # a bound on one job's task, whatever the profile's own timeouts say
POLL_S = 0.5
STOP_WAIT_S = 60.0  # how long a cancelled job's clean-up on its node may take
_NODES_TTL_S = 1.0
_ARTIFACT_CACHE = "farm-artifacts"


class _NoSigtermNotice(logging.Filter):
    """Ray warns that a driver joined off the main thread gets no SIGTERM handler; the farm has its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")


# ---- the node side (runs inside a Ray task) ----


def _node_entry(name: str) -> DeviceEntry:
    """The device as the node's own inventory has it (its origin decides the device's Python)."""
    from edgekit import inventory

    entry = inventory.get(name, os.environ.get(INVENTORY_ENV) or None)
    if entry.origin == "builtin":
        raise UnknownName("device", name, [e.name for e in inventory.load(os.environ.get(INVENTORY_ENV))])
    return entry


def _unpack_artifact(sha: str, box: list[Any]) -> Path:
    """The artifact in this node's cache, fetched from the object store only when it is not there.

    The tree is unpacked beside its place and renamed into it, so a directory named by the sha is
    always complete (nothing may be added to it: the artifact's content address covers every file)."""
    import ray

    root = paths.cache_dir(_ARTIFACT_CACHE)
    target = root / sha
    if target.is_dir():
        return target
    data = ray.get(box[0], timeout=600)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=root))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(tmp, filter="data")
        try:
            tmp.rename(target)
        except OSError:  # another task of this node unpacked it first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# What the host writes into a trace folder beside the pulled files (host.json, metrics.json).
_HOST_FILES_BYTES = 16 << 20


def _read_tree(directory: Path, device: str) -> dict[str, bytes]:
    """A trace folder as the bytes Ray ships to the driver: refused (``LimitExceeded``) from the files'
    sizes, before any is read, when it holds more than one run may pull (plus the host's own files), so a
    broken device cannot make the node, then the driver, hold more than that."""
    files = [p for p in sorted(directory.rglob("*")) if p.is_file()]
    caps = limits.current()
    total = sum(p.stat().st_size for p in files)
    if total > caps.pull_run_bytes + _HOST_FILES_BYTES:
        raise LimitExceeded(device, f"trace folder {directory.name} ({total} bytes)", caps.describe("pull_run_bytes"))
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


def node_job(job: Job, box: list[Any]) -> dict[str, Any]:
    """The body of a job's Ray task on the device's node; returns plain data for the driver."""
    import ray

    from edgekit.farm.job import classify, default_traces_root, run_job_here

    started = time.monotonic()
    where = {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
             "edgekit_home": str(paths.home())}
    try:
        entry = _node_entry(job.device)
        artifact_dir = _unpack_artifact(job.artifact_sha, box)
    except Exception as exc:
        status, reason = classify(exc)
        return {"status": status, "reason": reason, "seconds": time.monotonic() - started, **where}
    outcome = run_job_here(job, entry, artifact_dir=artifact_dir, traces_root=default_traces_root())
    result: dict[str, Any] = {"status": outcome.status, "reason": outcome.reason, "seconds": outcome.seconds,
                              **where}
    if outcome.trace_dir is not None:
        try:
            files = _read_tree(outcome.trace_dir, job.device)
        except LimitExceeded as exc:
            status, reason = classify(exc)
            return {**result, "status": status, "reason": reason}
        result["trace_name"] = outcome.trace_dir.name
        result["files"] = files
    return result


def node_stop_job(job: Job) -> list[str]:
    """On the device's node: kill what a cancelled job left running on the device (Ray's cancel kills the
    worker process, not the agent it started on the device); what survived."""
    from edgekit.farm.job import stop_job

    return stop_job(job, _node_entry(job.device))


# ---- the driver side ----


def _pack(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    return buffer.getvalue()


def _node_name(value: object, what: str) -> str:
    """A name a node sent back, checked to be a plain name before it becomes a path on the driver: a
    node is another host, and '..' or '/x' there would make the driver delete and rename outside its
    traces folder."""
    try:
        return plain_name(value if isinstance(value, str) else "")
    except ValueError:
        raise RayNodeError(f"a node sent back {what} {value!r}: it must be a plain name (no '/', not '..')") \
            from None


def _write_trace(traces_root: Path, name: str, files: dict[str, bytes]) -> Path:
    """Write a returned trace dir atomically: a temp dir beside the target, then one rename. Every name
    in it comes from a node, so each is checked first (``_node_name``): nothing is written otherwise."""
    name = _node_name(name, "the trace name")
    if not isinstance(files, dict):
        raise RayNodeError(f"a node sent back trace files as {type(files).__name__}, not a mapping")
    for rel in files:
        for part in str(rel).split("/"):
            _node_name(part, f"the trace file path {rel!r} with the part")
    traces_root.mkdir(parents=True, exist_ok=True)
    target = traces_root / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=traces_root))
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _reachable(address: str, timeout_s: float) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


class RayBackend:
    """Runs farm jobs on the devices of a Ray cluster's edgekit nodes (see the module docstring)."""

    def __init__(
        self,
        address: str,
        *,
        traces_root: Path | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        resource_wait_s: float = RESOURCE_WAIT_S,
        job_timeout_s: float = JOB_TIMEOUT_S,
    ) -> None:
        from edgekit.farm.job import default_traces_root

        self.address = address
        self._traces_root = traces_root or default_traces_root()
        self._resource_wait_s = resource_wait_s
        self._job_timeout_s = job_timeout_s
        self._ray = import_ray(loopback=is_loopback(address))
        self._connect(connect_timeout_s)
        self._remote = self._ray.remote(num_cpus=0, max_retries=0, retry_exceptions=False)(node_job)
        self._remote_stop = self._ray.remote(num_cpus=0, max_retries=0, retry_exceptions=False)(node_stop_job)
        self._artifacts: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._put_lock = threading.Lock()
        self._nodes_at = 0.0
        self._nodes: list[dict[str, Any]] = []
        self._closed = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="farm-ray")
        self.placements: list[tuple[str, str]] = []  # (device, node id) of each finished task

    def _connect(self, timeout_s: float) -> None:
        ray = self._ray
        if not _reachable(self.address, min(timeout_s, 10.0)):
            raise RayNodeError(f"no Ray cluster at {self.address}: nothing accepts connections there")
        if ray.is_initialized():
            ray.shutdown()
        failure: list[BaseException] = []

        def init() -> None:
            try:
                ray.init(address=self.address, namespace=KV_NAMESPACE, log_to_driver=False,
                         logging_level=logging.WARNING)
            except BaseException as exc:
                failure.append(exc)

        logging.getLogger("ray._private.worker").addFilter(_NoSigtermNotice())
        thread = threading.Thread(target=init, name="ray-init", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            raise RayNodeError(f"could not join the Ray cluster at {self.address} within {timeout_s:g}s")
        if failure:
            raise RayNodeError(f"could not join the Ray cluster at {self.address}: {failure[0]}") from failure[0]

    # -- what the cluster has --

    def _alive_nodes(self) -> list[dict[str, Any]]:
        with self._lock:
            if time.monotonic() - self._nodes_at > _NODES_TTL_S:
                self._nodes = [n for n in self._ray.nodes() if n.get("Alive")]
                self._nodes_at = time.monotonic()
            return self._nodes

    def _has_resource(self, resource: str) -> bool:
        return any(resource in n.get("Resources", {}) for n in self._alive_nodes())

    def devices(self) -> list[DeviceEntry]:
        """Devices published by the cluster's nodes whose node is alive now; a device name advertised by
        two nodes is an error (Ray could place its jobs on either)."""
        from ray.experimental import internal_kv

        keys = internal_kv._internal_kv_list(KV_DEVICE_PREFIX, namespace=KV_NAMESPACE)
        entries: list[DeviceEntry] = []
        for key in sorted(keys):
            value = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
            if value is None:
                continue
            entry = entry_from_record(json.loads(value))
            resource = device_resource(entry.name)
            owners = [n for n in self._alive_nodes() if resource in n.get("Resources", {})]
            if len(owners) > 1:
                raise ConfigError(f"device '{entry.name}' is advertised by {len(owners)} Ray nodes "
                                  f"({', '.join(str(n.get('NodeID', '?'))[:12] for n in owners)}); "
                                  "device names must be unique across the cluster")
            if owners:
                entries.append(entry)
        return entries

    # -- jobs --

    def submit(self, job: Job) -> concurrent.futures.Future[JobOutcome]:
        if self._closed.is_set():
            raise RayNodeError("the Ray backend is closed")
        return self._pool.submit(self._run, job)

    def _artifact_ref(self, job: Job) -> Any:
        with self._put_lock:  # one put per sha; its own lock so a big put does not stall node polling
            ref = self._artifacts.get(job.artifact_sha)
            if ref is None:
                ref = self._artifacts[job.artifact_sha] = self._ray.put(_pack(Path(job.artifact_dir)))
            return ref

    def _wait_for_resource(self, resource: str) -> bool:
        deadline = time.monotonic() + self._resource_wait_s
        while not self._has_resource(resource):
            if time.monotonic() > deadline or self._closed.wait(POLL_S):
                return False
        return True

    def _run(self, job: Job) -> JobOutcome:
        started = time.monotonic()
        try:
            return self._run_task(job, started)
        except Exception as exc:  # the object store, the GCS: never let one job take the driver down
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            return JobOutcome("transient", f"Ray could not run the job: {type(exc).__name__}: {reason}", None,
                              time.monotonic() - started)

    def _run_task(self, job: Job, started: float) -> JobOutcome:
        def outcome(status: OutcomeStatus, reason: str) -> JobOutcome:
            return JobOutcome(status, reason, None, time.monotonic() - started)

        resource = device_resource(job.device)
        if not self._wait_for_resource(resource):
            return outcome("transient", f"device '{job.device}': no Ray node advertising it is in the cluster "
                                        f"(waited {self._resource_wait_s:g}s)")
        ref = self._remote.options(resources={resource: 1.0}, name=f"farm:{job.device}:{job.cell_key[:12]}") \
            .remote(job, [self._artifact_ref(job)])
        waiting_since: float | None = None  # when the device's node was first seen gone
        while True:
            ready, _ = self._ray.wait([ref], timeout=POLL_S)
            if ready:
                break
            now = time.monotonic()
            problem = None
            if self._closed.is_set():
                problem = "the farm stopped before the job finished"
            elif now - started > self._job_timeout_s:
                problem = f"the job's Ray task did not finish within {self._job_timeout_s:g}s"
            elif self._has_resource(resource):
                waiting_since = None
            elif waiting_since is None:
                waiting_since = now
            elif now - waiting_since > self._resource_wait_s:
                problem = (f"device '{job.device}': its Ray node left the cluster and did not return within "
                           f"{self._resource_wait_s:g}s")
            if problem:
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)
                self._stop_on_node(job, resource)
                return outcome("transient", problem)
        return self._collect(job, ref, started)

    def _stop_on_node(self, job: Job, resource: str) -> None:
        """After a cancel: kill the job's agent on the device from its node, bounded (a node that left the
        cluster cannot; the device's next job clears what is left)."""
        if not self._has_resource(resource):
            return
        ref = self._remote_stop.options(resources={resource: 1.0}).remote(job)
        ready, _ = self._ray.wait([ref], timeout=STOP_WAIT_S)
        if not ready:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)

    def abandon(self, job: Job) -> None:
        """Nothing here: closing the backend cancels the job's task and stops its agent (``_stop_on_node``)."""

    def _collect(self, job: Job, ref: Any, started: float) -> JobOutcome:
        exceptions = self._ray.exceptions
        try:
            result = self._ray.get(ref, timeout=60)
        except exceptions.RayTaskError as exc:  # the task's own code raised: a bug, not the device
            reason = " ".join(str(exc.cause if exc.cause is not None else exc).split())[:400]
            return JobOutcome("permanent", f"job task failed on its node: {reason}", None,
                              time.monotonic() - started)
        except (exceptions.RayError, TimeoutError) as exc:  # node died, worker crashed, object lost
            reason = " ".join(str(exc).split())[:300]
            return JobOutcome("transient", f"Ray node running device '{job.device}' failed: "
                                           f"{type(exc).__name__}: {reason}", None, time.monotonic() - started)
        with self._lock:
            self.placements.append((job.device, str(result.get("node_id"))))
        trace_dir = None
        if result.get("trace_name"):
            try:
                trace_dir = _write_trace(self._traces_root, result["trace_name"], result.get("files", {}))
            except RayNodeError as exc:  # the node's answer is malformed: the same node would send it again
                return JobOutcome("permanent", str(exc), None, time.monotonic() - started)
        return JobOutcome(result["status"], result.get("reason"), trace_dir, float(result["seconds"]))

    def close(self) -> None:
        """Stop waiting for running jobs (their tasks are cancelled) and leave the cluster."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(Exception):
            self._ray.shutdown()


__all__ = ["RayBackend", "node_job"]
