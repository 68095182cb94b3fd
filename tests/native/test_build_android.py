"""build_android.sh cannot cross-compile without an NDK and an ExecuTorch checkout: it must say so, one
line per missing input, and exit 2 before touching anything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.native.conftest import HARNESS

SCRIPT = HARNESS / "build_android.sh"


def run_script(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("ANDROID_NDK", "EXECUTORCH_SRC")}
    return subprocess.run(["sh", str(SCRIPT)], env={**clean, **env}, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_without_ndk_and_source_it_fails_early_and_clearly() -> None:
    before = set((HARNESS / "build").glob("android-*"))
    proc = run_script()
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("build_android.sh: ANDROID_NDK is not set")
    assert lines[1].startswith("build_android.sh: EXECUTORCH_SRC is not set")
    assert proc.stdout == ""
    assert set((HARNESS / "build").glob("android-*")) == before, "nothing is configured on failure"


def test_wrong_paths_are_named(tmp_path: Path) -> None:
    proc = run_script(ANDROID_NDK=str(tmp_path / "ndk"), EXECUTORCH_SRC=str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"build_android.sh: ANDROID_NDK={tmp_path / 'ndk'} is not an Android NDK: "
        "no build/cmake/android.toolchain.cmake there",
        f"build_android.sh: EXECUTORCH_SRC={tmp_path} is not an ExecuTorch checkout: "
        "no CMakeLists.txt and backends/xnnpack there",
    ]
