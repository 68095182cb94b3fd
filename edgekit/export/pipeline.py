"""The export job: model source + recipe -> artifact directory that passed (or failed) its gate.

The target (``target.py``: ONNX, ExecuTorch, GGUF) writes the artifact; then the fp32 reference is loaded
fresh and the quality gate (``quality.py``) runs the artifact in its own runtime against it. Everything is
written into a temporary sibling of ``--out`` and renamed into place at the end, so bad input or a crash
leaves nothing at ``--out``. A gate failure keeps the artifact (its manifest says ``failed``) and raises
``ParityError`` so the CLI exits non-zero with the numbers.
Finished artifacts are cached by a key over the source hash, the resolved recipe, tool versions and a digest
of edgekit's own export code; an export asked for afresh replaces its entry.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgekit import manifest as mf
from edgekit import paths
from edgekit._progress import NO_STEPS, Steps
from edgekit.data import GATE_TEXT_NAME, gate_text
from edgekit.errors import ArtifactError, EdgekitError, ExportError, ParityError
from edgekit.export import quality
from edgekit.export.quality import QualityResult, TorchReference, gate_failures
from edgekit.export.recipes import Recipe, nominal_bits
from edgekit.export.target import Exported, Target, get_target
from edgekit.models import PreparedModel, load_model, load_tokenizer, prepare


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


@functools.cache
def exporter_digest() -> str:
    """sha256 over edgekit's own export code (``edgekit/export/*.py``): an artifact made by other code is
    another artifact, whatever edgekit's version number says."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _cache_key(source_sha256: str, recipe: Recipe) -> str:
    # The gate's thresholds are not part of the key: they judge the artifact, they do not make it.
    # A cached artifact is judged again against the recipe's current thresholds (``_judge``).
    what_makes_it = recipe.model_dump(exclude={"gate", "name", "description"})
    payload = {"source": source_sha256, "recipe": what_makes_it, "tools": mf.tool_versions(),
               "exporter": exporter_digest(), "manifest_version": mf.MANIFEST_VERSION}
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
            _store_in_cache(staged, cached_dir, replace=not use_cache)
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
        QualityResult(**manifest.parity.model_dump()),
        recipe.gate,
        linear_total=q.linear_total,
        linear_quantized=q.linear_quantized,
        delegated_share=delegation.share if delegation else None,
    )
    gate = mf.GateResult(passed=not failures, failures=failures, thresholds=recipe.gate.model_dump())
    return manifest.with_gate(gate, recipe.model_dump())


def _store_in_cache(staged: Path, cached_dir: Path, *, replace: bool) -> None:
    """Copy ``staged`` into the cache; ``replace``: an export asked for afresh (``--no-cache``) takes the place
    of the entry already there (otherwise the first export to finish keeps it)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{cached_dir.name}.", dir=cached_dir.parent))
    for path in staged.iterdir():
        shutil.copy2(path, tmp / path.name)
    if replace and cached_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{cached_dir.name}.old.", dir=cached_dir.parent))
        with contextlib.suppress(OSError):  # gone already: another export replaced it
            os.replace(cached_dir, old / "entry")
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, cached_dir)
    except OSError:  # another export filled the cache first
        shutil.rmtree(tmp, ignore_errors=True)


def _export_fresh(prepared: PreparedModel, recipe: Recipe, staged: Path, progress: Steps) -> mf.Manifest:
    started = time.perf_counter()
    target = get_target(recipe.target)
    work = Path(tempfile.mkdtemp(prefix="edgekit-export-"))
    try:
        with progress.step(f"Exporting {target.label} ({recipe.quantize.scheme})"):
            exported = target.export(prepared, recipe, staged, work, progress)
        with progress.step("Loading the fp32 reference in PyTorch"):
            model = load_model(prepared)
            config = model.config
            parameters = sum(p.numel() for p in model.parameters())
            ids = load_tokenizer(prepared, config.vocab_size).encode(gate_text())
        with progress.step(f"Quality gate in {exported.runtime} against the fp32 reference"):
            result = _measure(target, staged, exported, recipe, model, ids)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    linear_quantized = 0 if recipe.quantize.scheme == "none" else exported.linear_quantized
    failures = gate_failures(result, recipe.gate, linear_total=exported.linear_total, linear_quantized=linear_quantized,
                             delegated_share=exported.delegation.share if exported.delegation else None)  # fmt: skip
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
        runtime=exported.runtime,
        artifact=exported.artifact.name,
        tool_versions=mf.tool_versions(),
        files=mf.describe_files(staged),
        signature=exported.signature,
        max_context=recipe.max_context,
        kv_cache=exported.kv_cache,
        quantization=mf.Quantization(
            scheme=recipe.quantize.scheme,
            bits=exported.bits or nominal_bits(recipe.quantize.scheme) or 32,
            block_size=recipe.quantize.block_size,
            head=recipe.quantize.head,
            embedding=exported.embedding,
            linear_total=exported.linear_total,
            linear_quantized=linear_quantized,
            linear_float=exported.linear_total - linear_quantized,
            skipped_layers=exported.skipped_layers,
        ),
        delegation=exported.delegation,
        requires=exported.requires,
        details=exported.details,
        parity=mf.Quality(**asdict(result)),
        gate=mf.GateResult(passed=not failures, failures=failures, thresholds=recipe.gate.model_dump()),
        export_wall_s=round(time.perf_counter() - started, 3),
    )
    mf.write_manifest(staged, manifest)
    return manifest


def _measure(target: Target, staged: Path, exported: Exported, recipe: Recipe, model: Any,
             ids: list[int]) -> QualityResult:  # fmt: skip
    try:
        runner = target.open_runner(staged, exported, recipe)
        return quality.measure(runner, TorchReference(model), ids, text=GATE_TEXT_NAME,
                               n_ctx=min(quality.N_CTX, recipe.max_context))  # fmt: skip
    except EdgekitError:
        raise
    except Exception as exc:  # the runtimes raise RuntimeError with their own codes
        raise ExportError(f"the exported artifact does not run in {exported.runtime}: {exc}") from exc
