"""Running a study protocol: export each model with the protocol's 4-bit recipe, profile it on each device
through ``edgekit.profile.run`` with the protocol's workload, wait the protocol's gap between tests, and
ingest every trace into the store. The table is then printed by ``study.py`` from the store alone.

Profiling is the profiler's job (``edgekit.profile.run.profile``) and exporting the exporter's
(``edgekit.export.pipeline.export``); this module only sequences them and never computes a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit import paths
from edgekit.errors import EdgekitError, StudyError
from edgekit.measure import profile_and_store
from edgekit.profile.run import ProfileRequest
from edgekit.report.study import Protocol
from edgekit.store.db import Store


@dataclass
class StudyTest:
    model: str
    device: str
    trace_path: Path | None = None
    error: str | None = None


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
    artifacts = {model: _artifact_dir(model, recipe) for model in models}
    tests: list[StudyTest] = []
    for model in models:
        for device in devices:
            if tests:
                time.sleep(protocol.gap_s)  # the protocol's pause between tests
            test = StudyTest(model, device)
            request = ProfileRequest(artifacts[model], protocol.workload())
            try:
                done = profile_and_store(request, device, inventory=inventory, python=python, store=store)
                test.trace_path = done.result.trace.path
            except EdgekitError as exc:
                test.error = str(exc)
            tests.append(test)
            if on_test is not None:
                on_test(test)
    return tests
