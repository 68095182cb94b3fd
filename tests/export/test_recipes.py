"""Recipe validation: every built-in loads; bad files fail with the key and the allowed values."""

from __future__ import annotations

import pytest
import yaml

from edgekit.errors import ConfigError, UnknownName
from edgekit.export.recipes import builtin_recipes, load_recipe_file, parse_recipe, resolve_recipe

BASE = {
    "name": "x",
    "description": "d",
    "target": "onnx",
    "quantize": {"scheme": "int4", "block_size": 32},
    "gate": {"max_kl": 0.5, "max_abs_logit_diff": 1.0, "min_top1_agreement": 0.5, "max_ppl_ratio": 1.5},
}


def test_builtin_recipes_cover_every_target_and_scheme():
    recipes = builtin_recipes()
    combos = {(r.target, r.quantize.scheme, r.quantize.block_size) for r in recipes.values()}
    assert {("onnx", "none", None), ("onnx", "int8", 32), ("onnx", "int4", 32), ("onnx", "uint4", 64),
            ("onnx", "q4", 32), ("onnx", "8da8w", None)} <= combos
    assert {("executorch", "none", None), ("executorch", "8da4w", 32), ("executorch", "8da8w", None)} <= combos
    assert {("executorch", "q4", 32), ("gguf", "source", None), ("gguf", "q8_0", None)} <= combos
    assert any(r.quantize.embedding == "4bit" for r in recipes.values())


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"quantize\.blocksize: unknown key"):
        parse_recipe({**BASE, "quantize": {"scheme": "int4", "block_size": 32, "blocksize": 32}}, "'x'")


def test_bad_scheme_names_allowed_values():
    message = r"scheme must be one of none, int4, uint4, int8, 8da8w, q4 for target onnx, got '8da4w'"
    with pytest.raises(ConfigError, match=message):
        parse_recipe({**BASE, "quantize": {"scheme": "8da4w", "block_size": 32}}, "'x'")


def test_bad_literal_names_allowed_values():
    with pytest.raises(ConfigError, match=r"target: .*'onnx', 'executorch' or 'gguf'.*got 'tflite'"):
        parse_recipe({**BASE, "target": "tflite"}, "'x'")


def test_block_size_must_be_power_of_two():
    with pytest.raises(ConfigError, match=r"block_size must be a power of two >= 16, got 12"):
        parse_recipe({**BASE, "quantize": {"scheme": "int4", "block_size": 12}}, "'x'")


def test_out_of_range_threshold():
    with pytest.raises(ConfigError, match=r"gate\.min_top1_agreement"):
        parse_recipe({**BASE, "gate": {**BASE["gate"], "min_top1_agreement": 1.5}}, "'x'")


def test_unknown_recipe_lists_known():
    with pytest.raises(UnknownName, match=r"unknown recipe 'onnx-int3'; known: .*onnx-int4"):
        resolve_recipe("onnx-int3")


def test_recipe_file_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert resolve_recipe(str(path)).quantize.block_size == 32
    path.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe_file(path)
