"""Where llama.cpp is: the build that edgekit's GGUF target and its quality gate use.

``locate()`` returns the paths of one llama.cpp build (tools in ``bin/``, shared libraries in ``lib/``,
headers in ``include/``, the source tree with ``convert_hf_to_gguf.py`` and its vendored ``gguf-py`` in
``src/``) and its version from ``BUILD_INFO``. The build is made by ``scripts/build_llama_cpp.sh``, which
answers from its cache in milliseconds and otherwise builds (about 20 minutes on 2 cores), streaming its
log to the caller's callback (stderr by default). ``EDGEKIT_LLAMA_CPP`` names a build directory of the same
layout instead. The answer is cached for the process.

This module finds and builds; it runs no model and imports nothing heavy. A build that cannot be made is
one ``LlamaCppUnavailable`` (exit 2) with the script's last lines.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import LlamaCppUnavailable

BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_llama_cpp.sh"
ENV_DIR = "EDGEKIT_LLAMA_CPP"
# A cold build compiles llama.cpp and ggml (~20 minutes on 2 cores); far slower means something hangs.
BUILD_TIMEOUT_S = 3 * 3600
_TOOLS = ("llama-quantize", "llama-perplexity", "llama-bench")

LogFn = Callable[[str], None]


@dataclass(frozen=True)
class LlamaCpp:
    """One llama.cpp build on this machine."""

    root: Path
    build_number: str
    commit: str

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def lib_dir(self) -> Path:
        return self.root / "lib"

    @property
    def include_dir(self) -> Path:
        return self.root / "include"

    @property
    def src_dir(self) -> Path:
        return self.root / "src"

    @property
    def convert_script(self) -> Path:
        return self.src_dir / "convert_hf_to_gguf.py"

    def tool(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def libllama(self) -> Path:
        suffix = ".dylib" if sys.platform == "darwin" else ".so"
        return self.lib_dir / f"libllama{suffix}"

    @property
    def version(self) -> str:
        """As llama.cpp names its releases: ``b<build number> (<commit>)``."""
        return f"b{self.build_number} ({self.commit})"


_lock = threading.Lock()
_found: LlamaCpp | None = None


def locate(log: LogFn | None = None) -> LlamaCpp:
    """The llama.cpp build, built first if needed (see the module docstring)."""
    global _found
    with _lock:
        if _found is None:
            override = os.environ.get(ENV_DIR)
            root = Path(override).expanduser() if override else _build(log or _to_stderr)
            _found = _check(root, f"${ENV_DIR}" if override else str(BUILD_SCRIPT.name))
        return _found


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _build(log: LogFn) -> Path:
    if not BUILD_SCRIPT.exists():
        raise LlamaCppUnavailable(f"the build script {BUILD_SCRIPT} is missing")
    # The script's pip (for the one download, the llama-cpp-python sdist) is this interpreter's.
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable), "VERBOSE": "1"}
    tail: collections.deque[str] = collections.deque(maxlen=15)
    try:
        proc = subprocess.Popen(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", env=env)  # fmt: skip
    except OSError as exc:
        raise LlamaCppUnavailable(f"cannot run {BUILD_SCRIPT.name}: {exc}") from exc

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip())
            log(line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=BUILD_TIMEOUT_S)  # stdout is one line (the build directory): it cannot fill the pipe
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise LlamaCppUnavailable(f"{BUILD_SCRIPT.name} did not finish within {BUILD_TIMEOUT_S} s") from exc
    reader.join(timeout=10)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    proc.stdout.close()
    if proc.returncode != 0:
        detail = " | ".join(line for line in tail if line.strip())[-1500:]
        raise LlamaCppUnavailable(f"{BUILD_SCRIPT.name} exited with {proc.returncode}: {detail}")
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise LlamaCppUnavailable(f"{BUILD_SCRIPT.name} printed no build directory")
    return Path(lines[-1].strip())


def _check(root: Path, origin: str) -> LlamaCpp:
    info_path = root / "BUILD_INFO"
    if not info_path.is_file():
        raise LlamaCppUnavailable(f"{root} (from {origin}) is not a llama.cpp build: no BUILD_INFO")
    info = dict(line.split("=", 1) for line in info_path.read_text().splitlines() if "=" in line)
    build = LlamaCpp(root, info.get("llama_cpp_build_number", "0"), info.get("llama_cpp_commit", "unknown"))
    missing = [str(p.relative_to(root)) for p in (*map(build.tool, _TOOLS), build.libllama, build.convert_script)
               if not p.exists()]  # fmt: skip
    if missing:
        raise LlamaCppUnavailable(f"the llama.cpp build at {root} (from {origin}) lacks {', '.join(missing)}")
    return build


def _forget() -> None:
    """Forget the located build (tests that point ``EDGEKIT_LLAMA_CPP`` elsewhere)."""
    global _found
    with _lock:
        _found = None
