"""The ONNX target: the q4 pass is exact on a Q4_1 grid, the fp32 GenAI artifact generates what eager
transformers generates (through onnxruntime-genai, in the Python agent's own loop), and the gate fails
a q4 artifact that was broken on purpose."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.data import GATE_TEXT_NAME, gate_text
from edgekit.export import quality
from edgekit.export.onnx import MODEL_FILE, GenAIGraphRunner
from edgekit.export.onnx_quant import quantize_affine4, quantize_graph, quantize_sym8
from edgekit.export.onnx_smooth import smooth, smoothable_inputs
from edgekit.export.pipeline import export
from edgekit.export.recipes import Recipe, load_recipe_file, recipes_dir
from edgekit.manifest import read_manifest
from edgekit.models import load_model, load_tokenizer, prepare

AGENT_DIR = Path(__file__).resolve().parents[2] / "device_agents" / "linux"
ARCHS = ("llama", "qwen2", "phi3", "gemma")
BLOCK = 32


def onnx_recipe(name: str) -> Recipe:
    return load_recipe_file(recipes_dir() / f"{name}.yaml")


# --- the q4 pass on a synthetic grid --------------------------------------------------------------


def q4_1_grid(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights [n, k] as llama.cpp's Q4_1 dequantizes them (w = d * q + m, d and m fp16, q in 0..15, every
    block holding its 0 and its 15 as Q4_1's own rounding leaves it), and their levels."""
    q = rng.integers(0, 16, size=(n, k // BLOCK, BLOCK))
    q[..., 0], q[..., 1] = 0, 15
    q = rng.permuted(q, axis=-1)
    d = rng.uniform(0.002, 0.02, size=(n, k // BLOCK, 1)).astype(np.float16).astype(np.float32)
    m = -rng.uniform(0.0, 0.15, size=(n, k // BLOCK, 1)).astype(np.float16).astype(np.float32)
    return (d * q + m).reshape(n, k).astype(np.float32), q.reshape(n, k).astype(np.uint8)


def q8_0_grid(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q = rng.integers(-127, 128, size=(n, k // BLOCK, BLOCK))
    q[..., 0] = 127
    d = rng.uniform(0.001, 0.01, size=(n, k // BLOCK, 1)).astype(np.float16).astype(np.float32)
    return (d * q).reshape(n, k).astype(np.float32)


def _tied_graph(embed_head: np.ndarray, weight: np.ndarray):
    """input_ids -> Gather(Transpose(H)) -> MatMul(W) -> MatMul(H) -> logits, as the model builder ties them."""
    from onnx import TensorProto, helper, numpy_helper

    head = "lm_head.MatMul.weight"
    nodes = [
        helper.make_node("Transpose", [head], ["table"], perm=[1, 0], name="/model/embed_tokens/Transpose"),
        helper.make_node("Gather", ["table", "input_ids"], ["x"], name="/model/embed_tokens/Gather"),
        helper.make_node("MatMul", ["x", "layer.MatMul.weight"], ["h"], name="/model/layers.0/mlp/up_proj/MatMul"),
        helper.make_node("MatMul", ["h", head], ["logits"], name="/lm_head/MatMul"),
    ]  # fmt: skip
    inits = [numpy_helper.from_array(np.ascontiguousarray(embed_head.T), head),
             numpy_helper.from_array(np.ascontiguousarray(weight.T), "layer.MatMul.weight")]  # fmt: skip
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "S"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "S", embed_head.shape[0]])
    graph = helper.make_graph(nodes, "g", [ids], [logits], inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _run(model, ids: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_ids": ids})[0]


def test_q4_1_and_q8_0_grids_are_recovered_exactly():
    rng = np.random.default_rng(0)
    w, levels = q4_1_grid(rng, 64, 256)
    blocks = quantize_affine4(w, BLOCK)
    assert np.array_equal(blocks.levels, levels)
    assert np.abs(blocks.dequantize() - w).max() <= 1e-6 * np.abs(w).max()
    w8 = q8_0_grid(rng, 64, 256)
    assert np.abs(quantize_sym8(w8, BLOCK).dequantize() - w8).max() <= 1e-6 * np.abs(w8).max()


@pytest.mark.parametrize("head", ["int8", "q4"])
def test_q4_graph_computes_the_grid_weights_exactly(head):
    # Accuracy level 0 (fp32 activations) isolates the weights: the q4 graph must compute the source's own
    # grid as the fp32 MatMul does, offsets, shared embedding and all. (Exports ship level 4, which also
    # rounds the activations to 8 bits.)
    rng = np.random.default_rng(1)
    vocab, k = 256, 128
    weight, _ = q4_1_grid(rng, k, k)
    table = q8_0_grid(rng, vocab, k) if head == "int8" else q4_1_grid(rng, vocab, k)[0]
    ids = rng.integers(0, vocab, size=(1, 9)).astype(np.int64)
    reference = _run(_tied_graph(table, weight), ids)
    model = _tied_graph(table, weight)
    result = quantize_graph(model, body="q4", head=head, block=BLOCK, accuracy_level=0)  # type: ignore[arg-type]
    ops = [n.op_type for n in model.graph.node]
    assert result.linears == 2 and ops.count("MatMulNBits") == 2 and "GatherBlockQuantized" in ops
    assert result.embedding == ("8bit-shared" if head == "int8" else "4bit-shared")
    # One table: the embedding gathers from the lm_head's own levels, reshaped.
    nodes = {o: n for n in model.graph.node for o in n.output}
    gather = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    head_node = nodes["logits"] if head == "int8" else nodes[nodes["logits"].input[0]]
    assert nodes[gather.input[0]].op_type == "Reshape" and nodes[gather.input[0]].input[0] == head_node.input[1]
    assert "Transpose" not in ops and "lm_head.MatMul.weight" not in {t.name for t in model.graph.initializer}
    got = _run(model, ids)
    assert np.abs(got - reference).max() <= 1e-5 * np.abs(reference).max()


def test_off_grid_weights_compute_their_dequantized_blocks():
    # For a source that is not on a grid, the graph computes exactly the blocks quantize_* chose.
    rng = np.random.default_rng(2)
    table = rng.standard_normal((256, 128)).astype(np.float32) * 0.05
    weight = rng.standard_normal((128, 128)).astype(np.float32) * 0.05
    ids = rng.integers(0, 256, size=(1, 7)).astype(np.int64)
    model = _tied_graph(table, weight)
    quantize_graph(model, body="q4", head="int8", block=BLOCK, accuracy_level=0)
    head = quantize_sym8(table, BLOCK).dequantize()
    expected = head[ids[0]] @ quantize_affine4(weight, BLOCK).dequantize().T @ head.T
    got = _run(model, ids)[0]
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


# --- 8da8w: ORT's dynamic quantization, after SmoothQuant -------------------------------------------


def _mlp_graph(rng: np.random.Generator, vocab: int = 64, k: int = 96, hidden: int = 160):
    """Embedding -> RMSNorm -> gated MLP (silu(gate) * up -> down) -> lm_head, the model builder's op types,
    with four input channels a hundred times larger than the rest (the outliers LLM activations carry)."""
    from onnx import TensorProto, helper, numpy_helper

    table = rng.standard_normal((vocab, k)).astype(np.float32)
    table[:, [3, 17, 40, 77]] *= 100.0
    weights = {"table": table, "gamma": rng.uniform(0.5, 1.5, k).astype(np.float32),
               "gate.weight": rng.standard_normal((k, hidden)).astype(np.float32) * 0.05,
               "up.weight": rng.standard_normal((k, hidden)).astype(np.float32) * 0.05,
               "down.weight": rng.standard_normal((hidden, k)).astype(np.float32) * 0.05,
               "head.weight": rng.standard_normal((k, vocab)).astype(np.float32) * 0.05}  # fmt: skip
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["e"], name="/model/embed_tokens/Gather"),
        helper.make_node("SimplifiedLayerNormalization", ["e", "gamma"], ["x"], name="/norm", epsilon=1e-5, axis=-1),
        helper.make_node("MatMul", ["x", "gate.weight"], ["g"], name="/mlp/gate_proj/MatMul"),
        helper.make_node("MatMul", ["x", "up.weight"], ["u"], name="/mlp/up_proj/MatMul"),
        helper.make_node("Sigmoid", ["g"], ["sg"], name="/mlp/act/Sigmoid"),
        helper.make_node("Mul", ["g", "sg"], ["silu"], name="/mlp/act/Mul"),
        helper.make_node("Mul", ["silu", "u"], ["a"], name="/mlp/Mul"),
        helper.make_node("MatMul", ["a", "down.weight"], ["d"], name="/mlp/down_proj/MatMul"),
        helper.make_node("MatMul", ["d", "head.weight"], ["logits"], name="/lm_head/MatMul"),
    ]  # fmt: skip
    inits = [numpy_helper.from_array(v, n) for n, v in weights.items()]
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "S"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "S", vocab])
    graph = helper.make_graph(nodes, "g", [ids], [logits], inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _maxima(model, names: list[str], ids: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    probe = type(model)()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return {n: np.abs(v.reshape(-1, v.shape[-1])).max(axis=0)
            for n, v in zip(names, session.run(names, {"input_ids": ids}), strict=True)}  # fmt: skip


def test_smoothing_is_exact_and_rescues_8da8w_from_outlier_channels():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 64, size=(1, 40)).astype(np.int64)
    reference = _run(_mlp_graph(np.random.default_rng(3)), ids)
    model = _mlp_graph(np.random.default_rng(3))
    names = smoothable_inputs(model)
    assert names == ["x", "a"]  # the RMSNorm's output (scale folded into gamma), the MLP's product (into up)
    assert smooth(model, _maxima(model, names, ids), alpha=0.5) == ["x", "a"]
    smoothed = _run(model, ids)
    assert np.abs(smoothed - reference).max() <= 1e-4 * np.abs(reference).max()  # the same function in fp32

    def error(graph) -> float:
        result = quantize_graph(graph, body="8da8w", head="8da8w", block=BLOCK)
        assert result.linears == 4 and [n.op_type for n in graph.graph.node].count("DynamicQuantizeMatMul") == 4
        return float(np.abs(_run(graph, ids) - reference).mean() / np.abs(reference).mean())

    plain, smoothed_error = error(_mlp_graph(np.random.default_rng(3))), error(model)
    assert smoothed_error < 0.75 * plain, (smoothed_error, plain)  # measured: 0.026 against 0.042


def test_8da8w_shares_the_lm_head_levels_with_the_embedding():
    from onnx import TensorProto, helper

    rng = np.random.default_rng(4)
    table = rng.standard_normal((256, 128)).astype(np.float32)
    weight = rng.standard_normal((128, 128)).astype(np.float32)
    ids = rng.integers(0, 256, size=(1, 9)).astype(np.int64)
    model = _tied_graph(table, weight)
    result = quantize_graph(model, body="8da8w", head="8da8w", block=BLOCK)
    assert result.linears == 2 and result.embedding == "8bit-shared"
    weights = {t.name for t in model.graph.initializer if "weight" in t.name}  # one table: no float left
    assert weights == {f"{m}.MatMul.weight_{kind}" for m in ("layer", "lm_head") for kind in ("int8", "scales")}
    model.graph.output.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, None))
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = session.run(["x"], {"input_ids": ids})[0][0]
    # the embedding's rows are the lm_head's per-channel levels times their scales: exactly what quantize_sym8 keeps
    assert np.abs(rows - quantize_sym8(table, 128).dequantize()[ids[0]]).max() <= 1e-6 * np.abs(table).max()


# --- the fp32 artifact through onnxruntime-genai --------------------------------------------------


def _agent_loops():
    spec = importlib.util.spec_from_file_location("edgekit_agent_loops", AGENT_DIR / "agent_loops.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def _greedy_matches_transformers(model_spec: str, out: Path, gen: int = 32) -> None:
    import torch

    result = export(model_spec, onnx_recipe("onnx-fp32"), out)
    prepared = prepare(model_spec)
    model = load_model(prepared)
    text = gate_text()
    tokenizer = load_tokenizer(prepared, model.config.vocab_size)
    prompts = [tokenizer.encode(text[2000:2200])[:40], tokenizer.encode(text[9000:9100])[:12]]
    loop = _agent_loops().GenAILoop(str(out / result.manifest.artifact), 1, 64)
    for ids in prompts:
        stamps: list[str] = []
        tokens = loop.generate(ids, gen, lambda name, k, stamps=stamps: stamps.append(name), None)
        with torch.no_grad():
            eager = model.generate(torch.tensor([ids]), max_new_tokens=gen, min_new_tokens=gen, do_sample=False,
                                   pad_token_id=model.config.eos_token_id)[0, len(ids):].tolist()  # fmt: skip
        assert tokens == eager
        assert stamps == ["prefill_start", "prefill_end"] + ["decode_step"] * (gen - 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_fp32_genai_greedy_equals_eager_transformers(arch, tmp_path):
    _greedy_matches_transformers(f"tiny-{arch}", tmp_path / "a")


@pytest.mark.slow
def test_smollm2_fp32_genai_greedy_equals_eager_transformers(tmp_path):
    _greedy_matches_transformers("smollm2-135m", tmp_path / "a")


# --- a broken artifact fails the gate ---------------------------------------------------------------


def _scale_times_ten(arrays: dict[str, np.ndarray]) -> None:
    name = next(n for n in arrays if n.endswith("qkv_proj.MatMul.weight_scales"))
    arrays[name] = arrays[name] * 10


def _two_bit_levels(arrays: dict[str, np.ndarray]) -> None:
    for name in [n for n in arrays if n.startswith("model.layers.") and n.endswith(".weight_Q4")]:
        packed = arrays[name]
        levels = np.stack([packed & 0x0F, packed >> 4], axis=-1).astype(np.int32)
        levels = np.clip(np.rint(levels / 5.0) * 5, 0, 15).astype(np.uint8)  # 4 of the 16 levels: 2 bits
        arrays[name] = (levels[..., 0] | (levels[..., 1] << 4)).astype(np.uint8)


@pytest.mark.parametrize("damage", [_scale_times_ten, _two_bit_levels], ids=["scale-x10", "2-bit-levels"])
def test_broken_q4_artifact_fails_the_gate(damage, tmp_path):
    import onnx
    from onnx import numpy_helper

    recipe = onnx_recipe("onnx-q4")
    good = export("tiny-llama", recipe, tmp_path / "good").out_dir
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in good.iterdir():
        if not path.name.startswith(MODEL_FILE):
            shutil.copy2(path, broken / path.name)
    model = onnx.load(str(good / MODEL_FILE))
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    before = {n: a.copy() for n, a in arrays.items()}
    damage(arrays)
    changed = [n for n in arrays if not np.array_equal(arrays[n], before[n])]
    assert changed
    for tensor in model.graph.initializer:
        if tensor.name in changed:
            tensor.CopyFrom(numpy_helper.from_array(arrays[tensor.name], tensor.name))
    onnx.save_model(model, str(broken / MODEL_FILE), save_as_external_data=True, location=f"{MODEL_FILE}.data")

    manifest = read_manifest(good)
    prepared = prepare("tiny-llama")
    reference = load_model(prepared)
    ids = load_tokenizer(prepared, reference.config.vocab_size).encode(gate_text())
    runner = GenAIGraphRunner(broken, threads=recipe.threads, max_context=recipe.max_context)
    result = quality.measure(runner, quality.TorchReference(reference), ids, text=GATE_TEXT_NAME)
    q = manifest.quantization
    failures = quality.gate_failures(result, recipe.gate, linear_total=q.linear_total,
                                     linear_quantized=q.linear_quantized, delegated_share=None)  # fmt: skip
    assert manifest.gate.passed and failures, (result.kl_mean, result.ppl_ratio, result.top1_agreement)
    assert any("KL divergence" in f for f in failures)
