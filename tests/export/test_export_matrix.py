"""Every architecture × every built-in recipe on the tiny models: exported, run in its own runtime,
parity asserted against the recipe's thresholds, manifest complete and true to the files."""

from __future__ import annotations

import pytest

from edgekit.export.pipeline import export
from edgekit.export.recipes import builtin_recipes
from edgekit.manifest import read_manifest, sha256_file, verify_files

ARCHS = ("llama", "qwen2", "phi3", "gemma")
RECIPES = sorted(builtin_recipes())


@pytest.mark.parametrize("recipe_name", RECIPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_export_passes_gate(arch, recipe_name, tmp_path):
    recipe = builtin_recipes()[recipe_name]
    out = tmp_path / "artifact"
    result = export(f"tiny-{arch}", recipe, out)
    m = read_manifest(out)
    assert m.model_dump() == result.manifest.model_dump() and m.gate.passed, m.gate.failures
    verify_files(out, m)
    artifact = out / m.artifact
    assert artifact.suffix == f".{recipe.extension}"
    assert {f.name for f in m.files} >= {artifact.name}
    assert next(f for f in m.files if f.name == artifact.name).sha256 == sha256_file(artifact)
    # The gate's own numbers, checked here against the recipe rather than trusted.
    p, gate = m.parity, recipe.gate
    assert p.max_abs_logit_diff <= gate.max_abs_logit_diff
    assert p.top1_agreement >= gate.min_top1_agreement
    assert p.ppl_artifact / p.ppl_reference <= gate.max_ppl_ratio
    assert p.compared_positions > 64
    q = m.quantization
    assert q.linear_total >= 2 * 4 + 1  # at least attention + MLP per layer, plus lm_head
    if recipe.quantize.scheme == "none":
        assert q.linear_quantized == 0
    else:
        assert q.linear_quantized == q.linear_total
    kv = m.kv_cache
    assert (kv.layers, kv.kv_heads, kv.head_dim) == (2, 2, 32)
    assert m.model.architecture == arch and m.max_context == recipe.max_context
    assert (m.tool_versions["torch"] or "").startswith("2.13.0")
    if recipe.target == "executorch":
        assert m.delegation is not None and 0 < m.delegation.share <= 1 and m.delegation.delegated_subgraphs >= 1
        assert [i["name"] for i in m.signature["inputs"]] == ["input_ids", "cache_position"]
    else:
        names = [i["name"] for i in m.signature["inputs"]]
        assert "input_ids" in names and "past_key_values.0.key" in names
        assert "present.1.value" in [o["name"] for o in m.signature["outputs"]]
