"""The real model: SmolLM2-135M-Instruct from the bundled GGUF, to ONNX int4 and ExecuTorch 8da4w,
both through the parity gate. Minutes on 2 cores; marked slow (deselect with ``-m 'not slow'``)."""

from __future__ import annotations

import pytest

from edgekit.export.pipeline import export
from edgekit.export.recipes import builtin_recipes

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("recipe_name", ["onnx-int4", "pte-8da4w"])
def test_smollm2_passes_gate(recipe_name, tmp_path):
    result = export("smollm2-135m", builtin_recipes()[recipe_name], tmp_path / recipe_name)
    m = result.manifest
    assert m["gate"]["passed"], m["gate"]["failures"]
    assert m["model"]["architecture"] == "llama" and 130e6 < m["model"]["parameters"] < 140e6
    # The tied lm_head is quantized too: every linear layer, 30 layers x 7 + lm_head.
    assert m["quantization"]["linear_quantized"] == m["quantization"]["linear_total"] == 211
    size = sum(f["bytes"] for f in m["files"])
    # Linear layers at 4 bits; the fp32 embedding table (113 MB) dominates what is left.
    assert size < 230e6, f"a 4-bit 135M model should be far below fp32 (540 MB), got {size / 1e6:.0f} MB"
