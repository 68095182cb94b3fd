"""The native runner as a runner: its build located, pushed with the sh agent, its command line.

The bundle is the runner binary, its shared libraries and ``device_agents/android/agent.sh``, pushed as
one content-addressed bundle (``runner.push_bundle``), so it lands once per build. Builds live under
``android_harness/build/``: the host build (``build/host``, made by ``build_host.sh``) serves devices
whose ABI is this host's machine (the emulated phone); an NDK build for an Android ABI is looked for in
``build/android-<abi>``. This module only prepares; ``run.py`` runs and pulls.
"""

from __future__ import annotations

import platform
import posixpath
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import NativeRunnerMissing
from edgekit.manifest import Manifest
from edgekit.profile.runner import RunFiles, RunnerKind, Target, common_flags, push_bundle
from edgekit.workload import Workload

REPO = Path(__file__).resolve().parents[2]
AGENT_SH = REPO / "device_agents" / "android" / "agent.sh"
BUILD_ROOT = REPO / "android_harness" / "build"
RUNNER_NAME = "edgekit_runner"
RUNTIMES = ("executorch",)
_HOST_ABIS = {"x86_64": ("x86_64", "amd64"), "aarch64": ("arm64-v8a", "aarch64", "arm64")}


def build_dir(abi: str | None) -> Path:
    """The native build for a device ABI; ``NativeRunnerMissing`` (saying how to build) when absent."""
    if not AGENT_SH.is_file():
        raise NativeRunnerMissing("native runner not built: device_agents/android/agent.sh is missing")
    candidates = []
    if abi is not None:
        candidates.append(BUILD_ROOT / f"android-{abi}")
        if abi in _HOST_ABIS.get(platform.machine(), ()):
            candidates.append(BUILD_ROOT / "host")
    for candidate in candidates:
        if (candidate / "bin" / RUNNER_NAME).is_file() and (candidate / "lib").is_dir():
            return candidate
    raise NativeRunnerMissing(
        f"native runner not built for ABI {abi or 'unknown'} (looked in "
        f"{', '.join(str(c.relative_to(REPO)) for c in candidates) or 'nothing'}); build it with "
        "android_harness/build_host.sh (host ABI) or the NDK build, or profile with --runner python"
    )


def bundle_files(abi: str | None) -> dict[str, Path]:
    build = build_dir(abi)
    files = {f"bin/{RUNNER_NAME}": build / "bin" / RUNNER_NAME, "agent.sh": AGENT_SH}
    files.update({f"lib/{p.name}": p for p in sorted((build / "lib").iterdir()) if p.is_file()})
    return files


@dataclass(frozen=True)
class PreparedNative:
    remote_dir: str
    runtime_version: str | None = None
    kind: RunnerKind = "native"

    @property
    def agent(self) -> str:
        return posixpath.join(self.remote_dir, "agent.sh")

    @property
    def runner(self) -> str:
        return posixpath.join(self.remote_dir, "bin", RUNNER_NAME)

    @property
    def lib_dir(self) -> str:
        return posixpath.join(self.remote_dir, "lib")

    def argv(self, manifest: Manifest, workload: Workload, files: RunFiles) -> list[str]:
        return ["sh", self.agent, "--runner", self.runner, "--lib-dir", self.lib_dir,
                *common_flags(manifest, workload, files)]  # fmt: skip


class NativeRunner:
    kind: RunnerKind = "native"

    def runtimes(self) -> tuple[str, ...]:
        return RUNTIMES

    def prepare(self, target: Target, runtime: str) -> PreparedNative:
        prepared = PreparedNative(push_bundle(target.device, target.workdir, bundle_files(target.abi)))
        # Not every transport keeps the executable bit.
        target.device.run(["chmod", "755", prepared.runner], timeout_s=30.0, check=True)
        return prepared
