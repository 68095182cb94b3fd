"""Artifacts as the store knows them: a manifest turned into one ``artifacts`` row, keyed by content address.

The content address is the one ``edgekit push`` uses for the directory (sha256 of the ``sha256sum``-style
listing of every file, manifest.json included), computed here from the manifest's own file list plus the
manifest file's bytes, so the (possibly large) model file is never re-read. A trace names the address it
ran; a manifest that does not hash to it is the wrong manifest. This module reads files, never the store.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgekit.export.manifest import MANIFEST_NAME, read_manifest

_BITS = re.compile(r"(\d+)w|int(\d+)")


@dataclass
class ManifestSource:
    """A manifest and, when it came from a file, that file's path (needed for the content address)."""

    manifest: dict[str, Any]
    path: Path | None = None

    @property
    def address(self) -> str | None:
        return content_address(self.manifest, self.path.read_bytes()) if self.path else None


def content_address(manifest: dict[str, Any], manifest_bytes: bytes) -> str:
    entries = [(f["name"], f["sha256"]) for f in manifest.get("files", [])]
    entries.append((MANIFEST_NAME, hashlib.sha256(manifest_bytes).hexdigest()))
    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(entries))
    return hashlib.sha256(listing.encode()).hexdigest()


def load_manifest(path: Path) -> ManifestSource:
    """A manifest from an artifact directory or a manifest file (validated by the export module)."""
    path = Path(path)
    manifest = read_manifest(path)
    return ManifestSource(manifest, path / MANIFEST_NAME if path.is_dir() else path)


def manifest_beside(trace_path: Path) -> ManifestSource | None:
    candidate = Path(trace_path).parent / MANIFEST_NAME
    return load_manifest(candidate) if candidate.is_file() else None


def quant_bits(scheme: str | None) -> int | None:
    """Weight bits of a quantization scheme name: int4 -> 4, 8da4w -> 4, none -> 32 (fp32)."""
    if not scheme or scheme == "none":
        return 32
    match = _BITS.search(scheme)
    if not match:
        return None
    return int(match.group(1) or match.group(2))


def artifact_row(sha256: str, manifest: dict[str, Any]) -> dict[str, Any]:
    model = manifest.get("model", {})
    recipe = manifest.get("recipe", {})
    quant = manifest.get("quantization", {})
    kv = manifest.get("kv_cache", {})
    parity = manifest.get("parity", {})
    files = manifest.get("files", [])
    artifact_file = manifest.get("artifact")
    scheme = quant.get("scheme") or recipe.get("quantize", {}).get("scheme")
    return {
        "sha256": sha256,
        "model_id": model.get("id", "?"),
        "params": model.get("parameters"),
        "architecture": model.get("architecture"),
        "recipe": recipe.get("name", "?") if isinstance(recipe, dict) else str(recipe),
        "target": manifest.get("target"),
        "runtime": manifest.get("runtime"),
        "quant_scheme": scheme,
        "quant_block_size": recipe.get("quantize", {}).get("block_size"),
        "quant_embedding": quant.get("embedding"),
        "quant_bits": quant_bits(scheme),
        "artifact_file": artifact_file,
        "artifact_bytes": next((f["bytes"] for f in files if f["name"] == artifact_file), None),
        "total_bytes": sum(f.get("bytes", 0) for f in files),
        "kv_kind": kv.get("kind"),
        "kv_bytes_per_token": kv.get("bytes_per_token"),
        "kv_bytes_at_max_context": kv.get("bytes_at_max_context"),
        "max_context": manifest.get("max_context", kv.get("max_context")),
        "parity_max_abs_logit_diff": parity.get("max_abs_logit_diff"),
        "parity_top1_agreement": parity.get("top1_agreement"),
        "parity_ppl_ratio": parity.get("ppl_ratio"),
        "gate_passed": manifest.get("gate", {}).get("passed"),
        "manifest_json": json.dumps(manifest, sort_keys=True),
        "added_at": datetime.now(UTC).replace(tzinfo=None),
    }
