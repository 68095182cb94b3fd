"""Every architecture × every built-in recipe on the tiny models: exported, run in its own runtime,
parity asserted against the recipe's thresholds, manifest complete and true to the files."""

from __future__ import annotations

import json

import pytest

from edgekit.export.pipeline import export
from edgekit.export.recipes import load_recipe_file, recipes_dir
from edgekit.manifest import read_manifest, sha256_file, verify_files

ARCHS = ("llama", "qwen2", "phi3", "gemma")
# By file, each loaded in its own test: a recipe that does not load fails its own cases, not the collection.
# gguf-source passes a GGUF source through unchanged: the tiny models are not GGUF files (tests/export/test_gguf.py
# covers it on a GGUF made from one, and checks the refusal here).
RECIPES = sorted(p.stem for p in recipes_dir().glob("*.yaml") if p.stem != "gguf-source")
TIED = {"llama": True, "qwen2": True, "phi3": False, "gemma": True}


@pytest.mark.parametrize("recipe_name", RECIPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_export_passes_gate(arch, recipe_name, tmp_path):
    recipe = load_recipe_file(recipes_dir() / f"{recipe_name}.yaml")
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
    assert p.kl_mean <= gate.max_kl and p.ppl_ratio <= gate.max_ppl_ratio
    assert p.tokens >= 10_000
    q = m.quantization
    assert q.linear_total >= 2 * 4 + 1  # at least attention + MLP per layer, plus lm_head
    if q.bits >= 16:  # none, f32, f16: float weights
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
    elif recipe.target == "onnx":
        _check_onnx(m, recipe, arch, out)


def _check_onnx(m, recipe, arch, out):
    names = [i["name"] for i in m.signature["inputs"]]
    assert names[:2] == ["input_ids", "attention_mask"] and "past_key_values.1.value" in names
    assert [o["name"] for o in m.signature["outputs"]][:2] == ["logits", "present.0.key"]
    assert m.runtime == "onnxruntime-genai" and m.artifact == "model.onnx" and m.requires == ["onnxruntime-genai"]
    assert {f.name for f in m.files} >= {"model.onnx", "model.onnx.data", "genai_config.json"}
    config = json.loads((out / "genai_config.json").read_text())
    assert config["search"]["max_length"] == recipe.max_context and config["search"]["past_present_share_buffer"]
    assert m.kv_cache.kind == "preallocated" and m.kv_cache.max_context == recipe.max_context
    assert m.details["exporter"].startswith("onnxruntime-genai model builder ")
    ops = m.details["graph_ops"]
    assert ops["GroupQueryAttention"] == 2 and ops["SkipSimplifiedLayerNormalization"] == 4
    # q, k and v are one MatMul in GenAI's graph: 5 linear layers a layer, plus the lm_head.
    assert m.quantization.linear_total == 2 * 5 + 1
    scheme, tied = recipe.quantize.scheme, TIED[arch]
    if scheme == "none":
        assert "MatMulNBits" not in ops and m.quantization.embedding == "float"
    elif scheme == "8da8w":  # ORT's dynamic quantization: every linear, the lm_head too, no MatMulNBits
        assert ops["DynamicQuantizeMatMul"] == 11 and "MatMulNBits" not in ops
        assert m.quantization.embedding == "8bit" + ("-shared" if tied else "")
        _check_dynamic(out / "model.onnx", tied)
    else:
        assert ops["MatMulNBits"] == 11
        head_bits = "8bit" if recipe.quantize.head == "int8" or scheme == "int8" else "4bit"
        if scheme in ("int4", "uint4") and not tied:  # the builder leaves an untied embedding in float
            assert m.quantization.embedding == "float"
        else:
            assert m.quantization.embedding == head_bits + ("-shared" if tied else "")
        if scheme == "uint4":
            _check_zero_points(out / "model.onnx", tied)


def _check_dynamic(path, tied):
    """8da8w: int8 weights [K, N] with one float scale per output channel and no zero point (symmetric); the
    embedding gathers 8-bit rows, from the lm_head's own tensor when tied, and no float table is left."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    linears = [n for n in model.graph.node if n.op_type == "DynamicQuantizeMatMul"]
    for n in linears:
        weight, scales = inits[n.input[1]], inits[n.input[2]]
        assert len(n.input) == 3 and weight.dtype == "int8" and scales.shape == (weight.shape[1],)
        assert weight.min() >= -127 and (abs(weight).max(axis=0) == 127).mean() > 0.9  # each column spans its scale
    levels = next(n for n in model.graph.node if n.op_type == "Gather" and "input_ids" in n.input
                  and inits.get(n.input[0]) is not None and inits[n.input[0]].dtype == "int8")  # fmt: skip
    head = next(n for n in linears if "logits" in n.output)
    assert (levels.input[0] == head.input[1]) == tied
    rotary = ("cos_cache", "sin_cache")
    floats = [k for k, v in inits.items() if v.dtype == "float32" and v.ndim == 2 and k not in rotary]
    assert not floats, f"float weights left in the graph: {floats}"


def _check_zero_points(path, tied):
    """Asymmetric int4: every MatMulNBits has its zero points, and a tied embedding reads the lm_head's
    levels, scales and zero points (the builder's own graph pointed it at a float weight and gave it none)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    linears = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert all(len(n.input) >= 4 and n.input[3] in inits for n in linears)
    if tied:
        head = next(n for n in linears if "logits" in n.output)
        gather = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
        table = next(n for n in model.graph.node if gather.input[0] in n.output)
        assert table.op_type == "Reshape" and table.input[0] == head.input[1]
        assert list(gather.input[2:]) == list(head.input[2:4])
        floats = {t.name for t in model.graph.initializer
                  if t.data_type == onnx.TensorProto.FLOAT and t.name.startswith("lm_head")}  # fmt: skip
        assert floats <= {head.input[2]}, f"the lm_head's float weight is still in the graph: {floats}"
