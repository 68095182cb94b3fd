"""Artifacts as the store knows them: a manifest turned into one ``artifacts`` row, keyed by content address.

The content address is ``Manifest.address`` (the one ``edgekit push`` uses for the directory). A trace
names the address it ran; a manifest that does not hash to it is the wrong manifest. This module reads
files, never the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgekit.manifest import MANIFEST_NAME, Manifest, read_manifest


def manifest_beside(trace_path: Path) -> Manifest | None:
    candidate = Path(trace_path).parent / MANIFEST_NAME
    return read_manifest(candidate) if candidate.is_file() else None


def artifact_row(sha256: str, manifest: Manifest) -> dict[str, Any]:
    quant, kv, parity = manifest.quantization, manifest.kv_cache, manifest.parity
    scheme = quant.scheme
    return {
        "sha256": sha256,
        "model_id": manifest.model_id,
        "params": manifest.model.parameters,
        "architecture": manifest.model.architecture,
        "recipe": manifest.recipe_name,
        "target": manifest.target,
        "runtime": manifest.runtime,
        "quant_scheme": scheme,
        "quant_block_size": (manifest.recipe.get("quantize") or {}).get("block_size"),
        "quant_embedding": quant.embedding,
        "quant_bits": quant.bits,
        "artifact_file": manifest.artifact,
        "artifact_bytes": manifest.artifact_bytes,
        "total_bytes": manifest.weights_bytes,
        "kv_kind": kv.kind,
        "kv_bytes_per_token": kv.bytes_per_token,
        "kv_bytes_at_max_context": kv.bytes_at_max_context,
        "max_context": manifest.max_context,
        "parity_max_abs_logit_diff": parity.max_abs_logit_diff,
        "parity_top1_agreement": parity.top1_agreement,
        "parity_ppl_ratio": parity.ppl_ratio,
        "parity_kl_mean": parity.kl_mean,
        "parity_kl_ci_low": parity.kl_ci[0],
        "parity_kl_ci_high": parity.kl_ci[1],
        "parity_ppl_ratio_ci_low": parity.ppl_ratio_ci[0],
        "parity_ppl_ratio_ci_high": parity.ppl_ratio_ci[1],
        "gate_passed": manifest.gate.passed,
        "manifest_json": manifest.to_json(),
        "added_at": datetime.now(UTC).replace(tzinfo=None),
    }
