"""The gate reports what a recipe silently skipped, keeps the artifact, and marks the manifest failed."""

from __future__ import annotations

import pytest

from edgekit.errors import ConfigError, ParityError
from edgekit.export.pipeline import export
from edgekit.export.recipes import builtin_recipes, parse_recipe
from edgekit.manifest import read_manifest


def _variant(name: str, **quantize):
    base = builtin_recipes()[name].model_dump()
    base["quantize"].update(quantize)
    return parse_recipe({**base, "name": f"{name}-variant"}, "'variant'")


def test_onnx_block_that_does_not_divide_is_reported(tmp_path):
    # hidden 128 is not a multiple of 256: every linear reading the hidden state (q/k/v, o, gate, up,
    # lm_head) stays float and is named; only down_proj (input 256) is quantized.
    recipe = _variant("onnx-q4", block_size=256)
    out = tmp_path / "a"
    with pytest.raises(ParityError, match=r"only 2 of 11 linear layers quantized"):
        export("tiny-llama", recipe, out)
    m = read_manifest(out)  # kept, and says it failed
    assert m.gate.passed is False
    assert m.quantization.linear_quantized == 2 and m.quantization.linear_float == 9
    assert "lm_head" in m.quantization.skipped_layers and m.quantization.embedding == "float"


def test_tied_lm_head_is_quantized_and_shares_the_embedding(tmp_path):
    # The builder's int4 keeps one 4-bit table for the tied embedding and lm_head: every linear layer counts.
    m = export("tiny-llama", builtin_recipes()["onnx-int4"], tmp_path / "a").manifest
    assert m.quantization.linear_quantized == m.quantization.linear_total == 11
    assert m.quantization.embedding == "4bit-shared"


@pytest.mark.parametrize("name", ["pte-8da4w", "pte-q4"])
def test_group_size_that_does_not_divide_is_reported(tmp_path, name):
    # hidden 128 is not divisible by 256: every 4-bit projection reading the hidden state stays float; the
    # two down_proj (input 256: one group per row, so pte-q4 keeps their single offsets float) are quantized,
    # and so is the 8-bit head (per channel: no groups to divide).
    recipe = _variant(name, block_size=256)
    out = tmp_path / "b"
    with pytest.raises(ParityError, match=r"only 3 of 15 linear layers quantized"):
        export("tiny-llama", recipe, out)
    m = read_manifest(out)
    assert "lm_head" not in m.quantization.skipped_layers
    assert len(m.quantization.skipped_layers) == 12 and all("down_proj" not in s for s in m.quantization.skipped_layers)


def test_failed_thresholds_print_the_numbers(tmp_path):
    base = builtin_recipes()["onnx-int4"].model_dump()
    base["gate"]["min_top1_agreement"] = 1.0
    base["gate"]["max_abs_logit_diff"] = 1e-6
    recipe = parse_recipe({**base, "name": "strict"}, "'strict'")
    with pytest.raises(ParityError, match=r"max \|logit diff\| [0-9.e+-]+ > 1e-06"):
        export("tiny-llama", recipe, tmp_path / "c")


def test_builder_block_that_does_not_divide_the_shared_embedding_is_refused(tmp_path):
    # The builder's shared 4-bit table of the tied embedding and lm_head is read back in whole rows of
    # hidden / block blocks: refused before the build, with what would fit, and nothing is left at --out.
    recipe = _variant("onnx-uint4", block_size=256)
    out = tmp_path / "a"
    with pytest.raises(ConfigError, match=r"block_size 256 does not divide tiny-llama's hidden size 128; .*"
                                          r"\(block_size 128 does\)"):  # fmt: skip
        export("tiny-llama", recipe, out)
    assert not out.exists() and list(tmp_path.iterdir()) == []

