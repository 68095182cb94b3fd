"""The native runner on a phone: locating its build, pushing it with the sh agent, building the argv.

The bundle is the runner binary, its shared libraries and ``device_agents/android/agent.sh``, staged as
one directory and pushed with the content-addressed verified push (so it lands once per build at
``<workdir>/artifacts/<sha256>/``, like an artifact). Builds live under ``android_harness/build/``: the
host build (``build/host``, made by ``build_host.sh``) serves devices whose ABI is this host's machine
(the emulated phone); an NDK build for an Android ABI is looked for in ``build/android-<abi>``.
This module only prepares; ``run.py`` runs and pulls.
"""

from __future__ import annotations

import platform
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.devices.base import Device
from edgekit.profile.errors import NativeRunnerMissing

REPO = Path(__file__).resolve().parents[2]
AGENT_SH = REPO / "device_agents" / "android" / "agent.sh"
BUILD_ROOT = REPO / "android_harness" / "build"
RUNNER_NAME = "edgekit_runner"
_HOST_ABIS = {"x86_64": ("x86_64", "amd64"), "aarch64": ("arm64-v8a", "aarch64", "arm64")}


@dataclass(frozen=True)
class NativeBundle:
    remote_dir: str

    @property
    def agent(self) -> str:
        return posixpath.join(self.remote_dir, "agent.sh")

    @property
    def runner(self) -> str:
        return posixpath.join(self.remote_dir, "bin", RUNNER_NAME)

    @property
    def lib_dir(self) -> str:
        return posixpath.join(self.remote_dir, "lib")


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


def push_bundle(device: Device, workdir: str, abi: str | None) -> NativeBundle:
    from edgekit.devices.push import push_artifact

    build = build_dir(abi)
    with tempfile.TemporaryDirectory(prefix="edgekit-native-") as tmp:
        stage = Path(tmp) / "bundle"
        (stage / "bin").mkdir(parents=True)
        shutil.copy2(build / "bin" / RUNNER_NAME, stage / "bin" / RUNNER_NAME)
        shutil.copytree(build / "lib", stage / "lib")
        shutil.copy2(AGENT_SH, stage / "agent.sh")
        result = push_artifact(device, stage, workdir)
    bundle = NativeBundle(result.remote_path)
    # Not every transport keeps the executable bit.
    device.run(["chmod", "755", bundle.runner], timeout_s=30.0, check=True)
    return bundle


def agent_argv(
    bundle: NativeBundle,
    manifest: dict,
    artifact_remote: str,
    remote_out: str,
    sha256: str,
    device_json: str,
    flags: dict[str, str],
) -> list[str]:
    return [
        "sh",
        bundle.agent,
        "--runner",
        bundle.runner,
        "--lib-dir",
        bundle.lib_dir,
        "--model",
        posixpath.join(artifact_remote, str(manifest["artifact"])),
        "--out",
        remote_out,
        *(item for key, value in flags.items() for item in (key, value)),
        "--device-json",
        device_json,
        "--artifact-sha",
        sha256,
        "--model-id",
        str(manifest["model"]["id"]),
        "--recipe",
        str(manifest["recipe"]["name"]),
    ]
