"""The seam between the export pipeline and one export target (ONNX, ExecuTorch, GGUF).

A target turns a prepared model source and a recipe into model files in a staging directory
(``export``) and opens what it wrote in its own runtime for the quality gate (``open_runner``). It says
what it made in an ``Exported``; the pipeline turns that into the manifest. Targets register by name in
``TARGETS``; each lives in its own module and imports its heavy libraries only when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgekit._progress import Steps
from edgekit.export.quality import ArtifactRunner
from edgekit.export.recipes import Recipe
from edgekit.manifest import Delegation, KvCache, Runtime
from edgekit.models.sources import PreparedModel


@dataclass
class Exported:
    """What a target wrote into the staging directory, and the facts the manifest records about it."""

    artifact: Path  # the file the runtime loads (other files of the artifact lie beside it)
    runtime: Runtime
    kv_cache: KvCache
    signature: dict[str, Any]
    linear_total: int
    linear_quantized: int
    skipped_layers: list[str] = field(default_factory=list)
    embedding: str = "float"  # the embedding table as exported: float, 4bit, 8bit, or shared with the head
    bits: int | None = None  # the body's bits per weight when the scheme does not say (a GGUF passed through)
    delegation: Delegation | None = None
    requires: list[str] = field(default_factory=list)  # operators/kernels a runner must provide
    details: dict[str, Any] = field(default_factory=dict)  # target-specific facts for the manifest


class Target(Protocol):
    label: str  # for progress lines: "ONNX (ORT GenAI)", "ExecuTorch .pte (XNNPACK)", "GGUF (llama.cpp)"

    def export(self, prepared: PreparedModel, recipe: Recipe, staged: Path, work: Path, progress: Steps) -> Exported:
        """Write the artifact's files into ``staged`` (``work`` is scratch space, removed afterwards)."""
        ...

    def open_runner(self, staged: Path, exported: Exported, recipe: Recipe) -> ArtifactRunner:
        """The artifact loaded in its own runtime, for the quality gate."""
        ...


def get_target(name: str) -> Target:
    if name == "onnx":
        from edgekit.export.onnx import OnnxTarget

        return OnnxTarget()
    if name == "executorch":
        from edgekit.export.executorch import ExecutorchTarget

        return ExecutorchTarget()
    from edgekit.export.gguf import GgufTarget

    return GgufTarget()
