"""Export recipes: declarative YAML files in ``export_configs/``, validated on load.

A recipe names one target (ONNX or ExecuTorch), one quantization scheme and the thresholds of the
parity gate. Parsing happens here, at the edge: YAML -> pydantic model with unknown keys forbidden ->
typed ``Recipe`` used by the exporters. A bad value is an error naming the recipe, the key and what was
allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgekit.errors import ConfigError, UnknownName

ONNX_SCHEMES = ("none", "int8", "int4")
EXECUTORCH_SCHEMES = ("none", "8da4w", "8da8w")


def recipes_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "export_configs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quantization(_Strict):
    scheme: Literal["none", "int8", "int4", "8da4w", "8da8w"] = "none"
    # ONNX int4: MatMulNBits block size. ExecuTorch 8da4w: torchao group size.
    block_size: int | None = None
    symmetric: bool = True
    # ONNX: give a tied lm_head (MatMul on Transpose(embedding)) its own constant so it is quantized.
    materialize_tied_lm_head: bool = False
    # ExecuTorch: quantize the embedding table too.
    embedding: Literal["none", "4bit", "8bit"] = "none"
    embedding_group_size: int = 32

    @model_validator(mode="after")
    def _check_sizes(self) -> Quantization:
        for key in ("block_size", "embedding_group_size"):
            value = getattr(self, key)
            if value is not None and (value < 16 or value & (value - 1)):
                raise ValueError(f"{key} must be a power of two >= 16, got {value}")
        if self.scheme in ("int4", "8da4w") and self.block_size is None:
            raise ValueError(f"block_size is required for scheme '{self.scheme}'")
        if self.scheme not in ("int4", "8da4w") and self.block_size is not None:
            raise ValueError(f"block_size only applies to schemes int4 and 8da4w, not '{self.scheme}'")
        return self


class Gate(_Strict):
    """Thresholds of the parity and quality gate, checked after every export."""

    max_abs_logit_diff: float = Field(gt=0)
    min_top1_agreement: float = Field(ge=0, le=1)
    max_ppl_ratio: float = Field(ge=1)
    require_all_linear_quantized: bool = False
    min_delegated_share: float = Field(default=0.0, ge=0, le=1)


class Recipe(_Strict):
    name: str
    description: str
    target: Literal["onnx", "executorch"]
    max_context: int = Field(default=512, ge=16, le=131072)
    threads: int = Field(default=2, ge=1, le=256)
    quantize: Quantization = Quantization()
    gate: Gate

    @model_validator(mode="after")
    def _check_target(self) -> Recipe:
        allowed = ONNX_SCHEMES if self.target == "onnx" else EXECUTORCH_SCHEMES
        if self.quantize.scheme not in allowed:
            raise ValueError(
                f"quantize.scheme must be one of {', '.join(allowed)} for target {self.target}, "
                f"got '{self.quantize.scheme}'"
            )
        if self.target == "onnx" and self.quantize.embedding != "none":
            raise ValueError("quantize.embedding is only supported for target executorch")
        if self.target == "executorch" and self.quantize.materialize_tied_lm_head:
            raise ValueError("quantize.materialize_tied_lm_head is only meaningful for target onnx")
        return self

    @property
    def extension(self) -> str:
        return "onnx" if self.target == "onnx" else "pte"


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
        raise ConfigError(f"recipe '{path}' is not valid YAML: {exc}") from exc
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
