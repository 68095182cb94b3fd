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


# The CPU features the runtimes' kernels pick their paths by (MLAS, XNNPACK, ggml): a ratio between two
# runtimes read on another CPU may differ by which of these each one uses.
KERNEL_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
                   "asimddp", "i8mm", "sve", "sme")  # fmt: skip


def cpu() -> dict[str, Any]:
    """The CPU's model name and which of ``KERNEL_FEATURES`` it has, from /proc/cpuinfo (empty where absent)."""
    model, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor(), "features": []}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Hardware", "CPU part") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {"model": model, "features": [f for f in KERNEL_FEATURES if f in flags]}


def provenance(load_before: float) -> dict[str, Any]:
    """The report's ``host`` (CPUs, their model and kernel features, platform, the 1-minute load average before
    the run and now) and ``when``."""
    return {"host": {"cpus": os.cpu_count(), "cpu": cpu(), "platform": platform.platform(),
                     "load_average_before": load_before, "load_average_after": os.getloadavg()[0]},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip


def host_line(host: dict[str, Any]) -> str:
    """The markdown's line about ``provenance``'s host."""
    model = host.get("cpu") or {}
    what = ", ".join(x for x in (model.get("model"), " ".join(model.get("features", []))) if x)
    return (f"Host: {host['cpus']} CPUs{f' ({what})' if what else ''}, {host['platform']}; load average "
            f"{host['load_average_before']:.1f} before, {host['load_average_after']:.1f} after.")  # fmt: skip


def write(name: str, report: dict[str, Any], markdown: str) -> None:
    """``report`` as bench/results/<name>.json and ``markdown`` as <name>.md, and the markdown on stdout."""
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS_DIR / f"{name}.md").write_text(markdown)
    print(markdown, end="")
