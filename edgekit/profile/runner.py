"""The runner contract: what runs a workload on a device, and the one rule for picking it.

A runner is prepared once per device (``prepare``: its code pushed content-addressed, its runtime
checked) and then gives the command line of one run (``argv``). Two implementations: the Python agent
(``python_agent.py``, boards and emulated devices with a Python) and the native runner behind the POSIX
``sh`` agent (``native.py``, phones; a phone has no Python). Both take the same flags, built here from
one ``Workload`` and one ``Manifest`` (``common_flags``), write the same trace (device_agents/TRACE.md)
and receive the same prompt ids from the host.

This module runs nothing on a device beyond what ``prepare`` needs; ``run.py`` runs and pulls.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from edgekit.devices.base import Device
from edgekit.errors import DeviceUnreachable, NativeRunnerMissing, WorkloadError
from edgekit.manifest import Manifest
from edgekit.workload import RunnerChoice, Workload

RunnerKind = Literal["python", "native"]
# The inputs the host writes into a run's directory on the device.
DEVICE_JSON = "device.json"
PROMPT_IDS = "prompt_ids.txt"


@dataclass(frozen=True)
class RunFiles:
    """Where one run's inputs are on the device."""

    artifact_dir: str  # the pushed artifact (content-addressed)
    artifact_sha256: str
    out_dir: str  # the run directory: device.json and prompt_ids.txt are in it, the trace goes there
    device_json: str
    prompt_ids: str

    @classmethod
    def in_run_dir(cls, artifact_dir: str, artifact_sha256: str, out_dir: str) -> RunFiles:
        """The run's inputs under ``out_dir`` with their fixed names (``DEVICE_JSON``, ``PROMPT_IDS``)."""
        return cls(artifact_dir, artifact_sha256, out_dir, posixpath.join(out_dir, DEVICE_JSON),
                   posixpath.join(out_dir, PROMPT_IDS))  # fmt: skip


def common_flags(manifest: Manifest, workload: Workload, files: RunFiles) -> list[str]:
    """The flags both agents take, with the same names (device_agents/linux/edgekit_agent.py, agent.sh)."""
    return [
        "--model", posixpath.join(files.artifact_dir, manifest.artifact),
        "--runtime", manifest.runtime,
        "--model-id", manifest.model_id,
        "--recipe", manifest.recipe_name,
        "--artifact-sha256", files.artifact_sha256,
        "--out", files.out_dir,
        "--device-json", files.device_json,
        "--max-context", str(manifest.max_context),
        *workload.agent_flags(files.prompt_ids),
    ]  # fmt: skip


def device_facts(device: Device) -> dict[str, object]:
    """The device's facts as the trace header carries them, from the transport's live ``info()``: the host
    knows them for every runner, so no agent has to find them itself. A device that does not answer is
    ``DeviceUnreachable`` (retryable), not a device without facts: a runner chosen by ABI would be wrong."""
    info = device.info()
    if not info.reachable:
        raise DeviceUnreachable(device.name, str(info.extra.get("error") or "it did not answer"))
    return {
        "name": device.name, "model": info.model, "soc": info.soc, "cores": info.cores, "abi": info.abi,
        "ram_kb": info.ram_bytes // 1024 if info.ram_bytes else None, "os": info.os_version,
        "battery_pct": info.battery_pct, "charging": info.charging,
        "temperature_mc": round(info.temperature_c * 1000) if info.temperature_c is not None else None,
    }  # fmt: skip


def run_inputs(manifest: Manifest, workload: Workload, facts: dict[str, object]) -> dict[str, str]:
    """The files the host writes into a run's directory before the agent starts (name -> text)."""
    ids = workload.prompt_ids(manifest.model.vocab_size)
    return {DEVICE_JSON: json.dumps(facts), PROMPT_IDS: " ".join(map(str, ids)) + "\n"}


class Prepared(Protocol):
    """A runner made ready on one device."""

    @property
    def kind(self) -> RunnerKind: ...

    @property
    def runtime_version(self) -> str | None: ...

    def argv(self, manifest: Manifest, workload: Workload, files: RunFiles) -> list[str]: ...


@dataclass(frozen=True)
class Target:
    """The device a runner is prepared on."""

    device: Device
    workdir: str
    abi: str | None
    python: str  # the device's Python (used by the Python agent only)


class Runner(Protocol):
    @property
    def kind(self) -> RunnerKind: ...

    def runtimes(self) -> tuple[str, ...]:
        """The artifact runtimes this runner can drive."""
        ...

    def prepare(self, target: Target, runtime: str) -> Prepared:
        """Push the runner's code (once per version) and check it can run ``runtime`` there."""
        ...


def push_bundle(device: Device, workdir: str, files: dict[str, Path]) -> str:
    """Stage ``files`` (relative path -> local file) as one directory and push it content-addressed; the
    remote directory (``<workdir>/runners/<sha256>``), pushed only when a verified copy is not there."""
    from edgekit.devices.push import push_artifact

    with tempfile.TemporaryDirectory(prefix="edgekit-bundle-") as tmp:
        stage = Path(tmp) / "bundle"
        for rel, source in files.items():
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        return push_artifact(device, stage, workdir, area="runners").remote_path


def runners() -> dict[RunnerKind, Runner]:
    from edgekit.profile.native import NativeRunner
    from edgekit.profile.python_agent import PythonAgent

    return {"native": NativeRunner(), "python": PythonAgent()}


def choose_runner(choice: RunnerChoice, device_class: str | None, runtime: str) -> Runner:
    """The runner for ``runtime`` on a device of ``device_class``: the one rule the CLI, the farm, the study
    and the demo share.

    ``auto``: on a phone the native runner when it can drive the runtime (a phone app has no Python),
    else the Python agent; on any other device the Python agent when it can, else the native runner.
    An explicit choice that cannot drive the runtime is refused with one line naming what can."""
    available = runners()
    if choice == "auto":
        order: list[RunnerKind] = ["native", "python"] if device_class == "phone" else ["python", "native"]
        for kind in order:
            if runtime in available[kind].runtimes():
                return available[kind]
        raise WorkloadError(f"no runner of this edgekit drives {runtime} artifacts")
    runner = available[choice]
    if runtime not in runner.runtimes():
        others = [k for k, r in available.items() if runtime in r.runtimes()]
        hint = f": profile it with --runner {others[0]}" if others else ""
        raise NativeRunnerMissing(
            f"the {choice} runner drives {', '.join(runner.runtimes())} artifacts, not {runtime}{hint}"
        )
    return runner
