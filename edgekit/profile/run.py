"""One profiling run, host side: push, condition, run the agent on the device, pull, validate, compute.

Steps, in order: read the artifact's manifest; pick the runner (python agent, or the native runner on
phones); push the agent (once per version) and check that the device's Python can import the runtime
the artifact needs (before anything runs); push the artifact (content-addressed, verified); cool the
device down; run the agent with a timeout; pull ``trace.jsonl``/``summary.json``/``runner.stderr`` into
``<edgekit home>/traces/<run-id>/``; validate the trace (``trace.load_trace``) and compute the metrics
(``metrics.compute_metrics``).

Failure policy:
- a command that times out is killed on the device by the transport; this module then checks ``ps`` for
  anything of the run left and kills it, keeps what trace there is, and raises ``ProfileTimeout``;
- a device that drops mid-run (``DeviceUnreachable``) is retried ``retries`` times from a fresh remote
  run directory; the files of the lost attempt are kept under ``<run-id>/attempt-N/`` with a
  ``PARTIAL.json`` saying why;
- a repetition that fails inside the agent is not retried: the trace records it and the rest continue.

This module owns no metric (``metrics.py``) and no trace rule (``trace.py``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import posixpath
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekit import paths
from edgekit.devices.base import CommandResult, CommandTimeout, Device, DeviceUnreachable, TransportError
from edgekit.errors import EdgekitError
from edgekit.export import manifest as mf
from edgekit.profile import agent as agent_mod
from edgekit.profile import native
from edgekit.profile.conditioning import DEFAULT_THRESHOLD_C, Conditioning, cool_down
from edgekit.profile.errors import NativeRunnerMissing, ProfileError, ProfileTimeout
from edgekit.profile.metrics import ProfileMetrics, compute_metrics
from edgekit.profile.trace import Trace, load_trace

RunnerChoice = Literal["auto", "python", "native"]
TRACE_FILES = ("trace.jsonl", "summary.json", "runner.stderr")
REOPEN_WAIT_S = 60.0  # how long a dropped device may take to come back before the run is given up


@dataclass
class ProfileRequest:
    artifact_dir: Path
    prompt_len: int = 50
    gen_len: int = 50
    runs: int = 5
    warmup: int = 1
    threads: int = 2
    sample_ms: int = 20
    baseline_s: float = 1.0
    cooldown_s: float = 10.0
    threshold_c: float = DEFAULT_THRESHOLD_C
    runner: RunnerChoice = "auto"
    python: str | None = None  # the device's Python; default: python3
    timeout_s: float | None = None  # default: estimated generously from the workload
    retries: int = 1  # extra attempts when the device drops mid-run
    agent_args: list[str] = field(default_factory=list)  # extra agent flags (test hooks)

    def workload_flags(self, *, integer_baseline: bool = False) -> dict[str, str]:
        """The workload as agent options (the sh agent takes whole seconds of baseline)."""
        baseline = str(round(self.baseline_s)) if integer_baseline else f"{self.baseline_s:g}"
        return {
            "--prompt-len": str(self.prompt_len),
            "--gen-len": str(self.gen_len),
            "--warmup": str(self.warmup),
            "--runs": str(self.runs),
            "--threads": str(self.threads),
            "--sample-ms": str(self.sample_ms),
            "--baseline-s": baseline,
        }

    def default_timeout_s(self) -> float:
        repetitions = self.runs + self.warmup
        # Generous: 2 s per token and repetition on the slowest device we expect, plus load time.
        return 300.0 + self.baseline_s + repetitions * (self.prompt_len * 0.2 + self.gen_len * 2.0)


@dataclass
class ProfileResult:
    run_id: str
    device: str
    trace_dir: Path
    trace: Trace
    metrics: ProfileMetrics
    manifest: dict[str, Any]
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
    """The device's Python: the host interpreter for emulated devices (they see it read-only)."""
    return sys.executable if origin == "emulator" else "python3"


def choose_runner(choice: RunnerChoice, device_class: str | None) -> Literal["python", "native"]:
    if choice == "auto":
        return "native" if device_class == "phone" else "python"
    return choice


def _push_artifact(device: Device, artifact_dir: Path, workdir: str) -> tuple[str, str]:
    from edgekit.devices.push import push_artifact

    result = push_artifact(device, artifact_dir, workdir)
    return result.remote_path, result.sha256


def _device_json(device: Device) -> dict[str, Any]:
    info = device.info()
    return {
        "name": device.name,
        "model": info.model,
        "soc": info.soc,
        "cores": info.cores,
        "abi": info.abi,
        "os": info.os_version,
    }


def _pull_files(device: Device, remote_dir: str, local_dir: Path) -> list[str]:
    local_dir.mkdir(parents=True, exist_ok=True)
    pulled = []
    for name in TRACE_FILES:
        with contextlib.suppress(TransportError):
            device.pull(posixpath.join(remote_dir, name), str(local_dir / name))
            pulled.append(name)
    return pulled


def leftover_processes(device: Device, marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of device processes whose command line contains ``marker``."""
    result = device.run(["ps", "-eo", "pid,args"], timeout_s=30.0)
    if not result.ok:
        result = device.run(["ps", "-A", "-o", "pid,args"], timeout_s=30.0)
    found = []
    for line in result.text().splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit() and marker in args and " ps " not in f" {args} ":
            found.append((int(pid), args.strip()))
    return found


def kill_leftovers(device: Device, marker: str, attempts: int = 3) -> list[str]:
    """Kill every process of the run that is still there; what survives (normally nothing)."""
    left = leftover_processes(device, marker)
    for _ in range(attempts):
        if not left:
            return []
        device.run(["kill", "-9", *(str(pid) for pid, _ in left)], timeout_s=30.0)
        time.sleep(0.2)
        left = leftover_processes(device, marker)
    return [args for _, args in left]


class _Attempt:
    """One execution of the agent in its own remote run directory."""

    def __init__(self, device: Device, argv: list[str], remote_dir: str, device_json: dict[str, Any]) -> None:
        self.device = device
        self.remote_dir = remote_dir
        self.argv = argv
        self.device_json = device_json
        self.start_ns = self.end_ns = 0

    def run(self, timeout_s: float) -> CommandResult:
        self.device.run(["mkdir", "-p", self.remote_dir], timeout_s=30.0, check=True)
        with tempfile.TemporaryDirectory(prefix="edgekit-profile-") as tmp:
            local = Path(tmp) / "device.json"
            local.write_text(json.dumps(self.device_json))
            self.device.push(str(local), posixpath.join(self.remote_dir, "device.json"))
        self.start_ns = time.monotonic_ns()
        try:
            result = self.device.run(self.argv, timeout_s=timeout_s)
        finally:
            self.end_ns = time.monotonic_ns()
        if result.exit_code == 255:
            # The agent never exits 255 (0 ok, 1 failed, 143 terminated); ssh does when the connection
            # dies under a command that had started, which the transport cannot tell from an exit code.
            raise DeviceUnreachable(
                self.device.name,
                f"connection lost while the agent ran (exit 255): {result.stderr_tail(300).strip() or 'no message'}",
            )
        return result


def profile_on(
    device: Device,
    request: ProfileRequest,
    *,
    workdir: str,
    python: str | None = None,
    device_class: str | None = None,
    reopen: Callable[[], Device] | None = None,
    run_id: str | None = None,
) -> ProfileResult:
    """Profile ``request.artifact_dir`` on an open ``device`` (see the module docstring)."""
    artifact_dir = Path(request.artifact_dir).expanduser().resolve()
    manifest = mf.read_manifest(artifact_dir)
    runtime = str(manifest.get("runtime"))
    runner = choose_runner(request.runner, device_class)
    device_json = _device_json(device)
    pushed: agent_mod.PushedAgent | None = None
    bundle: native.NativeBundle | None = None
    runtime_version: str | None
    if runner == "native":
        if runtime != "executorch":
            raise NativeRunnerMissing(
                f"the native runner runs .pte (executorch) artifacts; {artifact_dir.name} "
                f"is for {runtime}: profile it with --runner python"
            )
        bundle = native.push_bundle(device, workdir, device_json.get("abi"))
        runtime_version = None
    else:
        python = python or request.python or "python3"
        pushed = agent_mod.push_agent(device, workdir)
        runtime_version = agent_mod.check_runtime(device, python, runtime, posixpath.dirname(pushed.remote_path))
    artifact_remote, sha256 = _push_artifact(device, artifact_dir, workdir)

    def agent_argv(remote_dir: str) -> list[str]:
        device_json_path = posixpath.join(remote_dir, "device.json")
        if bundle is not None:
            return native.agent_argv(
                bundle,
                manifest,
                artifact_remote,
                remote_dir,
                sha256,
                device_json_path,
                request.workload_flags(integer_baseline=True),
            )
        assert pushed is not None and python is not None
        flags = [item for pair in request.workload_flags().items() for item in pair]
        return [
            python,
            pushed.remote_path,
            "--artifact",
            artifact_remote,
            "--out",
            remote_dir,
            "--artifact-sha256",
            sha256,
            "--device-json",
            device_json_path,
            *flags,
            *request.agent_args,
        ]

    run_id = run_id or new_run_id(device.name)
    trace_dir = paths.home() / "traces" / run_id
    trace_dir.mkdir(parents=True, exist_ok=True)
    timeout_s = request.timeout_s or request.default_timeout_s()
    conditioning = cool_down(device, max_wait_s=request.cooldown_s, threshold_c=request.threshold_c)

    attempts = 0
    while True:
        attempts += 1
        remote_dir = posixpath.join(workdir, "runs", run_id, f"attempt-{attempts}")
        attempt = _Attempt(device, agent_argv(remote_dir), remote_dir, device_json)
        try:
            result = attempt.run(timeout_s)
            break
        except CommandTimeout as exc:
            left = kill_leftovers(device, remote_dir)
            _pull_files(device, remote_dir, trace_dir)
            _write_json(
                trace_dir / "host.json",
                _host_facts(run_id, device, attempt, conditioning, attempts, None, pushed, "timeout"),
            )
            raise ProfileTimeout(device.name, timeout_s, trace_dir, left) from exc
        except DeviceUnreachable as exc:
            keep = trace_dir / f"attempt-{attempts}"
            _keep_partial(device, reopen, remote_dir, keep, str(exc))
            if attempts > request.retries:
                raise ProfileError(
                    f"device '{device.name}' dropped during the run {attempts} time(s); "
                    f"partial files kept in {trace_dir}: {exc}"
                ) from exc
            if reopen is not None:
                with contextlib.suppress(EdgekitError):
                    device.close()
                device = _reopen(reopen, REOPEN_WAIT_S)

    pulled = _pull_files(device, remote_dir, trace_dir)
    _write_json(
        trace_dir / "host.json",
        _host_facts(run_id, device, attempt, conditioning, attempts, result, pushed, "finished"),
    )
    if "trace.jsonl" not in pulled:
        tail = (result.stderr_tail(1500) or result.text()[-1500:]).strip()
        raise ProfileError(
            f"device '{device.name}': the agent exited with {result.exit_code} and wrote no trace: {tail}"
        )
    trace = load_trace(trace_dir / "trace.jsonl")
    failed_load = [e for e in trace.events if e["name"] == "error" and e["run"] < 0]
    if failed_load:
        first = failed_load[0]
        raise ProfileError(
            f"device '{device.name}': the agent could not run the artifact ({first.get('reason')}): "
            f"{first.get('message')}; trace kept in {trace_dir}"
        )
    metrics = compute_metrics(trace, manifest)
    _write_json(trace_dir / "metrics.json", metrics.to_dict())
    with contextlib.suppress(EdgekitError):
        device.run(["rm", "-rf", posixpath.join(workdir, "runs", run_id)], timeout_s=60.0)
    return ProfileResult(
        run_id=run_id,
        device=device.name,
        trace_dir=trace_dir,
        trace=trace,
        metrics=metrics,
        manifest=manifest,
        conditioning=conditioning,
        host_wall_s=(attempt.end_ns - attempt.start_ns) / 1e9,
        command_start_ns=attempt.start_ns,
        command_end_ns=attempt.end_ns,
        exit_code=result.exit_code,
        attempts=attempts,
        runner=runner,
        runtime_version=runtime_version,
    )


def _reopen(reopen: Callable[[], Device], wait_s: float) -> Device:
    """A freshly connected device, trying again (with backoff) while it is still coming back."""
    deadline = time.monotonic() + wait_s
    delay_s = 0.5
    while True:
        try:
            return reopen()
        except DeviceUnreachable:
            if time.monotonic() + delay_s > deadline:
                raise
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)


def _keep_partial(device: Device, reopen: Callable[[], Device] | None, remote_dir: str, keep: Path, why: str) -> None:
    """Pull what the lost attempt left (the device may be back already) and mark it partial."""
    keep.mkdir(parents=True, exist_ok=True)
    pulled: list[str] = []
    with contextlib.suppress(EdgekitError):
        pulled = _pull_files(device, remote_dir, keep)
    _write_json(keep / "PARTIAL.json", {"reason": "device lost mid-run", "error": why, "pulled": pulled})


def _host_facts(
    run_id: str,
    device: Device,
    attempt: _Attempt,
    conditioning: Conditioning,
    attempts: int,
    result: CommandResult | None,
    pushed: agent_mod.PushedAgent | None,
    outcome: str,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "device": device.name,
        "transport": device.transport,
        "outcome": outcome,
        "argv": attempt.argv,
        "exit_code": result.exit_code if result else None,
        "stderr_tail": result.stderr_tail(2000) if result else None,
        "command_start_ns": attempt.start_ns,
        "command_end_ns": attempt.end_ns,
        "host_wall_s": (attempt.end_ns - attempt.start_ns) / 1e9,
        "attempts": attempts,
        "agent": asdict(pushed) if pushed else "native",
        "conditioning": conditioning.to_dict(),
    }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def profile(
    request: ProfileRequest,
    device_name: str | None = None,
    *,
    inventory: str | Path | None = None,
    python: str | None = None,
) -> ProfileResult:
    """Profile on the inventory device ``device_name`` (``local`` when None)."""
    from edgekit.devices import inventory as inv

    entry = inv.get(device_name, inventory)
    device = inv.connect(entry)
    try:
        return profile_on(
            device,
            request,
            workdir=entry.resolved_workdir(),
            python=python or request.python or getattr(entry, "python", None) or default_python(entry.origin),
            device_class=entry.tags.device_class,
            reopen=lambda: inv.connect(entry),
        )
    finally:
        with contextlib.suppress(EdgekitError):
            device.close()
