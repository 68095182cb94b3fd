"""Run the ``edgekit`` command line in a subprocess, as a user does.

The results and study commands are registered on the real app before ``main`` runs (the same
``register(app)`` the CLI package calls), so these tests exercise the real error handling: an
EdgekitError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SHIM = (
    "import sys; from edgekit import cli; from edgekit.cli import results, study; "
    "results.register(cli.app); study.register(cli.app); cli.main(sys.argv[1:])"
)


def edgekit(*args: str, timeout_s: float = 120.0, home: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **({"EDGEKIT_HOME": str(home)} if home else {}))
    argv = [sys.executable, "-c", _SHIM, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and pattern in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]
