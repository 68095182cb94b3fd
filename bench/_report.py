"""What the benchmarks that record load write alike: the host they ran on, and bench/results/<name>.json and .md.

Imported by the scripts beside it (``python bench/<script>.py`` puts this directory on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def provenance(load_before: float) -> dict[str, Any]:
    """The report's ``host`` (CPUs, platform, the 1-minute load average before the run and now) and ``when``."""
    return {"host": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_before": load_before,
                     "load_average_after": os.getloadavg()[0]},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip


def host_line(host: dict[str, Any]) -> str:
    """The markdown's line about ``provenance``'s host."""
    return (f"Host: {host['cpus']} CPUs, {host['platform']}; load average {host['load_average_before']:.1f} before, "
            f"{host['load_average_after']:.1f} after.")  # fmt: skip


def write(name: str, report: dict[str, Any], markdown: str) -> None:
    """``report`` as bench/results/<name>.json and ``markdown`` as <name>.md, and the markdown on stdout."""
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS_DIR / f"{name}.md").write_text(markdown)
    print(markdown, end="")
