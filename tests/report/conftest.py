"""A results store filled once per module with generated profiles whose true values are known.

Two devices; tiny-llama exported int4 (decode 25 ms/token) and fp32 (decode 50 ms/token: int4 is 2x
faster by construction); a larger tiny-qwen int4; an unstable cell (15% jitter) and a cell without a
power sensor. Every profile uses the survey's workload (P=50, G=50).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgekit.store import Store, ingest_trace
from tests.store.tracegen import ArtifactSpec, ProfileSpec, Truth, make_profile

INT4 = ArtifactSpec(model_id="tiny-llama", params=135_000_000, recipe="onnx-int4", scheme="int4",
                    weights_bytes=80 * 1024 * 1024)
FP32 = ArtifactSpec(model_id="tiny-llama", params=135_000_000, recipe="onnx-fp32", scheme="none",
                    weights_bytes=520 * 1024 * 1024)
QWEN = ArtifactSpec(model_id="tiny-qwen", params=494_000_000, recipe="onnx-int4", scheme="int4",
                    architecture="Qwen2ForCausalLM", weights_bytes=300 * 1024 * 1024, kv_bytes_per_token=12 * 1024)
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
