"""The export job: model source + recipe -> artifact directory that passed (or failed) its gate.

Order matters: the eager reference is computed before export because quantization changes the model
in place. Everything is written into a temporary sibling of ``--out`` and renamed into place at the
end, so bad input or a crash leaves nothing at ``--out``. A gate failure keeps the artifact (its
manifest says ``failed``) and raises ``ParityError`` so the CLI exits non-zero with the numbers.
Finished artifacts are cached by a key over the source hash, the resolved recipe and tool versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgekit import manifest as mf
from edgekit import paths
from edgekit._progress import NO_STEPS, Steps
from edgekit.errors import ArtifactError, ExportError, ParityError
from edgekit.export.parity import OnnxRunner, ParityResult, PteRunner, Reference, gate_failures, measure
from edgekit.export.recipes import Recipe
from edgekit.models import load_model, load_tokenizer, prepare


@dataclass
class ExportResult:
    out_dir: Path
    manifest: mf.Manifest
    cached: bool

    @property
    def passed(self) -> bool:
        return self.manifest.gate.passed


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ArtifactError(f"output '{out_dir}' already exists and is not empty; choose another --out")
    if not out_dir.parent.exists():
        raise ArtifactError(f"parent directory of --out '{out_dir.parent}' does not exist")


def _cache_key(source_sha256: str, recipe: Recipe) -> str:
    # The gate's thresholds are not part of the key: they judge the artifact, they do not make it.
    # A cached artifact is judged again against the recipe's current thresholds (``_judge``).
    what_makes_it = recipe.model_dump(exclude={"gate", "name", "description"})
    payload = {"source": source_sha256, "recipe": what_makes_it, "tools": mf.tool_versions(),
               "manifest_version": mf.MANIFEST_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _place(staged: Path, out_dir: Path) -> None:
    if out_dir.exists():
        out_dir.rmdir()  # checked empty above
    os.replace(staged, out_dir)


def export(model_spec: str, recipe: Recipe, out_dir: Path, *, use_cache: bool = True,
           progress: Steps = NO_STEPS) -> ExportResult:  # fmt: skip
    """Export ``model_spec`` with ``recipe`` into ``out_dir`` (see the module docstring); ``progress`` is told
    each step as it starts and ends."""
    out_dir = Path(out_dir).expanduser().resolve()
    _check_out_dir(out_dir)
    with progress.step(f"Resolving model source '{model_spec}'"):
        prepared = prepare(model_spec)
    key = _cache_key(prepared.source_sha256, recipe)
    cached_dir = paths.cache_dir("artifacts") / key
    staged = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        if use_cache and (cached_dir / mf.MANIFEST_NAME).exists():
            with progress.step("Copying cached artifact"):
                manifest = mf.read_manifest(cached_dir)
                mf.verify_files(cached_dir, manifest)
                for entry in manifest.files:
                    shutil.copy2(cached_dir / entry.name, staged / entry.name)
                manifest = _judge(manifest, recipe)
                mf.write_manifest(staged, manifest)
            cached = True
        else:
            manifest = _export_fresh(prepared, recipe, staged, progress)
            cached = False
            _store_in_cache(staged, cached_dir)
        _place(staged, out_dir)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    result = ExportResult(out_dir, manifest, cached)
    if not result.passed:
        raise ParityError(str(out_dir), manifest.gate.failures)
    return result


def _judge(manifest: mf.Manifest, recipe: Recipe) -> mf.Manifest:
    """The manifest with its gate evaluated against ``recipe``'s thresholds."""
    q, delegation = manifest.quantization, manifest.delegation
    failures = gate_failures(
        ParityResult.from_quality(manifest.parity),
        recipe.gate,
        linear_total=q.linear_total,
        linear_quantized=q.linear_quantized,
        delegated_share=delegation.share if delegation else None,
    )
    gate = mf.GateResult(passed=not failures, failures=failures, thresholds=recipe.gate.model_dump())
    return manifest.with_gate(gate, recipe.model_dump())


def _store_in_cache(staged: Path, cached_dir: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{cached_dir.name}.", dir=cached_dir.parent))
    for path in staged.iterdir():
        shutil.copy2(path, tmp / path.name)
    try:
        os.replace(tmp, cached_dir)
    except OSError:  # another export filled the cache first
        shutil.rmtree(tmp, ignore_errors=True)


def _export_fresh(prepared: Any, recipe: Recipe, staged: Path, progress: Steps) -> mf.Manifest:
    started = time.perf_counter()
    with progress.step("Loading model in PyTorch (fp32)"):
        model = load_model(prepared)
        config = model.config
        parameters = sum(p.numel() for p in model.parameters())
        tokenizer = load_tokenizer(prepared, config.vocab_size)
    with progress.step("Computing the eager fp32 reference"):
        reference = Reference.compute(model, tokenizer, recipe.max_context)
    work = Path(tempfile.mkdtemp(prefix="edgekit-export-"))
    try:
        delegation: mf.Delegation | None = None
        runtime: mf.Runtime
        if recipe.target == "onnx":
            from edgekit.export import onnx as onnx_export

            with progress.step(f"Exporting ONNX with KV cache ({recipe.quantize.scheme})"):
                artifact = onnx_export.export_onnx(prepared.hf_dir, staged, recipe, work)
            counts = onnx_export.quantization_counts(artifact)
            linear_total = sum(1 for _ in _linears(model))
            linear_quantized = counts["quantized"]
            skipped: list[str] = []
            signature = onnx_export.io_signature(artifact)
            with progress.step("Parity check in ONNX Runtime"):
                result = _run_parity(lambda: OnnxRunner(artifact, recipe.threads), reference, "onnxruntime")
            runtime = "onnxruntime"
        else:
            from edgekit.export import executorch as et_export

            artifact = staged / "model.pte"
            with progress.step(f"Exporting ExecuTorch .pte for XNNPACK ({recipe.quantize.scheme})"):
                stats = et_export.export_pte(model, artifact, recipe)
            linear_total, linear_quantized, skipped = stats.linear_total, stats.linear_quantized, stats.skipped_layers
            delegation = mf.Delegation(
                backend="xnnpack",
                delegated_nodes=stats.delegated_nodes,
                non_delegated_nodes=stats.non_delegated_nodes,
                delegated_subgraphs=stats.delegated_subgraphs,
                share=stats.delegated_share,
            )
            signature = _pte_signature(recipe.max_context, config.vocab_size)
            with progress.step("Parity check in the ExecuTorch runtime"):
                result = _run_parity(lambda: PteRunner(artifact), reference, "executorch")
            runtime = "executorch"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if recipe.quantize.scheme == "none":
        linear_quantized = 0
    failures = gate_failures(
        result,
        recipe.gate,
        linear_total=linear_total,
        linear_quantized=linear_quantized,
        delegated_share=delegation.share if delegation else None,
    )
    manifest = mf.Manifest(
        manifest_version=mf.MANIFEST_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model=mf.ModelInfo(
            id=prepared.model_id,
            source_kind=prepared.source_kind,
            source_sha256=prepared.source_sha256,
            architecture=prepared.architecture,
            parameters=parameters,
            vocab_size=config.vocab_size,
            tokenizer=prepared.has_tokenizer,
        ),
        recipe=recipe.model_dump(),
        target=recipe.target,
        runtime=runtime,
        artifact=artifact.name,
        tool_versions=mf.tool_versions(),
        files=mf.describe_files(staged),
        signature=signature,
        max_context=recipe.max_context,
        kv_cache=mf.kv_cache_layout(config, recipe.max_context, static=recipe.target == "executorch"),
        quantization=mf.Quantization(
            scheme=recipe.quantize.scheme,
            linear_total=linear_total,
            linear_quantized=linear_quantized,
            linear_float=linear_total - linear_quantized,
            skipped_layers=skipped,
            embedding=recipe.quantize.embedding,
        ),
        delegation=delegation,
        parity=result.to_quality(),
        gate=mf.GateResult(passed=not failures, failures=failures, thresholds=recipe.gate.model_dump()),
        export_wall_s=round(time.perf_counter() - started, 3),
    )
    mf.write_manifest(staged, manifest)
    return manifest


def _run_parity(make_runner: Any, reference: Reference, runtime: str) -> Any:
    try:
        return measure(make_runner(), reference)
    except Exception as exc:  # the runtimes raise RuntimeError with their own codes
        raise ExportError(f"the exported artifact does not run in {runtime}: {exc}") from exc


def _linears(model: Any) -> Any:
    import torch

    return (m for m in model.modules() if isinstance(m, torch.nn.Linear))


def _pte_signature(max_context: int, vocab_size: int) -> dict[str, Any]:
    seq = f"seq_len<={max_context - 1}"
    return {
        "method": "forward",
        "inputs": [
            {"name": "input_ids", "dtype": "int64", "shape": [1, seq]},
            {"name": "cache_position", "dtype": "int64", "shape": [seq]},
        ],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, seq, vocab_size]}],
    }
