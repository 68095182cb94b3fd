"""The Linux profiling agent on a device: pushing it (once per version) and checking its runtime.

The agent is one file, ``device_agents/linux/edgekit_agent.py``. It lands content-addressed at
``<workdir>/agents/<AGENT_VERSION>-<sha256[:12]>/edgekit_agent.py`` and is pushed only when no verified
copy is there (the device's own ``sha256sum`` decides), so editing the agent without bumping its version
still gives a new path. Before anything runs, ``check_runtime`` imports the artifact's runtime with the
device's Python and says clearly when it is missing. This module runs no workload.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from edgekit.devices.base import Device
from edgekit.errors import EdgekitError

AGENT_FILE = "edgekit_agent.py"
# The import that proves the device's Python can drive each runtime, and the pip package that provides it.
RUNTIME_IMPORTS = {"onnxruntime": ("onnxruntime", "onnxruntime"), "executorch": ("executorch.runtime", "executorch")}


class AgentError(EdgekitError):
    """The agent cannot be found, pushed or started on the device."""


class RuntimeMissing(EdgekitError):
    """The device's Python cannot import the runtime the artifact needs; nothing was run."""

    def __init__(self, device: str, python: str, runtime: str, detail: str) -> None:
        self.device = device
        self.python = python
        self.runtime = runtime
        self.detail = detail
        module, package = RUNTIME_IMPORTS.get(runtime, (runtime, runtime))
        super().__init__(
            f"device '{device}': the artifact needs {runtime}, but '{python}' there cannot "
            f"`import {module}` ({detail}); install it on the device (pip install {package}) or pick "
            f"another Python for the device"
        )


def agent_source() -> Path:
    """The agent file in this checkout (it is not part of the installed package's modules)."""
    path = Path(__file__).resolve().parents[2] / "device_agents" / "linux" / AGENT_FILE
    if not path.is_file():
        raise AgentError(f"the Linux agent {path} is missing from this edgekit installation")
    return path


def agent_version(path: Path | None = None) -> str:
    text = (path or agent_source()).read_text()
    match = re.search(r'^AGENT_VERSION = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise AgentError(f"{path or agent_source()} has no AGENT_VERSION")
    return match.group(1)


@dataclass(frozen=True)
class PushedAgent:
    remote_path: str
    version: str
    sha256: str
    pushed: bool  # False: a verified copy was already there


def push_agent(device: Device, workdir: str, source: Path | None = None) -> PushedAgent:
    """Make sure the agent is at its content-addressed path on the device; push it only when absent."""
    source = source or agent_source()
    data = source.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    version = agent_version(source)
    remote_dir = posixpath.join(workdir, "agents", f"{version}-{sha[:12]}")
    remote = posixpath.join(remote_dir, AGENT_FILE)
    check = device.run(["sha256sum", remote], timeout_s=30.0)
    if check.ok and check.text().split()[:1] == [sha]:
        return PushedAgent(remote, version, sha, pushed=False)
    device.run(["mkdir", "-p", remote_dir], timeout_s=30.0, check=True)
    device.push(str(source), remote)
    check = device.run(["sha256sum", remote], timeout_s=30.0)
    if not check.ok or check.text().split()[:1] != [sha]:
        raise AgentError(
            f"device '{device.name}': the agent at {remote} does not match after the push "
            f"({check.text().strip() or check.stderr_tail()})"
        )
    return PushedAgent(remote, version, sha, pushed=True)


def check_runtime(device: Device, python: str, runtime: str, cache_dir: str | None = None) -> str:
    """The runtime's version as the device's Python reports it; ``RuntimeMissing`` when it cannot.

    With ``cache_dir`` (the pushed agent's directory) a successful check is remembered on the device per
    Python, because importing executorch's runtime costs seconds; a runtime removed later is still
    reported clearly, by the agent's ``missing-library`` error when it loads the artifact.
    """
    marker = None
    if cache_dir is not None:
        key = hashlib.sha256(python.encode()).hexdigest()[:12]
        marker = posixpath.join(cache_dir, "runtime-ok", f"{runtime}-{key}")
        cached = device.run(["cat", marker], timeout_s=30.0)
        if cached.ok and cached.text().strip():
            return cached.text().strip()
    module, package = RUNTIME_IMPORTS.get(runtime, (runtime, runtime))
    probe = f"import {module}\nfrom importlib.metadata import version\nprint(version({package!r}))"
    result = device.run([python, "-c", probe], timeout_s=180.0)
    if result.exit_code in (126, 127):
        raise RuntimeMissing(
            device.name, python, runtime, f"cannot run '{python}': {result.stderr_tail(200).strip() or 'not found'}"
        )
    if not result.ok:
        lines = (result.stderr_tail(2000) or result.text()).strip().splitlines()
        raise RuntimeMissing(device.name, python, runtime, lines[-1] if lines else f"exit {result.exit_code}")
    version = result.text().strip().splitlines()[-1] if result.text().strip() else "unknown"
    if marker is not None:
        device.run(
            ["sh", "-c", 'mkdir -p "$(dirname "$1")" && printf %s "$2" > "$1"', "edgekit", marker, version],
            timeout_s=30.0,
        )
    return version
