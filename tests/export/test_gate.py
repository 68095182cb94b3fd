"""The gate reports what a recipe silently skipped, keeps the artifact, and marks the manifest failed."""

from __future__ import annotations

import pytest

from edgekit.errors import ParityError
from edgekit.export.pipeline import export
from edgekit.export.recipes import builtin_recipes, parse_recipe
from edgekit.manifest import read_manifest


def _variant(name: str, **quantize):
    base = builtin_recipes()[name].model_dump()
    base["quantize"].update(quantize)
    return parse_recipe({**base, "name": f"{name}-variant"}, "'variant'")


def test_tied_lm_head_is_caught_without_materialising(tmp_path):
    # SmolLM2-style tied output projection: optimum leaves MatMul(x, Transpose(embedding)), which the
    # int4 quantizer skips. The count must expose it.
    recipe = _variant("onnx-int4", materialize_tied_lm_head=False)
    out = tmp_path / "a"
    with pytest.raises(ParityError, match=r"only 14 of 15 linear layers quantized"):
        export("tiny-llama", recipe, out)
    m = read_manifest(out)  # kept, and says it failed
    assert m.gate.passed is False
    assert m.quantization.linear_quantized == 14 and m.quantization.linear_float == 1


def test_materialised_lm_head_is_quantized(tmp_path):
    result = export("tiny-llama", builtin_recipes()["onnx-int4"], tmp_path / "a")
    assert result.manifest.quantization.linear_quantized == 15


def test_group_size_that_does_not_divide_is_reported(tmp_path):
    # hidden 128 is not divisible by 256: every projection reading the hidden state stays float.
    recipe = _variant("pte-8da4w", block_size=256)
    out = tmp_path / "b"
    with pytest.raises(ParityError, match=r"only 2 of 15 linear layers quantized"):
        export("tiny-llama", recipe, out)
    m = read_manifest(out)
    assert "lm_head" in m.quantization.skipped_layers
    assert len(m.quantization.skipped_layers) == 13


def test_failed_thresholds_print_the_numbers(tmp_path):
    base = builtin_recipes()["onnx-int4"].model_dump()
    base["gate"]["min_top1_agreement"] = 1.0
    base["gate"]["max_abs_logit_diff"] = 1e-6
    recipe = parse_recipe({**base, "name": "strict"}, "'strict'")
    with pytest.raises(ParityError, match=r"max \|logit diff\| [0-9.e+-]+ > 1e-06"):
        export("tiny-llama", recipe, tmp_path / "c")
