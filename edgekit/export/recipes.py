"""Export recipes: declarative YAML files in ``export_configs/``, validated on load.

A recipe names one target (ONNX in ONNX Runtime GenAI's layout, ExecuTorch, or GGUF for llama.cpp), one
quantization scheme and the thresholds of the quality gate. Parsing happens here, at the edge: YAML ->
pydantic model with unknown keys forbidden -> typed ``Recipe`` used by the exporters. A bad value is an
error naming the recipe, the key and what was allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgekit.errors import ConfigError, UnknownName

# Quantization schemes per target (see README "Export recipes"):
#   onnx:       none | int4 (symmetric, RTN: the model builder's) | uint4 (the builder's asymmetric RTN, a 4-bit
#               zero point per block) | int8 (weight-only, blocks of 32) | 8da8w (8-bit per channel, dynamic
#               8-bit activations: ORT's dynamic quantization)
#               | q4 (affine 4-bit blocks: the source's Q4_1 grid kept exactly when the source is a GGUF)
#   executorch: none | 8da4w (8-bit dynamic activations, symmetric 4-bit groups) | 8da8w (8-bit per channel)
#               | q4 (affine 4-bit groups, the source's grid kept exactly when the source is a GGUF)
#   gguf:       source (a GGUF source as it is) | f32 | f16 | q8_0 | q4_0 | q4_k_m (llama-quantize)
SCHEMES: dict[str, tuple[str, ...]] = {
    "onnx": ("none", "int4", "uint4", "int8", "8da8w", "q4"),
    "executorch": ("none", "8da4w", "8da8w", "q4"),
    "gguf": ("source", "f32", "f16", "q8_0", "q4_0", "q4_k_m"),
}
_BLOCKED = ("int4", "uint4", "int8", "q4", "8da4w")  # schemes with a block (group) size
_BITS = {"none": 32, "f32": 32, "f16": 16, "int8": 8, "8da8w": 8, "q8_0": 8,
         "int4": 4, "uint4": 4, "q4": 4, "8da4w": 4, "q4_0": 4, "q4_k_m": 4}  # fmt: skip


def nominal_bits(scheme: str) -> int | None:
    """Bits per weight a scheme stores the body's linears in (None: it depends on the source, as ``source``)."""
    return _BITS.get(scheme)


def recipes_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "export_configs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quantization(_Strict):
    scheme: str = "none"
    # Weights per block (group) along the input dimension; must divide every quantized layer's width.
    block_size: int | None = None
    # The output layer (lm_head) and, when tied to it, the embedding table: "body" = as the other linears,
    # "int8" = 8 bits (llama.cpp keeps its output layer at Q8_0 for the same reason: it is the largest
    # single matrix and the most sensitive).
    head: Literal["body", "int8"] = "body"
    # ExecuTorch: the embedding table through the quantized embedding ops (4 or 8 bits, groups of 32).
    embedding: Literal["none", "4bit", "8bit"] = "none"

    @model_validator(mode="after")
    def _check_sizes(self) -> Quantization:
        value = self.block_size
        if value is not None and (value < 16 or value & (value - 1)):
            raise ValueError(f"block_size must be a power of two >= 16, got {value}")
        if self.scheme in _BLOCKED and value is None:
            raise ValueError(f"block_size is required for scheme '{self.scheme}'")
        if self.scheme not in _BLOCKED and value is not None:
            raise ValueError(f"block_size only applies to schemes {', '.join(_BLOCKED)}, not '{self.scheme}'")
        return self


class Gate(_Strict):
    """Thresholds of the quality gate (edgekit/export/quality.py), set per recipe from measurements."""

    max_kl: float = Field(ge=0)  # mean KL divergence, reference || artifact, per scored token
    max_ppl_ratio: float = Field(ge=1)
    min_top1_agreement: float = Field(ge=0, le=1)
    max_abs_logit_diff: float = Field(gt=0)  # a sanity bound only: broken artifacts are off by orders
    require_all_linear_quantized: bool = False
    min_delegated_share: float = Field(default=0.0, ge=0, le=1)


class Recipe(_Strict):
    name: str
    description: str
    target: Literal["onnx", "executorch", "gguf"]
    max_context: int = Field(default=512, ge=16, le=131072)
    threads: int = Field(default=2, ge=1, le=256)
    quantize: Quantization = Quantization()
    # ExecuTorch: "custom" = ExecuTorch's LLM ops (in-place KV cache, SDPA over the filled part); "portable"
    # = transformers' static cache on portable kernels, for runtimes without those ops.
    attention: Literal["custom", "portable"] = "custom"
    gate: Gate

    @model_validator(mode="after")
    def _check_target(self) -> Recipe:
        allowed = SCHEMES[self.target]
        q = self.quantize
        if q.scheme not in allowed:
            raise ValueError(
                f"quantize.scheme must be one of {', '.join(allowed)} for target {self.target}, got '{q.scheme}'"
            )
        if self.target != "executorch" and q.embedding != "none":
            raise ValueError("quantize.embedding is only for target executorch (ONNX embeddings follow head)")
        if self.target != "executorch" and self.attention != "custom":
            raise ValueError("attention is only for target executorch")
        if self.target == "gguf" and q.head != "body":
            raise ValueError("quantize.head is not for target gguf (llama-quantize picks the output layer's type)")
        return self

    @property
    def extension(self) -> str:
        return {"onnx": "onnx", "executorch": "pte", "gguf": "gguf"}[self.target]


def _format_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"recipe {source}: " + "; ".join(parts)


def parse_recipe(data: object, source: str) -> Recipe:
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {source}: expected a mapping at the top level")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from exc


def load_recipe_file(path: Path) -> Recipe:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"recipe file '{path}' does not exist") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"recipe '{path}' is not valid YAML{at}: {problem}") from exc
    return parse_recipe(data, f"'{path.name}'")


def builtin_recipes() -> dict[str, Recipe]:
    recipes = {}
    for path in sorted(recipes_dir().glob("*.yaml")):
        recipe = load_recipe_file(path)
        if recipe.name != path.stem:
            raise ConfigError(f"recipe '{path.name}': name '{recipe.name}' must match the file name")
        recipes[recipe.name] = recipe
    return recipes


def resolve_recipe(name_or_path: str) -> Recipe:
    """A built-in recipe by name, or a YAML file by path."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.is_file():
        return load_recipe_file(path)
    recipes = builtin_recipes()
    if name_or_path not in recipes:
        raise UnknownName("recipe", name_or_path, list(recipes))
    return recipes[name_or_path]
