"""The real model: SmolLM2-135M-Instruct from the bundled Q4_1 GGUF, through the best recipes of each target,
held to the quality the project promises (llama.cpp's own Q8_0 / Q4_K_M on the same text as the yardstick).
Minutes each on 2 cores; marked slow (deselect with ``-m 'not slow'``); ``bench/quality.py`` prints the table."""

from __future__ import annotations

import pytest

from edgekit.export.pipeline import export
from edgekit.export.recipes import builtin_recipes
from edgekit.models import prepare

pytestmark = pytest.mark.slow

FOUR_BIT = ("onnx-q4", "pte-q4", "gguf-q4_k_m")
EIGHT_BIT = ("onnx-int8", "gguf-q8_0")


@pytest.mark.parametrize("recipe_name", FOUR_BIT + EIGHT_BIT)
def test_smollm2_quality(recipe_name, tmp_path):
    result = export("smollm2-135m", builtin_recipes()[recipe_name], tmp_path / recipe_name)
    m = result.manifest
    assert m.gate.passed, m.gate.failures
    assert m.model.architecture == "llama" and 130e6 < m.model.parameters < 140e6
    assert m.quantization.linear_quantized == m.quantization.linear_total
    p = m.parity
    assert p.tokens >= 10_000
    assert p.ppl_ratio_ci[1] - p.ppl_ratio_ci[0] < 0.06, "the gate's interval must be narrower than +-3%"
    if recipe_name in EIGHT_BIT:
        assert p.ppl_ratio <= 1.01 and p.top1_agreement >= 0.95
    elif recipe_name != "gguf-q4_k_m":  # edgekit's own 4-bit: better than llama.cpp's Q4_K_M (1.06 / 0.05 here)
        gguf = prepare("smollm2-135m").gguf_file
        assert gguf is not None
        assert p.ppl_ratio <= 1.05 and p.kl_mean <= 0.05
        assert m.weights_bytes <= 1.5 * gguf.stat().st_size
