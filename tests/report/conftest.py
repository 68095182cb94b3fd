"""A results store filled once per module with generated profiles whose true values are known.

Two devices; tiny-llama exported int4 (decode 25 ms/token) and fp32 (decode 50 ms/token: int4 is 2x
faster by construction); a larger tiny-qwen int4; an unstable cell (15% jitter) and a cell without a
power sensor. Every profile uses the survey's workload (P=50, G=50).

Quality (the manifests' perplexity ratios) differs by construction, with SmolLM2-like numbers: on pixel-8,
tiny-llama also runs as onnx-int8, pte-q4 and gguf-q4_k_m, so its frontier of decode tok/s against ppl
ratio is onnx-int4 (40, 1.356), pte-q4 (35.2: 26 ms a token plus 0.1 ms per token index; 1.020),
onnx-int8 (22.2, 1.006) and onnx-fp32 (20, 1.000), while gguf-q4_k_m (33.3, 1.063) is beaten by pte-q4 on
both; the fastest within 1% ppl is onnx-int8 and the smallest within 5% pte-q4. tiny-qwen's only artifact
(1.020) has nothing within 1%.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgekit.store import Store, ingest_trace
from tests.store.tracegen import ArtifactSpec, ProfileSpec, Truth, make_profile

INT4 = ArtifactSpec(model_id="tiny-llama", params=135_000_000, recipe="onnx-int4", scheme="int4",
                    weights_bytes=80 * 1024 * 1024, ppl_ratio=1.356, kl_mean=0.369)
FP32 = ArtifactSpec(model_id="tiny-llama", params=135_000_000, recipe="onnx-fp32", scheme="none",
                    weights_bytes=520 * 1024 * 1024, ppl_ratio=1.0, kl_mean=0.0)
QWEN = ArtifactSpec(model_id="tiny-qwen", params=494_000_000, recipe="onnx-int4", scheme="int4",
                    architecture="Qwen2ForCausalLM", weights_bytes=300 * 1024 * 1024, kv_bytes_per_token=12 * 1024)
# max_context = P + G: a preallocated cache then holds what the generator's sampler reports.
INT8 = ArtifactSpec(model_id="tiny-llama", params=135_000_000, recipe="onnx-int8", scheme="int8",
                    weights_bytes=157 * 1024 * 1024, ppl_ratio=1.0058, kl_mean=0.0039)
PTE = ArtifactSpec(model_id="tiny-llama", params=135_000_000, recipe="pte-q4", target="executorch", scheme="q4",
                   weights_bytes=125 * 1024 * 1024, max_context=100, ppl_ratio=1.0202, kl_mean=0.0187)
GGUF = ArtifactSpec(model_id="tiny-llama", params=135_000_000, recipe="gguf-q4_k_m", target="gguf", scheme="q4_k_m",
                    weights_bytes=106 * 1024 * 1024, max_context=100, ppl_ratio=1.0632, kl_mean=0.0503)
RUNS = 20


@dataclass
class Filled:
    home: Path
    truths: dict[str, Truth] = field(default_factory=dict)
    specs: dict[str, tuple[ProfileSpec, ArtifactSpec]] = field(default_factory=dict)
    run_ids: dict[str, list[str]] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)


PROFILES = {
    "pixel-int4": (ProfileSpec(device="pixel-8", runs=RUNS, prefill_ms=120, decode_ms=25, seed=11), INT4),
    "pixel-fp32": (ProfileSpec(device="pixel-8", runs=RUNS, prefill_ms=240, decode_ms=50, seed=12), FP32),
    "pixel-qwen": (ProfileSpec(device="pixel-8", runs=RUNS, prefill_ms=400, decode_ms=70, seed=13), QWEN),
    "pixel-int8": (ProfileSpec(device="pixel-8", runs=RUNS, prefill_ms=200, decode_ms=45, seed=16), INT8),
    "pixel-pte": (ProfileSpec(device="pixel-8", runs=RUNS, prefill_ms=90, decode_ms=26, seed=17, decode_growth_ms=0.1,
                              load_w=6.0), PTE),
    "pixel-gguf": (ProfileSpec(device="pixel-8", runs=RUNS, prefill_ms=150, decode_ms=30, seed=18), GGUF),
    "rpi-int4": (ProfileSpec(device="rpi5", runs=RUNS, prefill_ms=300, decode_ms=60, seed=14, jitter=0.15,
                             power_source=None), INT4),
    "rpi-fp32": (ProfileSpec(device="rpi5", runs=RUNS, prefill_ms=600, decode_ms=120, seed=15, charging=True,
                             power_source="battery"), FP32),
}  # fmt: skip


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    root = tmp_path_factory.mktemp("profiles")
    result = Filled(tmp_path_factory.mktemp("report-home"))
    with Store(result.home) as store:
        for name, (spec, artifact) in PROFILES.items():
            trace, _, truth = make_profile(root, name, spec, artifact)
            ingested = ingest_trace(trace, store=store)
            result.truths[name] = truth
            result.specs[name] = (spec, artifact)
            result.run_ids[name] = ingested.run_ids
            result.artifacts[name] = ingested.artifact_sha256
    return result


def true_decode_tok_s(name: str) -> float:
    """The decode tok/s the generator aims at for a profile (its jitter aside)."""
    spec, _ = PROFILES[name]
    step_ms = [spec.decode_ms + spec.decode_growth_ms * k for k in range(spec.gen_len - 1)]
    return (spec.gen_len - 1) / (sum(step_ms) / 1000)


def expected_frontier(device: str, model: str) -> tuple[list[str], str | None, str | None]:
    """The frontier and picks of a group, computed by brute force from the generator's true values."""
    mine = {n: a for n, (s, a) in PROFILES.items() if s.device == device and a.model_id == model}
    speed = {n: true_decode_tok_s(n) for n in mine}
    front = [n for n in mine if not any(speed[o] >= speed[n] and mine[o].ppl_ratio <= mine[n].ppl_ratio
                                        and (speed[o] > speed[n] or mine[o].ppl_ratio < mine[n].ppl_ratio)
                                        for o in mine)]  # fmt: skip
    fastest = max((n for n in mine if mine[n].ppl_ratio <= 1.01), key=lambda n: speed[n], default=None)
    # Peak memory of a generated profile: base + weights + KV cache + compute; the same base and compute here.
    smallest = min((n for n in mine if mine[n].ppl_ratio <= 1.05), key=lambda n: mine[n].weights_bytes, default=None)
    recipe = {n: a.recipe for n, a in mine.items()}
    return ([recipe[n] for n in sorted(front, key=lambda n: -speed[n])], fastest and recipe[fastest],
            smallest and recipe[smallest])  # fmt: skip
