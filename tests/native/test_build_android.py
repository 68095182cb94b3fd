"""build_android.sh cannot cross-compile without an NDK and each runtime's inputs: it must say so, one line per
missing input, and exit 2 before touching anything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.native.conftest import HARNESS

SCRIPT = HARNESS / "build_android.sh"
INPUTS = ("ANDROID_NDK", "EXECUTORCH_SRC", "ORT_GENAI_ANDROID", "ORT_ANDROID", "LLAMA_CPP_SRC", "BACKENDS")


def run_script(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in INPUTS}
    return subprocess.run(["sh", str(SCRIPT)], env={**clean, **env}, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_without_inputs_it_fails_early_and_clearly() -> None:
    before = set((HARNESS / "build").glob("android-*"))
    proc = run_script()
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert [line.split(" is not set")[0] for line in lines] == [
        f"build_android.sh: {name}" for name in INPUTS[:-1]]  # fmt: skip
    assert proc.stdout == ""
    assert set((HARNESS / "build").glob("android-*")) == before, "nothing is configured on failure"


def test_only_the_chosen_backends_inputs_are_needed(tmp_path: Path) -> None:
    proc = run_script(BACKENDS="llama.cpp", ANDROID_NDK=str(tmp_path / "ndk"), LLAMA_CPP_SRC=str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"build_android.sh: ANDROID_NDK={tmp_path / 'ndk'} is not an Android NDK: "
        "no build/cmake/android.toolchain.cmake there",
        f"build_android.sh: LLAMA_CPP_SRC={tmp_path} is not a llama.cpp source tree: no include/llama.h there",
    ]
    proc = run_script(BACKENDS="executorch tflite", EXECUTORCH_SRC=str(tmp_path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 3
    assert lines[1] == (f"build_android.sh: EXECUTORCH_SRC={tmp_path} is not an ExecuTorch checkout: "
                        "no CMakeLists.txt and backends/xnnpack there")
    assert lines[2].startswith("build_android.sh: BACKENDS names 'tflite'")


def test_genai_package_paths_are_named(tmp_path: Path) -> None:
    (tmp_path / "genai" / "jni" / "arm64-v8a").mkdir(parents=True)
    (tmp_path / "genai" / "jni" / "arm64-v8a" / "libonnxruntime-genai.so").write_bytes(b"")
    proc = run_script(BACKENDS="onnxruntime-genai", ORT_GENAI_ANDROID=str(tmp_path / "genai"),
                      ORT_ANDROID=str(tmp_path / "ort"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[1:] == [
        f"build_android.sh: ORT_ANDROID={tmp_path / 'ort'} is not the unzipped onnxruntime-android package: "
        "no jni/arm64-v8a/libonnxruntime.so there"]  # fmt: skip
