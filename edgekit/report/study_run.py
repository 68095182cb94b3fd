"""Running a study protocol: export each model with the protocol's 4-bit recipe, profile it on each device
through ``edgekit.profile.run`` with the protocol's workload, wait the protocol's gap between tests, and
ingest every trace into the store. The table is then printed by ``study.py`` from the store alone.

Profiling is the profiler's job (``edgekit.profile.run.profile``) and exporting the exporter's
(``edgekit.export.pipeline.export``); this module only sequences them and never computes a number.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit import paths
from edgekit.errors import EdgekitError
from edgekit.report.study import Protocol
from edgekit.store.db import Store
from edgekit.store.ingest import ingest_trace

PROFILER_MODULE = "edgekit.profile.run"


class StudyError(EdgekitError):
    """A study that cannot run (the profiler missing, a recipe that is not the protocol's)."""


@dataclass
class StudyTest:
    model: str
    device: str
    trace_path: Path | None = None
    error: str | None = None


def _profiler() -> Any:
    try:
        module = importlib.import_module(PROFILER_MODULE)
    except ImportError as exc:
        raise StudyError(
            f"the profiler ({PROFILER_MODULE}) is not available in this edgekit ({exc}); "
            "print the table from stored runs with --no-run"
        ) from exc
    for name in ("profile", "ProfileRequest"):
        if not hasattr(module, name):
            raise StudyError(f"the profiler ({PROFILER_MODULE}) has no '{name}'; print stored runs with --no-run")
    return module


def _artifact_dir(model: str, recipe: str) -> Path:
    """Export (or reuse) ``model`` with ``recipe`` under the home's study directory."""
    from edgekit.export.pipeline import export
    from edgekit.export.recipes import resolve_recipe

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    out = paths.home() / "study" / "artifacts" / f"{safe}-{recipe}"
    if (out / "manifest.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    export(model, resolve_recipe(recipe), out)
    return out


def run_protocol(
    protocol: Protocol,
    models: list[str],
    devices: list[str],
    recipe: str,
    store: Store,
    *,
    inventory: str | Path | None = None,
    python: str | None = None,
    on_test: Callable[[StudyTest], None] | None = None,
) -> list[StudyTest]:
    """Every model on every device; a failed test is reported and the study goes on."""
    if recipe not in protocol.recipes:
        raise StudyError(f"protocol '{protocol.name}' uses {', '.join(protocol.recipes)}; got recipe '{recipe}'")
    profiler = _profiler()
    artifacts = {model: _artifact_dir(model, recipe) for model in models}
    tests: list[StudyTest] = []
    for model in models:
        for device in devices:
            if tests:
                time.sleep(protocol.gap_s)  # the protocol's pause between tests
            test = StudyTest(model, device)
            request = profiler.ProfileRequest(
                artifact_dir=artifacts[model], prompt_len=protocol.prompt_len, gen_len=protocol.gen_len,
                runs=protocol.runs, warmup=protocol.warmup, cooldown_s=protocol.gap_s,
            )  # fmt: skip
            try:
                result = profiler.profile(request, device, inventory=inventory, python=python)
                test.trace_path = Path(result.trace_dir) / "trace.jsonl"
                ingest_trace(test.trace_path, artifacts[model], store=store)
            except EdgekitError as exc:
                test.error = str(exc)
            tests.append(test)
            if on_test is not None:
                on_test(test)
    return tests
