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
    recipe: str
    trace_path: Path | None = None
    error: str | None = None


def _artifact_dir(model: str, recipe: str, max_context: int) -> Path:
    """Export (or reuse) ``model`` with ``recipe`` at the protocol's context under the home's study directory."""
    from edgekit.export.pipeline import export
    from edgekit.export.recipes import resolve_recipe

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    out = paths.home() / "study" / "artifacts" / f"{safe}-{recipe}-ctx{max_context}"
    if (out / "manifest.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    export(model, resolve_recipe(recipe).model_copy(update={"max_context": max_context}), out)
    return out


def run_protocol(
    protocol: Protocol,
    models: list[str],
    devices: list[str],
    recipes: list[str],
    store: Store | None,
    *,
    inventory: str | Path | None = None,
    python: str | None = None,
    on_test: Callable[[StudyTest], None] | None = None,
) -> list[StudyTest]:
    """Every model with every recipe (the protocol's engine first) on every device; a failed test is reported
    and the study goes on. ``store`` None: each test opens the store for its write only."""
    unknown = [r for r in recipes if r not in protocol.recipes]
    if unknown:
        raise StudyError(f"protocol '{protocol.name}' uses {', '.join(protocol.recipes)}; got recipe '{unknown[0]}'")
    tests: list[StudyTest] = []
    for model in models:
        for recipe in recipes:
            _profile_everywhere(protocol, model, recipe, devices, store, tests, inventory, python, on_test)
    return tests


def _profile_everywhere(protocol: Protocol, model: str, recipe: str, devices: list[str], store: Store | None,
                        tests: list[StudyTest], inventory: str | Path | None, python: str | None,
                        on_test: Callable[[StudyTest], None] | None) -> None:  # fmt: skip
    artifact: Path | None = None
    for device in devices:
        if tests:
            time.sleep(protocol.gap_s)  # the protocol's pause between tests
        test = StudyTest(model, device, recipe)
        try:
            artifact = artifact or _artifact_dir(model, recipe, protocol.max_context)
            request = ProfileRequest(artifact, protocol.workload())
            done = profile_and_store(request, device, inventory=inventory, python=python, store=store)
            test.trace_path = done.result.trace.path
        except EdgekitError as exc:
            test.error = str(exc)
        tests.append(test)
        if on_test is not None:
            on_test(test)
