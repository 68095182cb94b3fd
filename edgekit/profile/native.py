"""The native runner as a runner: its builds located, pushed with the sh agent, its command line.

The native runner (``android_harness/``) is one driver with a backend per runtime, built as one executable
per runtime so a device gets only the libraries of the runtime it runs: ``<build>/<runtime>/bin/edgekit_runner``
and ``<build>/<runtime>/lib/``. The bundle for a run is that directory's files and
``device_agents/android/agent.sh``, pushed as one content-addressed bundle (``runner.push_bundle``), so it
lands once per build. Builds live under ``android_harness/build/``: the host build (``build/host``, made by
``build_host.sh``) serves devices whose ABI is this host's machine (the emulated phone); an NDK build for an
Android ABI is looked for in ``build/android-<abi>``.

Before an ExecuTorch program runs, the kernels its manifest ``requires`` are checked against the pushed
runner's own registry (``edgekit_runner --kernels``): a program the runner cannot execute is refused with one
line naming what is missing. This module only prepares; ``run.py`` runs and pulls.
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
SAMPLER_NAME = "edgekit_sampler"  # the sh agent's sampler (android_harness/src/sampler.cpp), run beside the runner
# The runtimes the native runner has a backend for (a build directory each). Offered whether or not a
# build exists yet, so the choice of runner does not depend on what happens to be built; ``prepare``
# says how to build a missing one.
RUNTIMES = ("executorch", "onnxruntime-genai", "llama.cpp")
_HOST_ABIS = {"x86_64": ("x86_64", "amd64"), "aarch64": ("arm64-v8a", "aarch64", "arm64")}


def _candidates(abi: str | None) -> list[Path]:
    """Build roots that serve a device of ``abi``, in order of preference."""
    roots = []
    if abi is not None:
        roots.append(BUILD_ROOT / f"android-{abi}")
        if abi in _HOST_ABIS.get(platform.machine(), ()):
            roots.append(BUILD_ROOT / "host")
    return roots


def _is_build(directory: Path) -> bool:
    return (directory / "bin" / RUNNER_NAME).is_file() and (directory / "lib").is_dir()


def built_runtimes(abi: str | None) -> tuple[str, ...]:
    """The runtimes whose native build exists for a device of ``abi``."""
    return tuple(r for r in RUNTIMES if any(_is_build(root / r) for root in _candidates(abi)))


def build_dir(abi: str | None, runtime: str = "executorch") -> Path:
    """The native build of ``runtime`` for a device ABI; ``NativeRunnerMissing`` (saying how to build) when absent."""
    if not AGENT_SH.is_file():
        raise NativeRunnerMissing("native runner not built: device_agents/android/agent.sh is missing")
    if runtime not in RUNTIMES:
        raise NativeRunnerMissing(f"the native runner has no {runtime} backend (it has {', '.join(RUNTIMES)})")
    roots = _candidates(abi)
    for root in roots:
        if _is_build(root / runtime):
            return root / runtime
    looked = ", ".join(str((root / runtime).relative_to(REPO)) for root in roots) or "nothing"
    built = ", ".join(built_runtimes(abi)) or "none"
    raise NativeRunnerMissing(
        f"native runner for {runtime} not built for ABI {abi or 'unknown'} (looked in {looked}; built: {built}); "
        "build it with android_harness/build_host.sh (host ABI) or build_android.sh, or profile with --runner python"
    )


def bundle_files(abi: str | None, runtime: str = "executorch") -> dict[str, Path]:
    """The files pushed for ``runtime``: its runner, the agent's sampler beside it (when built), its libraries and
    the sh agent."""
    build = build_dir(abi, runtime)
    files = {f"bin/{RUNNER_NAME}": build / "bin" / RUNNER_NAME, "agent.sh": AGENT_SH}
    if (sampler := build / "bin" / SAMPLER_NAME).is_file():
        files[f"bin/{SAMPLER_NAME}"] = sampler
    files.update({f"lib/{p.name}": p for p in sorted((build / "lib").iterdir()) if p.is_file()})
    return files


def missing_kernels(manifest: Manifest, kernels: frozenset[str]) -> list[str]:
    """What ``manifest.requires`` names that a runner with ``kernels`` registered lacks."""
    return sorted(set(manifest.requires) - kernels)


@dataclass(frozen=True)
class PreparedNative:
    remote_dir: str
    runtime_version: str | None = None
    kind: RunnerKind = "native"
    # The pushed runner's kernel registry (``--kernels``); None when the runtime has no kernel registry.
    kernels: frozenset[str] | None = None

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
        """The agent's command line; ``NativeRunnerMissing`` when the runner lacks a kernel the artifact needs."""
        if self.kernels is not None and (missing := missing_kernels(manifest, self.kernels)):
            raise NativeRunnerMissing(
                f"artifact {manifest.model_id}/{manifest.recipe_name} needs {len(missing)} kernel(s) the native "
                f"{manifest.runtime} runner lacks: {', '.join(missing)} (its registry: {self.runner} --kernels)"
            )
        return ["sh", self.agent, "--runner", self.runner, "--lib-dir", self.lib_dir,
                *common_flags(manifest, workload, files)]  # fmt: skip


class NativeRunner:
    kind: RunnerKind = "native"

    def runtimes(self) -> tuple[str, ...]:
        return RUNTIMES

    def prepare(self, target: Target, runtime: str) -> PreparedNative:
        files = bundle_files(target.abi, runtime)
        prepared = PreparedNative(push_bundle(target.device, target.workdir, files))
        # Not every transport keeps the executable bit.
        programs = [posixpath.join(prepared.remote_dir, rel) for rel in files if rel.startswith("bin/")]
        target.device.run(["chmod", "755", *programs], timeout_s=30.0, check=True)
        if runtime != "executorch":
            return prepared
        # The registry of the binary that will run, on the device (an NDK build cannot run here).
        listed = target.device.run([prepared.runner, "--kernels"], timeout_s=60.0, check=True).text()
        return PreparedNative(prepared.remote_dir, kernels=frozenset(listed.split()))
