"""A generator of TRACE.md-conformant traces and minimal artifact manifests with known true values.

A generated profile has the shape a real agent writes: a 1 s idle baseline window, model load, W warm-up
repetitions, R measured repetitions (prefill of P tokens, then G-1 decode steps), an error event for
repetitions asked to fail, and a sampler every ``sample_ms`` with rss/hwm/pss, per-core frequency,
thermal zones and power. Every repetition's true TTFT and per-token decode time are returned, so tests can
check the store and the reports against an independent computation. Used by tests and by ``bench/store.py``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.export.recipes import nominal_bits
from edgekit.manifest import (
    FileEntry,
    GateResult,
    KvCache,
    Manifest,
    ModelInfo,
    Quality,
    Quantization,
    read_manifest,
    write_manifest,
)

MS_NS = 1_000_000


@dataclass
class ArtifactSpec:
    model_id: str = "tiny-llama"
    params: int = 135_000_000
    architecture: str = "LlamaForCausalLM"
    recipe: str = "onnx-int4"
    target: str = "onnx"
    scheme: str = "int4"
    weights_bytes: int = 80 * 1024 * 1024
    kv_bytes_per_token: int = 30 * 1024
    max_context: int = 256
    ppl_ratio: float = 1.02  # the quality gate's numbers written into the manifest
    kl_mean: float = 0.02


@dataclass
class ProfileSpec:
    device: str = "pixel-8"
    prompt_len: int = 50
    gen_len: int = 50
    warmup: int = 1
    runs: int = 5
    threads: int = 4
    sample_ms: int = 20
    prefill_ms: float = 120.0  # true median TTFT
    decode_ms: float = 25.0  # true median time per generated token
    jitter: float = 0.02  # relative standard deviation between repetitions
    idle_w: float = 1.0
    busy_w: float = 3.5
    power_source: str | None = "hwmon"
    charging: bool | None = False
    base_rss_kb: int = 20_000  # the runner process before the model is loaded
    compute_kb: int = 30_000  # activations and runtime buffers while generating
    fail_runs: tuple[int, ...] = ()
    decode_growth_ms: float = 0.0  # added to the decode time of each later token index (a KV cache filling up)
    load_w: float | None = None  # power while the model loads (None: idle power)
    seed: int = 0
    started_at: str = "2026-11-22T18:00:00Z"


@dataclass
class Truth:
    """What the generator put in the trace, per measured repetition (failed ones excluded)."""

    ttft_ms: list[float] = field(default_factory=list)
    decode_tok_s: list[float] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)


_RUNTIMES = {"onnx": ("model.onnx", "onnxruntime"), "executorch": ("model.pte", "executorch"),
             "gguf": ("model.gguf", "llama.cpp")}  # fmt: skip


def fake_manifest(spec: ArtifactSpec) -> Manifest:
    """A complete, valid manifest describing a fake artifact of ``spec`` (its file is never written)."""
    name, runtime = _RUNTIMES[spec.target]
    ppl, kl = spec.ppl_ratio, spec.kl_mean
    fake = hashlib.sha256(f"{spec.model_id}/{spec.recipe}/{spec.weights_bytes}".encode()).hexdigest()
    return Manifest(
        manifest_version=2,
        created_at="2026-11-22T17:00:00+00:00",
        model=ModelInfo(id=spec.model_id, source_kind="tiny", source_sha256="0" * 64, architecture=spec.architecture,
                        parameters=spec.params, vocab_size=512, tokenizer=False),
        recipe={"name": spec.recipe, "target": spec.target, "quantize": {"scheme": spec.scheme, "block_size": 32}},
        target=spec.target,  # type: ignore[arg-type]
        runtime=runtime,  # type: ignore[arg-type]
        artifact=name,
        tool_versions={},
        files=[FileEntry(name=name, bytes=spec.weights_bytes, sha256=fake)],
        signature={},
        max_context=spec.max_context,
        kv_cache=KvCache(
            layers=2, kv_heads=2, head_dim=32, dtype="float32", max_context=spec.max_context,
            kind="grows" if spec.target == "onnx" else "preallocated",
            bytes_per_token=spec.kv_bytes_per_token, bytes_at_max_context=spec.kv_bytes_per_token * spec.max_context,
        ),
        quantization=Quantization(scheme=spec.scheme, bits=nominal_bits(spec.scheme) or 32, block_size=32,
                                  head="body", embedding="float",
                                  linear_total=14, linear_quantized=14, linear_float=0, skipped_layers=[]),
        parity=Quality(text="alice29.txt", n_ctx=512, chunks=40, tokens=10200, kl_mean=kl,
                       kl_ci=(kl * 0.95, kl * 1.05), kl_p99=kl * 10, kl_max=kl * 50, top1_agreement=0.97,
                       top1_ci=(0.966, 0.974), ppl_reference=10.0, ppl_artifact=10.0 * ppl, ppl_ratio=ppl,
                       ppl_ratio_ci=(ppl - 0.005, ppl + 0.005), max_abs_logit_diff=1.5),
        gate=GateResult(passed=True, failures=[], thresholds={}),
        export_wall_s=1.0,
    )  # fmt: skip


def write_artifact(directory: Path, spec: ArtifactSpec) -> tuple[Path, str]:
    """A minimal artifact directory (manifest only); returns (manifest path, content address)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = write_manifest(directory, fake_manifest(spec))
    return path, read_manifest(path).address()


def _sample(ts_ns: int, rss_kb: int, power_w: float | None, temp_mc: int, rng: random.Random) -> dict[str, Any]:
    return {
        "type": "sample",
        "ts_ns": ts_ns,
        "rss_kb": rss_kb,
        "hwm_kb": rss_kb,
        "pss_kb": int(rss_kb * 0.92),
        "cpu_freq_khz": [rng.choice((1_800_000, 2_400_000)) for _ in range(4)],
        "thermal_mc": {"cpu-thermal": temp_mc, "soc-thermal": temp_mc - 2000},
        "power_uw": None if power_w is None else int(power_w * 1e6),
        "energy_uj": None,
        "voltage_uv": 3_900_000,
        "current_ua": None if power_w is None else -int(power_w / 3.9 * 1e6),
    }


def generate(spec: ProfileSpec, artifact: ArtifactSpec, artifact_sha256: str) -> tuple[list[dict[str, Any]], Truth]:
    """The records of one trace (header first, footer last) and the true per-run values."""
    rng = random.Random(spec.seed)
    events: list[dict[str, Any]] = []
    busy: list[tuple[int, int]] = []
    truth = Truth()
    t = 5_000 * MS_NS

    def ev(name: str, run: int, warmup: bool = False, **extra: Any) -> None:
        events.append({"type": "event", "name": name, "ts_ns": t, "run": run, "warmup": warmup, **extra})

    begin = t
    ev("baseline_start", -1)
    t += 1000 * MS_NS
    ev("baseline_end", -1)
    ev("load_start", -1)
    load_start = t
    t += 300 * MS_NS
    ev("load_end", -1)
    loaded_at = t
    plan = [(i, True) for i in range(spec.warmup)] + [(i, False) for i in range(spec.runs)]
    for run, warm in plan:
        t += 50 * MS_NS
        start = t
        ev("run_start", run, warm)
        t += MS_NS
        ev("prefill_start", run, warm)
        prefill_start = t
        factor = max(0.5, rng.gauss(1.0, spec.jitter))
        if not warm and run in spec.fail_runs:
            t += int(spec.prefill_ms * 0.3 * MS_NS)
            ev("error", run, warm, reason="oom", message="out of memory in prefill", stderr_tail="killed")
            busy.append((start, t))
            continue
        t += int(spec.prefill_ms * factor * MS_NS)
        ev("prefill_end", run, warm)
        prefill_end = t
        for k in range(1, spec.gen_len):
            t += int((spec.decode_ms + spec.decode_growth_ms * (k - 1)) * factor * rng.uniform(0.97, 1.03) * MS_NS)
            ev("decode_step", run, warm, token_index=k)
        last = t
        t += MS_NS
        ev("run_end", run, warm)
        busy.append((start, t))
        if not warm:
            truth.run_ids.append(run)
            truth.ttft_ms.append((prefill_end - prefill_start) / MS_NS)
            truth.decode_tok_s.append((spec.gen_len - 1) / ((last - prefill_end) / 1e9))
    t += 200 * MS_NS
    end = t
    weights_kb = artifact.weights_bytes // 1024
    kv_kb = artifact.kv_bytes_per_token * (spec.prompt_len + spec.gen_len) // 1024
    samples = []
    ts = begin + 3 * MS_NS
    while ts < end:
        on = any(a <= ts <= b for a, b in busy)
        rss = spec.base_rss_kb + (weights_kb if ts >= loaded_at else 0) + ((kv_kb + spec.compute_kb) if on else 0)
        level = spec.busy_w if on else spec.idle_w
        if spec.load_w is not None and load_start <= ts <= loaded_at:
            level = spec.load_w
        power = None if spec.power_source is None else level * rng.uniform(0.99, 1.01)
        temp = 40_000 + int(8_000 * (ts - begin) / max(1, end - begin))
        samples.append(_sample(ts + rng.randint(-MS_NS, MS_NS), rss, power, temp, rng))
        ts += spec.sample_ms * MS_NS
    header = {
        "type": "header",
        "schema_version": 1,
        "agent": {"name": "edgekit-linux-agent", "version": "1.0.0"},
        "runner": {"kind": "python-onnxruntime", "version": "1.23.0"},
        "device": {
            "name": spec.device, "model": f"{spec.device} model", "soc": "tensor-g3", "cores": 8,
            "abi": "arm64-v8a", "ram_kb": 8_000_000, "os": "Android 15", "battery_pct": 80.0,
            "charging": spec.charging, "temperature_mc": 35_000,
        },
        "artifact": {
            "sha256": artifact_sha256, "model_id": artifact.model_id, "recipe": artifact.recipe,
            "runtime": _RUNTIMES[artifact.target][1], "file": _RUNTIMES[artifact.target][0],
        },
        "workload": {
            "prompt_len": spec.prompt_len, "gen_len": spec.gen_len, "warmup": spec.warmup, "runs": spec.runs,
            "threads": spec.threads, "sample_ms": spec.sample_ms, "prompt_ids": list(range(1, spec.prompt_len + 1)),
        },
        "power_source": spec.power_source,
        "power_source_detail": "hwmon0 ina3221 rail 'VDD_IN'" if spec.power_source else None,
        "started_at": spec.started_at,
    }
    failed = len(spec.fail_runs)
    footer = {
        "type": "footer", "ts_ns": end, "status": "ok" if not failed else "failed",
        "runs_completed": spec.runs - failed, "runs_failed": failed,
        "self_hwm_kb": spec.base_rss_kb + weights_kb + kv_kb + spec.compute_kb,
    }  # fmt: skip
    body = sorted(events + samples, key=lambda r: r["ts_ns"])
    return [header, *body, footer], truth


def write_trace(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    return path


def make_profile(
    root: Path, name: str, spec: ProfileSpec, artifact: ArtifactSpec, *, manifest_beside: bool = True
) -> tuple[Path, Path, Truth]:
    """Write ``root/<name>/trace.jsonl`` (and its manifest.json beside it); returns (trace, manifest, truth)."""
    directory = root / name
    manifest_path, sha = write_artifact(directory if manifest_beside else root / f"{name}-artifact", artifact)
    records, truth = generate(spec, artifact, sha)
    return write_trace(directory / "trace.jsonl", records), manifest_path, truth
