"""The artifact manifest: ``manifest.json`` beside every exported model file, typed.

It is the contract between export and everything downstream (push, the runners, the results store,
the reports): which model and recipe produced the artifact, with which tool versions, which files with
which sha256, the runtime and what it needs, the KV-cache layout, quantization, delegation and the quality
gate's numbers. ``export`` writes it; everything else reads it once, at the edge, with ``read_manifest``
(validated: a manifest that does not parse, or whose file names are not plain names, is an
``ArtifactError``) and passes the ``Manifest`` object on.

The artifact's content address (``Manifest.address`` and ``content_address``) is the one definition of
where an artifact lives on a device and how a trace names it: sha256 of a ``sha256sum``-style listing of
every file of the directory, manifest.json included.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, field_validator

from edgekit.errors import ArtifactError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION: Literal[2] = 2
_TOOLS = ("edgekit", "torch", "executorch", "torchao", "transformers", "onnx", "onnxruntime",
          "onnxruntime-genai", "gguf")

Target = Literal["onnx", "executorch", "gguf"]
Runtime = Literal["onnxruntime-genai", "onnxruntime", "executorch", "llama.cpp"]


def plain_name(value: str) -> str:
    """A file name that stays inside its directory: no separator, not '.', '..' or empty."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise ValueError(f"must be a plain file name, got {value!r}")
    return value


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelInfo(_Part):
    id: str
    source_kind: str  # tiny | bundled | hf-dir | gguf | hub
    source_sha256: str
    architecture: str
    parameters: int
    vocab_size: int
    tokenizer: bool


class FileEntry(_Part):
    name: str
    bytes: int
    sha256: str

    @field_validator("name")
    @classmethod
    def _plain(cls, value: str) -> str:
        return plain_name(value)


class KvCache(_Part):
    layers: int
    kv_heads: int
    head_dim: int
    dtype: str
    max_context: int
    bytes_per_token: int
    bytes_at_max_context: int
    # preallocated: the runtime allocates max_context positions once (ExecuTorch's buffers in the program,
    # ORT GenAI's shared past/present buffer, llama.cpp's n_ctx cells); grows: past/present tensors hold
    # only the positions used.
    kind: Literal["preallocated", "grows"]

    def bytes_for(self, positions: int) -> int:
        """KV-cache bytes a run of ``positions`` positions holds."""
        if self.kind == "preallocated":
            return self.bytes_at_max_context
        return self.bytes_per_token * positions


class Quantization(_Part):
    scheme: str
    bits: int  # nominal bits per weight of the body's linear layers (32 or 16 when not quantized)
    block_size: int | None
    head: str  # the output layer's precision: as the body, or int8
    embedding: str  # the embedding table: float, 4bit, 8bit, or as the head when shared with it
    linear_total: int
    linear_quantized: int
    linear_float: int
    skipped_layers: list[str]


class Delegation(_Part):
    backend: str
    delegated_nodes: int
    non_delegated_nodes: int
    delegated_subgraphs: int
    share: float


class Quality(_Part):
    """The quality gate's measurements against the fp32 reference (edgekit/export/quality.py); every
    interval is a 95% confidence interval over the scored tokens."""

    text: str
    n_ctx: int
    chunks: int
    tokens: int
    kl_mean: float
    kl_ci: tuple[float, float]
    kl_p99: float
    kl_max: float
    top1_agreement: float
    top1_ci: tuple[float, float]
    ppl_reference: float
    ppl_artifact: float
    ppl_ratio: float
    ppl_ratio_ci: tuple[float, float]
    max_abs_logit_diff: float


class GateResult(_Part):
    passed: bool
    failures: list[str]
    thresholds: dict[str, Any]


class Manifest(_Part):
    manifest_version: Literal[2]
    created_at: str
    model: ModelInfo
    recipe: dict[str, Any]  # the resolved recipe, as the export used it
    target: Target
    runtime: Runtime
    artifact: str  # the model file the runtime loads
    tool_versions: dict[str, str | None]
    files: list[FileEntry]
    signature: dict[str, Any]
    max_context: int
    kv_cache: KvCache
    quantization: Quantization
    delegation: Delegation | None = None
    # What a runner must provide to run the artifact (operators, kernels): one line each, checked by the
    # runners before anything runs.
    requires: list[str] = []
    details: dict[str, Any] = {}  # target-specific facts (exporter versions, tensor types, ...)
    parity: Quality
    gate: GateResult
    export_wall_s: float

    _bytes: bytes | None = PrivateAttr(default=None)  # the file's bytes when it was read from disk

    @field_validator("artifact")
    @classmethod
    def _plain(cls, value: str) -> str:
        return plain_name(value)

    @property
    def model_id(self) -> str:
        return self.model.id

    @property
    def recipe_name(self) -> str:
        return str(self.recipe.get("name", "?"))

    @property
    def weights_bytes(self) -> int:
        """Bytes of every model file (an ONNX graph may keep its tensors in a .data file)."""
        return sum(f.bytes for f in self.files)

    @property
    def artifact_bytes(self) -> int | None:
        return next((f.bytes for f in self.files if f.name == self.artifact), None)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"

    def with_gate(self, gate: GateResult, recipe: dict[str, Any]) -> Manifest:
        return self.model_copy(update={"gate": gate, "recipe": recipe})

    def address(self) -> str:
        """The artifact's content address: where it lives on a device, how a trace names it."""
        data = self._bytes if self._bytes is not None else self.to_json().encode()
        entries = [(f.name, f.sha256) for f in self.files]
        entries.append((MANIFEST_NAME, hashlib.sha256(data).hexdigest()))
        return content_address(entries)


def content_address(entries: Iterable[tuple[str, str]]) -> str:
    """sha256 of the ``sha256sum`` listing ("<sha256>  <relative path>\\n" per file, sorted by path)."""
    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(entries))
    return hashlib.sha256(listing.encode()).hexdigest()


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


def describe_files(directory: Path) -> list[FileEntry]:
    return [
        FileEntry(name=p.name, bytes=p.stat().st_size, sha256=sha256_file(p))
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST_NAME
    ]


def kv_cache_layout(config: Any, max_context: int, *, dtype: str = "float32", preallocated: bool = True) -> KvCache:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    layers = config.num_hidden_layers
    bytes_per_token = 2 * layers * kv_heads * head_dim * {"float32": 4, "float16": 2}[dtype]  # keys + values
    return KvCache(
        layers=layers, kv_heads=kv_heads, head_dim=head_dim, dtype=dtype, max_context=max_context,
        bytes_per_token=bytes_per_token, bytes_at_max_context=bytes_per_token * max_context,
        kind="preallocated" if preallocated else "grows",
    )  # fmt: skip


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    path = directory / MANIFEST_NAME
    tmp = directory / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(manifest.to_json())
    os.replace(tmp, path)
    return path


def parse_manifest(data: bytes, where: str) -> Manifest:
    """A manifest from the bytes of a manifest.json; ``ArtifactError`` naming ``where`` when invalid."""
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"'{where}' is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("manifest_version") != MANIFEST_VERSION:
        found = raw.get("manifest_version") if isinstance(raw, dict) else None
        raise ArtifactError(
            f"'{where}': unsupported manifest version {found!r} (this edgekit reads {MANIFEST_VERSION}; "
            "export the artifact again)"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"'{where}': invalid manifest: {key}: {first['msg']}") from exc
    manifest._bytes = data
    return manifest


def read_manifest(directory: Path | str) -> Manifest:
    """The manifest of an artifact directory (or a manifest file), validated."""
    directory = Path(directory)
    if not directory.exists():
        raise ArtifactError(f"artifact directory '{directory}' does not exist")
    path = directory / MANIFEST_NAME if directory.is_dir() else directory
    if not path.exists():
        raise ArtifactError(f"'{directory}' is not an edgekit artifact: no {MANIFEST_NAME}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read '{path}': {exc.strerror}") from exc
    return parse_manifest(data, str(path))


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Every file the manifest lists is present with the recorded size and sha256."""
    for entry in manifest.files:
        path = directory / entry.name
        if not path.exists():
            raise ArtifactError(f"artifact '{directory}': {entry.name} is missing")
        if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
            raise ArtifactError(f"artifact '{directory}': {entry.name} does not match its sha256")
