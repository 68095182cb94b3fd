"""One profiling run, host side: push, condition, run the agent on the device, pull, validate, compute.

Steps, in order: read the artifact's manifest and check the workload fits it; pick the runner (one rule,
``runner.choose_runner``) and prepare it on the device (its code pushed once per version, its runtime
checked before anything runs); push the artifact (content-addressed, verified); cool the device down; run
the agent with a timeout, the prompt ids and the device facts pushed into its run directory; pull
``trace.jsonl``/``summary.json``/``runner.stderr`` into ``<edgekit home>/traces/<run-id>/``; validate the
trace once (``trace.load_trace``) and compute the metrics once (``metrics.compute_metrics``).

Failure policy:
- a command that times out is killed on the device by the transport; this module then checks ``ps`` for
  anything of the run left and kills it, keeps what trace there is, and raises ``ProfileTimeout``;
- a device that drops mid-run (``DeviceUnreachable``) is retried ``retries`` times from a fresh remote
  run directory; first, once the device answers again, whatever the lost attempt left running is killed
  with its process group (a dropped connection does not stop the agent on a device that stayed up, and a
  retry beside it would measure two workloads at once); the files of the lost attempt are kept under
  ``<run-id>/attempt-N/`` with a ``PARTIAL.json`` saying why; then ``DeviceLost``;
- a runner that cannot load the artifact raises ``OutOfMemory`` or ``RunnerFailed`` (from its trace);
- a repetition that fails inside the agent is not retried: the trace records it and the rest continue.

This module owns no metric (``metrics.py``), no trace rule (``trace.py``) and no runner (``runner.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import posixpath
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit import paths
from edgekit.devices.base import CommandResult, Device
from edgekit.errors import (
    CommandTimeout,
    DeviceLost,
    DeviceUnreachable,
    EdgekitError,
    NoTrace,
    OutOfMemory,
    ProfileError,
    ProfileTimeout,
    RunnerFailed,
    WorkloadError,
)
from edgekit.manifest import Manifest, read_manifest
from edgekit.profile import remote
from edgekit.profile.conditioning import Conditioning, cool_down
from edgekit.profile.metrics import ProfileMetrics, compute_metrics
from edgekit.profile.runner import (
    Prepared,
    RunFiles,
    Target,
    choose_runner,
    device_facts,
    run_inputs,
)
from edgekit.profile.trace import Trace, load_trace
from edgekit.workload import Workload

REOPEN_WAIT_S = 60.0  # how long a dropped device may take to come back before the run is given up


@dataclass
class ProfileRequest:
    artifact_dir: Path
    workload: Workload = dataclasses.field(default_factory=Workload)
    retries: int = 1  # extra attempts when the device drops mid-run
    agent_args: tuple[str, ...] = ()  # extra Python-agent flags (test hooks)


@dataclass
class ProfileResult:
    run_id: str
    device: str
    trace_dir: Path
    trace: Trace
    metrics: ProfileMetrics
    manifest: Manifest
    conditioning: Conditioning
    host_wall_s: float  # around the remote command, on the host's monotonic clock
    command_start_ns: int
    command_end_ns: int
    exit_code: int
    attempts: int
    runner: str
    runtime_version: str | None

    @property
    def agent_span_s(self) -> float:
        """The agent's own span: its first record to its footer, on the device's monotonic clock."""
        stamps = [e["ts_ns"] for e in self.trace.events] + [s["ts_ns"] for s in self.trace.samples]
        return (self.trace.footer["ts_ns"] - min(stamps)) / 1e9


def new_run_id(device: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", device)
    return f"{stamp}-{safe}-{secrets.token_hex(3)}"


def default_python(origin: str | None) -> str:
    """The device's Python: the host interpreter for emulated boards (they see it read-only)."""
    return sys.executable if origin == "emulator" else "python3"


def _prepare(device: Device, request: ProfileRequest, manifest: Manifest, target: Target,
             device_class: str | None) -> Prepared:  # fmt: skip
    runner = choose_runner(request.workload.runner, device_class, manifest.runtime)
    prepared = runner.prepare(target, manifest.runtime)
    if request.agent_args:
        if prepared.kind != "python":
            raise WorkloadError("test hooks (agent_args) are a Python-agent feature")
        prepared = dataclasses.replace(prepared, extra_args=tuple(request.agent_args))  # type: ignore[type-var]
    return prepared


def profile_on(
    device: Device,
    request: ProfileRequest,
    *,
    workdir: str,
    python: str = "python3",
    device_class: str | None = None,
    reopen: Callable[[], Device] | None = None,
    run_id: str | None = None,
) -> ProfileResult:
    """Profile ``request.artifact_dir`` on an open ``device`` (see the module docstring)."""
    from edgekit.devices.push import push_artifact

    artifact_dir = Path(request.artifact_dir).expanduser().resolve()
    manifest = read_manifest(artifact_dir)
    workload = request.workload
    workload.check_fits(manifest.max_context, f"artifact {artifact_dir.name}")
    facts = device_facts(device)
    target = Target(device, workdir, str(facts["abi"]) if facts.get("abi") else None, python)
    prepared = _prepare(device, request, manifest, target, device_class)
    pushed = push_artifact(device, artifact_dir, workdir)
    run_id = run_id or new_run_id(device.name)
    trace_dir = paths.home() / "traces" / run_id
    trace_dir.mkdir(parents=True, exist_ok=True)
    conditioning = cool_down(device, max_wait_s=workload.cooldown_s, threshold_c=workload.threshold_c)
    inputs = run_inputs(manifest, workload, facts)

    attempts = 0
    while True:
        attempts += 1
        remote_dir = posixpath.join(workdir, "runs", run_id, f"attempt-{attempts}")
        files = RunFiles.in_run_dir(pushed.remote_path, pushed.sha256, remote_dir)
        attempt = remote.Attempt(device, prepared.argv(manifest, workload, files), remote_dir, inputs)
        try:
            result = attempt.run(workload.effective_timeout_s)
            break
        except CommandTimeout as exc:
            left = remote.kill_leftovers(device, remote_dir)
            with contextlib.suppress(DeviceUnreachable):
                remote.pull_files(device, remote_dir, trace_dir)
            remote.write_json(trace_dir / "host.json", remote.host_facts(
                run_id, device, attempt, conditioning, attempts, None, prepared.kind, "timeout"))  # fmt: skip
            raise ProfileTimeout(device.name, workload.effective_timeout_s, trace_dir, left) from exc
        except DeviceUnreachable as exc:
            if attempts <= request.retries and reopen is not None:
                device = remote.reopen_device(device, reopen, REOPEN_WAIT_S)
            left = _stop_lost_attempt(device, remote_dir)
            remote.keep_partial(device, remote_dir, trace_dir / f"attempt-{attempts}", str(exc))
            if attempts > request.retries:
                raise DeviceLost(device.name, attempts, trace_dir, str(exc)) from exc
            if left:
                raise DeviceLost(device.name, attempts, trace_dir, f"{exc}; and the lost attempt's processes "
                                 f"survived SIGKILL, so a retry would run beside them: {'; '.join(left)}") from exc

    # The run finished: a drop while its files come back costs a reconnect and a second pull, not the run.
    pulls = 0
    while True:
        pulls += 1
        try:
            trace = _collect(device, remote_dir, trace_dir, result, attempt, run_id, conditioning, attempts,
                             prepared)  # fmt: skip
            break
        except DeviceUnreachable:
            if pulls > request.retries or reopen is None:
                raise
            device = remote.reopen_device(device, reopen, REOPEN_WAIT_S)
    metrics = compute_metrics(trace, manifest)
    remote.write_json(trace_dir / "metrics.json", metrics.to_dict())
    with contextlib.suppress(EdgekitError):
        device.run(["rm", "-rf", posixpath.join(workdir, "runs", run_id)], timeout_s=60.0)
    return ProfileResult(
        run_id=run_id, device=device.name, trace_dir=trace_dir, trace=trace, metrics=metrics, manifest=manifest,
        conditioning=conditioning, host_wall_s=attempt.wall_s, command_start_ns=attempt.start_ns,
        command_end_ns=attempt.end_ns, exit_code=result.exit_code, attempts=attempts, runner=prepared.kind,
        runtime_version=prepared.runtime_version,
    )  # fmt: skip


def stop_stale_runs(device: Device, workdir: str) -> None:
    """Kill every edgekit run still going on the device (an agent whose host dropped it, was SIGKILLed or
    gave up on it), so what is measured next runs alone. Only for a caller that holds the device's lock:
    then nothing under ``<workdir>/runs/`` can be another live run of this host. ``ProfileError`` when a
    process survives SIGKILL."""
    left = remote.kill_leftovers(device, posixpath.join(workdir, "runs") + "/")
    if left:
        raise ProfileError(f"device '{device.name}': an earlier run's processes survive SIGKILL, so a new run "
                           f"would be measured beside them: {'; '.join(left)[:300]}")


def _stop_lost_attempt(device: Device, remote_dir: str) -> list[str]:
    """Kill what a lost attempt left running; what survived (empty when the device does not answer: then
    the next attempt fails the same way, and nothing of it can run beside the old agent)."""
    try:
        return remote.kill_leftovers(device, remote_dir)
    except EdgekitError:
        return []


def _collect(device: Device, remote_dir: str, trace_dir: Path, result: CommandResult, attempt: remote.Attempt,
             run_id: str, conditioning: Conditioning, attempts: int, prepared: Prepared) -> Trace:  # fmt: skip
    """Pull the finished run's files and validate its trace (once); the runner's load failure raised typed."""
    pulled = remote.pull_files(device, remote_dir, trace_dir)
    remote.write_json(trace_dir / "host.json", remote.host_facts(
        run_id, device, attempt, conditioning, attempts, result, prepared.kind, "finished"))  # fmt: skip
    if "trace.jsonl" not in pulled:
        raise NoTrace(device.name, result.exit_code, (result.stderr_tail(1500) or result.text()[-1500:]).strip())
    trace = load_trace(trace_dir / "trace.jsonl")
    failed_load = [e for e in trace.events if e["name"] == "error" and e["run"] < 0]
    if failed_load:
        first = failed_load[0]
        reason, message = str(first.get("reason")), str(first.get("message"))
        error = OutOfMemory if reason == "oom" else RunnerFailed
        raise error(device.name, reason, message, trace_dir)
    return trace


def profile(
    request: ProfileRequest,
    device_name: str | None = None,
    *,
    inventory: str | Path | None = None,
    python: str | None = None,
    lock_wait_s: float = 0.0,
) -> ProfileResult:
    """Profile on the inventory device ``device_name`` (``local`` when None), holding the device's lock so a
    farm or another edgekit on this host never measures beside this run (``DeviceBusy`` when one does)."""
    from edgekit import inventory as inv
    from edgekit.devices.lock import device_lock

    entry = inv.get(device_name, inventory)
    with device_lock(entry.name, wait_s=lock_wait_s):
        device = inv.connect(entry)
        try:
            stop_stale_runs(device, entry.resolved_workdir())
            return profile_on(
                device,
                request,
                workdir=entry.resolved_workdir(),
                python=python or entry.python or default_python(entry.origin),
                device_class=entry.tags.device_class,
                reopen=lambda: inv.connect(entry),
            )
        finally:
            with contextlib.suppress(EdgekitError):
                device.close()
