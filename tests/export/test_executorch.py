"""The ExecuTorch target: programs built on ExecuTorch's LLM ops compute what eager PyTorch computes, the q4
scheme keeps an affine 4-bit grid exactly, the manifest names the kernels a program needs, the portable
fallback runs without them, and a corrupted program fails its gate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgekit.errors import ParityError
from edgekit.export.executorch import PteRunner, _lower
from edgekit.export.executorch_quant import AffineLinear, affine_grid, quantize_model
from edgekit.export.pipeline import export
from edgekit.export.quality import TorchReference, gate_failures, measure
from edgekit.export.recipes import builtin_recipes, parse_recipe
from edgekit.models import load_model, load_tokenizer, prepare

ARCHS = ("llama", "qwen2", "phi3", "gemma")
PROMPTS = ("The quick brown fox jumps over the lazy dog because", "Four score and seven years ago our fathers")


def eager_greedy(model: torch.nn.Module, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True)
        tokens = [int(out.logits[0, -1].argmax())]
        while len(tokens) < n:
            out = model(torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
            tokens.append(int(out.logits[0, -1].argmax()))
    return tokens


def runner_greedy(runner: PteRunner, ids: list[int], n: int) -> list[int]:
    runner.reset()
    tokens = [int(runner.prefill(ids).argmax())]
    while len(tokens) < n:
        tokens.append(int(runner.step(tokens[-1]).argmax()))
    return tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_fp32_program_gives_eager_greedy_tokens(arch: str, tmp_path: Path) -> None:
    result = export(f"tiny-{arch}", builtin_recipes()["pte-fp32"], tmp_path / "a")
    prepared = prepare(f"tiny-{arch}")
    model = load_model(prepared)
    tokenizer = load_tokenizer(prepared, model.config.vocab_size)
    runner = PteRunner(result.out_dir / "model.pte", threads=1)
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        assert runner_greedy(runner, ids, 32) == eager_greedy(model, ids, 32), (arch, prompt)
    assert result.manifest.requires == ["llama::custom_sdpa.out", "llama::update_cache.out"]


def test_affine_grid_is_recovered_exactly_and_computed_exactly() -> None:
    torch.manual_seed(0)
    n, k, group = 48, 96, 32
    scale = torch.rand(n, k // group).half().float() * 0.02 + 0.001
    low = (torch.rand(n, k // group).half().float() - 0.5) * 0.2
    q = torch.randint(0, 16, (n, k))
    q[:, ::group], q[:, 1::group] = 0, 15  # every group spans its grid, as a Q4_1 quantizer leaves it
    weight = q.float() * scale.repeat_interleave(group, 1) + low.repeat_interleave(group, 1)
    got_q, got_scale, got_low, exact = affine_grid(weight, group)
    assert exact and torch.equal(got_q.long(), q)
    assert torch.allclose(got_scale, scale, rtol=1e-5) and torch.allclose(got_low, low, atol=1e-6)
    assert not affine_grid(torch.randn(n, k), group)[3]  # plain float weights are not on a grid
    linear = torch.nn.Linear(k, n, bias=True)
    linear.weight.data = weight
    affine = AffineLinear(linear, group)
    x = torch.randn(5, k)
    # The symmetric part's dequantized weights plus the offset path rebuild W exactly (before activation
    # quantization, which the XNNPACK kernel adds at run time).
    rebuilt = affine.main.weight.dequantize() + affine.offsets.weight.repeat_interleave(group, 1)
    assert torch.allclose(rebuilt, weight, atol=1e-6)
    assert torch.allclose(x @ rebuilt.T + linear.bias, linear(x), atol=1e-5)


def test_quantized_program_names_its_kernels_and_passes_its_gate(tmp_path: Path) -> None:
    result = export("tiny-llama", builtin_recipes()["pte-8da4w"], tmp_path / "a")
    m = result.manifest
    assert "quantized_decomposed::embedding_4bit.out" in m.requires and "llama::custom_sdpa.out" in m.requires
    assert m.quantization.head == "int8" and m.quantization.embedding == "4bit" and m.quantization.bits == 4
    assert m.parity.tokens >= 10_000 and m.gate.passed


def test_portable_fallback_needs_no_llm_kernels(tmp_path: Path) -> None:
    base = builtin_recipes()["pte-fp32"].model_dump()
    recipe = parse_recipe({**base, "name": "pte-fp32-portable", "attention": "portable"}, "'portable'")
    result = export("tiny-llama", recipe, tmp_path / "a")
    assert result.manifest.requires == [] and result.manifest.details["attention"] == "portable"
    assert result.manifest.parity.kl_mean < 1e-4


def test_a_corrupted_scale_fails_the_gate(tmp_path: Path) -> None:
    recipe = builtin_recipes()["pte-q4"]
    prepared = prepare("tiny-llama")
    model = load_model(prepared)
    quantize_model(model, recipe)
    layer = model.model.layers[0].mlp.down_proj
    assert isinstance(layer, AffineLinear)
    layer.main.weight.scale.mul_(10)  # one tensor of group scales, wrong by an order of magnitude
    path = tmp_path / "broken.pte"
    path.write_bytes(_lower(model, recipe)["buffer"])
    reference = load_model(prepared)
    ids = load_tokenizer(prepared, reference.config.vocab_size).encode(open_gate_text())
    result = measure(PteRunner(path, threads=1), TorchReference(reference), ids, text="gate", n_ctx=512)
    failures = gate_failures(result, recipe.gate, linear_total=15, linear_quantized=15, delegated_share=None)
    assert any(f.startswith("mean KL divergence") for f in failures), (failures, result)
    with pytest.raises(ParityError, match="mean KL divergence"):
        strict = parse_recipe({**recipe.model_dump(), "name": "strict", "gate": {**recipe.gate.model_dump(),
                                                                                 "max_kl": 1e-9}}, "'strict'")
        export("tiny-llama", strict, tmp_path / "b")


def open_gate_text() -> str:
    from edgekit.data import gate_text

    return gate_text()
