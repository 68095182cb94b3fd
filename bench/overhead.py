"""Benchmark (not a test): what the agent's samplers cost the measured decode loop.

Runs the Linux agent on this host (the host is the device here) on one artifact, alternating runs with
the sampler at ``--sample-ms`` (default 10 ms, the fastest the agent allows) and runs with the sampler
off (``--no-sampler``), and compares decode ms/token (median of the per-run medians, and the mean
1000 / decode tok/s) as ``metrics.py`` computes them from the traces. Alternating pairs keep slow drift
of a shared machine out of the comparison. Target: overhead below 1 %.

The runner gets one thread by default, leaving the sampler a core as a phone or board does (the runner's
threads fewer than the cores): with the runner on every core of this 2-core host, each sample preempts
it and the overhead measures the scheduler, not the sampler.

Writes ``bench/results/overhead.json`` and ``bench/results/overhead.md``.

Run: ``.venv/bin/python bench/overhead.py [--model smollm2-135m] [--recipe onnx-fp32] [--threads 1] [--pairs 4]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def run_agent(artifact: Path, out: Path, workload: Any, *flags: str) -> dict[str, Any]:
    from edgekit.manifest import read_manifest
    from edgekit.profile.metrics import compute_metrics
    from edgekit.profile.python_agent import local_argv
    from edgekit.profile.trace import load_trace

    subprocess.run(local_argv(artifact, out, workload, *flags), check=True, capture_output=True, timeout=1800)
    metrics = compute_metrics(load_trace(out / "trace.jsonl"), read_manifest(artifact))
    p50 = metrics.median("decode_ms_p50")
    tok_s = metrics.median("decode_tok_s")
    samples = sum(1 for line in (out / "trace.jsonl").read_text().splitlines() if '"sample"' in line)
    return {"decode_ms_p50": p50, "decode_ms_per_token": 1000 / tok_s if tok_s else None,
            "cv_decode_tok_s": metrics.cv("decode_tok_s"), "samples": samples}


def sampler_cost_us(artifact: Path, n_samples: int = 400) -> dict[str, float]:
    """CPU cost of one sample against a process holding the artifact in ONNX Runtime (this one), with and
    without the smaps_rollup (PSS) read: a load-independent bound on what the sampler takes from the
    device, reported as a duty cycle of one core at the sampling period."""
    import importlib
    import os

    from edgekit.profile.python_agent import AGENT_DIR

    sys.path.insert(0, str(AGENT_DIR))  # the agent's modules import each other by name, as on a device
    sensors, trace = importlib.import_module("agent_sensors"), importlib.import_module("agent_trace")
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])

    class _Sink:
        def write(self, record: dict[str, Any]) -> None:
            pass

    sampler = trace.Sampler(_Sink(), 0.01, sensors.detect_power_source(), 3600.0)
    sampler.pid = os.getpid()
    sampler.sample()  # the first sample reads PSS; the following ones do not
    start = time.process_time()
    for _ in range(n_samples):
        sampler.sample()
    costs = {"without_pss": (time.process_time() - start) / n_samples * 1e6}
    start = time.process_time()
    for _ in range(n_samples // 10):
        sensors.pss_kb(os.getpid())
    costs["pss_read"] = (time.process_time() - start) / (n_samples // 10) * 1e6
    costs["with_pss"] = costs["without_pss"] + costs["pss_read"]
    del session
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--recipe", default="onnx-fp32")
    parser.add_argument("--prompt-len", type=int, default=50)
    parser.add_argument("--gen-len", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sample-ms", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()

    from edgekit.export.pipeline import export
    from edgekit.export.recipes import resolve_recipe

    with tempfile.TemporaryDirectory(prefix="edgekit-bench-overhead-") as tmp:
        root = Path(tmp)
        artifact = export(args.model, resolve_recipe(args.recipe), root / "artifact").out_dir
        costs = sampler_cost_us(artifact) if (artifact / "model.onnx").is_file() else {}
        from edgekit.workload import Workload

        workload = Workload(prompt_len=args.prompt_len, gen_len=args.gen_len, runs=args.runs, warmup=1,
                            threads=args.threads, baseline_s=0, sample_ms=args.sample_ms)
        results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for pair in range(args.pairs):
            order = ("off", "on") if pair % 2 == 0 else ("on", "off")
            for mode in order:
                flags = ["--no-sampler"] if mode == "off" else []
                results[mode].append(run_agent(artifact, root / f"{mode}-{pair}", workload, *flags))

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    summary = {key: {"off": med("off", key), "on": med("on", key),
                     "overhead": med("on", key) / med("off", key) - 1}
               for key in ("decode_ms_p50", "decode_ms_per_token")}
    report = {"model": args.model, "recipe": args.recipe, "prompt_len": args.prompt_len, "gen_len": args.gen_len,
              "runs": args.runs, "threads": args.threads, "sample_ms": args.sample_ms, "pairs": args.pairs,
              "summary": summary, "sampler_cost_us": costs, "raw": results,
              "host": {"cpus": _cpus(), "platform": platform.platform()},
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# sampler overhead: {args.model} {args.recipe}, P={args.prompt_len} G={args.gen_len}, "
             f"{args.threads} threads, sampler {args.sample_ms} ms vs off ({args.pairs} alternating pairs of "
             f"{args.runs} runs, medians)", "",
             "| metric | sampler off | sampler on | overhead |", "|---|---:|---:|---:|"]
    for key, row in summary.items():
        lines.append(f"| {key} | {row['off']:.3f} ms | {row['on']:.3f} ms | {row['overhead']:+.2%} |")
    if costs:
        pss_every = 250  # the agent's default --pss-ms
        # the agent reads PSS every --pss-ms (250) or, when that read is costly, every 200x its cost
        pss_gap_us = max(pss_every * 1000, 200 * costs["pss_read"])
        duty = costs["without_pss"] / (args.sample_ms * 1000) + costs["pss_read"] / pss_gap_us
        lines += ["", f"CPU per sample: {costs['without_pss']:.0f} µs without the PSS read, "
                  f"{costs['with_pss']:.0f} µs with it (smaps_rollup). At {args.sample_ms} ms with PSS every "
                  f"{pss_gap_us / 1000:.0f} ms the sampler keeps {duty:.2%} of one core busy "
                  "(a load-independent bound)."]
    lines += ["", f"Samples per traced run set (sampler on): {[r['samples'] for r in results['on']]}. "
              f"Host: {_cpus()} CPUs, {platform.platform()}; the host is the device (agent run directly)."]
    (RESULTS_DIR / "overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cpus() -> int | None:
    import os

    return os.cpu_count()


if __name__ == "__main__":
    main()
