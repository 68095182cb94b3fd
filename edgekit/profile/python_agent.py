"""The Python agent as a runner: its bundle pushed once per version, its runtime checked, its command line.

The agent is the directory ``device_agents/linux/`` (``edgekit_agent.py`` and its ``agent_*.py``
modules). It is pushed as one content-addressed bundle like the native runner's (``runner.push_bundle``:
``<workdir>/artifacts/<sha256>/``, verified with the device's own ``sha256sum``, pushed only when absent),
so any edit gives a new path. Before anything runs, ``check_runtime`` imports the artifact's runtime with
the device's Python and says clearly when it is missing. This module runs no workload.
"""

from __future__ import annotations

import hashlib
import posixpath
import sys
from dataclasses import dataclass
from pathlib import Path

from edgekit.devices.base import Device
from edgekit.errors import AgentError, RuntimeMissing, WorkloadError
from edgekit.manifest import Manifest, read_manifest
from edgekit.profile.runner import (
    RunFiles,
    RunnerKind,
    Target,
    common_flags,
    push_bundle,
    run_inputs,
)
from edgekit.workload import Workload

AGENT_DIR = Path(__file__).resolve().parents[2] / "device_agents" / "linux"
ENTRY = "edgekit_agent.py"
# The import that proves the device's Python can drive each runtime, and the pip package that provides it.
RUNTIME_IMPORTS = {
    "onnxruntime-genai": ("onnxruntime_genai", "onnxruntime-genai"),
    "onnxruntime": ("onnxruntime", "onnxruntime"),
    "executorch": ("executorch.runtime", "executorch"),
}


def agent_files() -> dict[str, Path]:
    """The agent's files in this checkout (they are not part of the installed package's modules)."""
    files = {p.name: p for p in sorted(AGENT_DIR.glob("*.py"))}
    if ENTRY not in files:
        raise AgentError(f"the Linux agent {AGENT_DIR / ENTRY} is missing from this edgekit installation")
    return files


def agent_entry() -> Path:
    """The agent's entry script, to run it on this host (tests, benchmarks)."""
    return agent_files()[ENTRY]


def local_argv(artifact_dir: Path, out_dir: Path, workload: Workload, *extra: str,
               python: str | None = None) -> list[str]:  # fmt: skip
    """The agent's command line for a run of ``artifact_dir`` on this host (tests, benchmarks), built exactly as
    a device's is; writes the run's inputs (prompt ids, no device facts) into ``out_dir`` as the host pushes them."""
    manifest = read_manifest(artifact_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in run_inputs(manifest, workload, {}).items():
        (out_dir / name).write_text(text)
    files = RunFiles.in_run_dir(str(artifact_dir), manifest.address(), str(out_dir))
    return [python or sys.executable, str(agent_entry()), *common_flags(manifest, workload, files), *extra]


@dataclass(frozen=True)
class PreparedAgent:
    python: str
    entry: str  # the pushed entry script
    runtime_version: str | None
    extra_args: tuple[str, ...] = ()  # test hooks (--fail-run ...)
    kind: RunnerKind = "python"

    def argv(self, manifest: Manifest, workload: Workload, files: RunFiles) -> list[str]:
        return [self.python, self.entry, *common_flags(manifest, workload, files), *self.extra_args]


class PythonAgent:
    kind: RunnerKind = "python"

    def runtimes(self) -> tuple[str, ...]:
        return tuple(RUNTIME_IMPORTS)

    def prepare(self, target: Target, runtime: str) -> PreparedAgent:
        remote = push_bundle(target.device, target.workdir, agent_files())
        # Remembered per agent bundle, beside the bundles (never inside one: they are content-addressed).
        marker_dir = posixpath.join(target.workdir, "runtime-ok", posixpath.basename(remote))
        version = check_runtime(target.device, target.python, runtime, marker_dir)
        return PreparedAgent(target.python, posixpath.join(remote, ENTRY), version)


def check_runtime(device: Device, python: str, runtime: str, marker_dir: str | None = None) -> str:
    """The runtime's version as the device's Python reports it; ``RuntimeMissing`` when it cannot.

    With ``marker_dir`` a successful check is remembered on the device per Python, because importing
    executorch's runtime costs seconds; a runtime removed later is still reported clearly, by the agent's
    ``missing-library`` error when it loads the artifact.
    """
    if runtime not in RUNTIME_IMPORTS:
        # The runtime name comes from a manifest: only a known name may become Python code on the device.
        raise WorkloadError(f"the Python agent drives {', '.join(RUNTIME_IMPORTS)} artifacts, not {runtime!r}")
    module, package = RUNTIME_IMPORTS[runtime]
    marker = None
    if marker_dir is not None:
        key = hashlib.sha256(python.encode()).hexdigest()[:12]
        marker = posixpath.join(marker_dir, f"{runtime}-{key}")
        cached = device.run(["cat", marker], timeout_s=30.0)
        if cached.ok and cached.text().strip():
            return cached.text().strip()
    probe = f"import {module}\nfrom importlib.metadata import version\nprint(version({package!r}))"
    result = device.run([python, "-c", probe], timeout_s=180.0)
    if result.exit_code in (126, 127):
        detail = f"cannot run '{python}': {result.stderr_tail(200).strip() or 'not found'}"
        raise RuntimeMissing(device.name, python, runtime, module, package, detail)
    if not result.ok:
        lines = (result.stderr_tail(2000) or result.text()).strip().splitlines()
        detail = lines[-1] if lines else f"exit {result.exit_code}"
        raise RuntimeMissing(device.name, python, runtime, module, package, detail)
    version = result.text().strip().splitlines()[-1] if result.text().strip() else "unknown"
    if marker is not None:
        device.run(
            ["sh", "-c", 'mkdir -p "$(dirname "$1")" && printf %s "$2" > "$1"', "edgekit", marker, version],
            timeout_s=30.0,
        )
    return version
