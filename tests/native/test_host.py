"""The host side of the native runner (edgekit/profile/native.py): one bundle per runtime with only that
runtime's libraries, and a program needing a kernel the pushed runner lacks refused before it runs, with one
line (exit 2 through the CLI), checked against the runner's own registry on the device."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.devices.adb import AdbDevice
from edgekit.errors import NativeRunnerMissing
from edgekit.profile import native
from edgekit.profile.run import ProfileRequest, profile_on
from edgekit.profile.runner import RunFiles
from edgekit.workload import Workload
from tests.native.conftest import NativeRunner, manifest_of


def test_one_bundle_per_runtime(native_builds: dict[str, NativeRunner]) -> None:
    assert {"executorch", "onnxruntime-genai"} <= set(native.built_runtimes("x86_64"))
    libraries = {}
    for runtime in native.built_runtimes("x86_64"):
        files = native.bundle_files("x86_64", runtime)
        assert files["bin/edgekit_runner"] == native_builds[runtime].binary
        assert files["bin/edgekit_sampler"] == native_builds[runtime].binary.with_name("edgekit_sampler")
        assert files["agent.sh"] == native.AGENT_SH
        libraries[runtime] = {name for name in files if name.startswith("lib/")}
        assert libraries[runtime] == {f"lib/{p.name}" for p in native_builds[runtime].lib_dir.iterdir()}
    assert "lib/libexecutorch.so" in libraries["executorch"]
    assert libraries["onnxruntime-genai"] == {"lib/libonnxruntime-genai.so", "lib/libonnxruntime.so.1"}
    for a in libraries:  # a device gets only the libraries of the runtime it runs
        for b in libraries:
            assert a == b or not libraries[a] & libraries[b]
    with pytest.raises(NativeRunnerMissing, match="native runner for executorch not built for ABI armv7"):
        native.bundle_files("armv7", "executorch")
    with pytest.raises(NativeRunnerMissing, match="has no onnxruntime backend"):
        native.bundle_files("x86_64", "onnxruntime")


def test_argv_refuses_a_missing_kernel(missing_kernel_dir: Path, native_runner: NativeRunner) -> None:
    manifest = manifest_of(missing_kernel_dir)
    kernels = frozenset(native_runner.run("--kernels").stdout.split())
    files = RunFiles("/r/model", "0" * 64, "/r/out", "/r/out/device.json", "/r/out/prompt_ids.txt")
    with pytest.raises(NativeRunnerMissing) as caught:
        native.PreparedNative("/r", kernels=kernels).argv(manifest, Workload(prompt_len=4), files)
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 2
    assert "needs 1 kernel(s) the native executorch runner lacks: edgekit_test::twice.out" in message
    # The same manifest with the kernel present is let through.
    assert native.PreparedNative("/r", kernels=kernels | {"edgekit_test::twice.out"}).argv(
        manifest, Workload(prompt_len=4), files)[:2] == ["sh", "/r/agent.sh"]


def test_profile_refuses_a_missing_kernel_before_running(phone_dev: AdbDevice, native_runner: NativeRunner,
                                                         missing_kernel_dir: Path) -> None:
    workload = Workload(prompt_len=4, gen_len=4, runs=1, warmup=0, runner="native", baseline_s=0.0, cooldown_s=0.0)
    with pytest.raises(NativeRunnerMissing, match="lacks: edgekit_test::twice.out"):
        profile_on(phone_dev, ProfileRequest(missing_kernel_dir, workload), workdir="/data/local/tmp/edgekit",
                   device_class="phone")
    # nothing ran: no run directory was created on the phone
    listed = phone_dev.run(["ls", "/data/local/tmp/edgekit/runs"], timeout_s=30)
    assert not listed.ok or listed.text().strip() == ""
