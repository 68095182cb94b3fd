"""The phone's in-sandbox launcher (``spawner.c``), built on the host and talked to from the host.

A phone has no Python, so the process that starts commands inside the phone's sandbox is a small C
program: compiled here with the host's C compiler on first use and cached by the source's hash under the
edgekit cache (``emulator/spawner-<hash>``). ``encode_request`` is its wire format (see ``spawner.c``).
This module starts no process in a sandbox; ``_sandbox.py`` does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgekit import paths
from edgekit.errors import SandboxError

SOURCE = Path(__file__).with_name("spawner.c")


def spawner_binary() -> Path:
    """The compiled launcher for this source (compiled once, then found in the cache)."""
    source = SOURCE.read_bytes()
    target = paths.cache_dir("emulator") / f"spawner-{hashlib.sha256(source).hexdigest()[:16]}"
    if target.is_file():
        return target
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise SandboxError("the emulated phone's launcher needs a C compiler (cc or gcc) on PATH")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / "spawner"
        result = subprocess.run([compiler, "-O2", "-Wall", "-o", str(built), str(SOURCE)], capture_output=True,
                                text=True, timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip
        if result.returncode != 0:
            raise SandboxError(f"compiling the phone's launcher failed: {result.stderr.strip()[-400:]}")
        os.replace(built, target)
    return target


def encode_request(argv: Sequence[str], env: Mapping[str, str], cwd: str, tty: bool) -> bytes:
    """One request: u32 length, then NUL-terminated tty, cwd, argc, argv..., envc, KEY=VALUE..."""
    fields = ["1" if tty else "0", cwd, str(len(argv)), *argv, str(len(env)), *(f"{k}={v}" for k, v in env.items())]
    if any("\0" in field for field in fields):
        raise SandboxError("a command argument or environment value contains a NUL byte")
    payload = b"".join(field.encode() + b"\0" for field in fields)
    return struct.pack("<I", len(payload)) + payload
