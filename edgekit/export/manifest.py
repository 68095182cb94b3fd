"""The artifact manifest: ``manifest.json`` beside every exported model file.

It is the contract between export and everything downstream (push, the on-device agents, the results
store): what model and recipe produced the artifact, with which tool versions, which files with which
sha256, the runtime signature, the KV-cache layout, quantization and delegation counts, and the parity
results including whether the gate passed. Written atomically; read with validation.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from edgekit.errors import ArtifactError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_TOOLS = ("edgekit", "torch", "executorch", "torchao", "transformers", "optimum-onnx", "onnx", "onnxruntime")


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for tool in _TOOLS:
        try:
            versions[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            versions[tool] = None
    return versions


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(directory: Path) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST_NAME
    ]


def kv_cache_layout(config: Any, max_context: int, *, static: bool) -> dict[str, Any]:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    layers = config.num_hidden_layers
    bytes_per_token = 2 * layers * kv_heads * head_dim * 4  # keys + values, fp32
    return {
        "layers": layers,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "dtype": "float32",
        "max_context": max_context,
        "bytes_per_token": bytes_per_token,
        "bytes_at_max_context": bytes_per_token * max_context,
        "kind": "static-buffers-in-program" if static else "past-present-io",
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    path = directory / MANIFEST_NAME
    tmp = directory / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(directory: Path) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.exists():
        raise ArtifactError(f"artifact directory '{directory}' does not exist")
    path = directory / MANIFEST_NAME if directory.is_dir() else directory
    if not path.exists():
        raise ArtifactError(f"'{directory}' is not an edgekit artifact: no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"'{path}' is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ArtifactError(f"'{path}': unsupported manifest version {manifest.get('manifest_version')!r}")
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists is present with the recorded size and sha256."""
    for entry in manifest["files"]:
        path = directory / entry["name"]
        if not path.exists():
            raise ArtifactError(f"artifact '{directory}': {entry['name']} is missing")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"artifact '{directory}': {entry['name']} does not match its sha256")
