"""Benchmark (not a test): smollm2-135m through every built-in recipe on this host.

For each recipe: export wall time (as the manifest recorded it when the artifact was first made; cached
artifacts are reused unless --fresh), artifact size, the parity numbers,
and prefill / decode latency in the artifact's own runtime at 2 threads (50-token prompt, 50 generated
tokens, median of 3 after a warm-up), next to eager PyTorch fp32 with its KV cache as the baseline.
Writes bench/results/export.json and bench/results/export.md.

    .venv/bin/python bench/export.py [--recipes onnx-int4,pte-8da4w] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT_LEN, GEN_LEN, REPS, THREADS = 50, 50, 3, 2


def time_runner(runner, vocab: int) -> tuple[float, float]:
    """Median prefill ms and decode ms/token over REPS, after one warm-up."""
    import numpy as np

    prompt = [(i * 7919 + 13) % vocab for i in range(PROMPT_LEN)]
    prefill, decode = [], []
    for rep in range(REPS + 1):
        runner.reset()
        t0 = time.perf_counter()
        logits = runner.step(prompt)
        t1 = time.perf_counter()
        token = int(np.argmax(logits[-1]))
        for _ in range(GEN_LEN - 1):
            token = int(np.argmax(runner.step([token])[-1]))
        t2 = time.perf_counter()
        if rep:
            prefill.append((t1 - t0) * 1e3)
            decode.append((t2 - t1) * 1e3 / (GEN_LEN - 1))
    return statistics.median(prefill), statistics.median(decode)


class EagerRunner:
    def __init__(self, model) -> None:
        self.model = model
        self.reset()

    def reset(self) -> None:
        self.past = None

    def step(self, ids):
        import torch

        with torch.no_grad():
            out = self.model(torch.tensor([ids]), past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return out.logits[0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--recipes", default="")
    parser.add_argument("--fresh", action="store_true", help="export again instead of using the cache")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edgekit._quiet import quiet_libraries

    quiet_libraries()
    import torch

    torch.set_num_threads(THREADS)
    from edgekit.errors import ParityError
    from edgekit.export.parity import OnnxRunner, PteRunner
    from edgekit.export.pipeline import export
    from edgekit.export.recipes import builtin_recipes
    from edgekit.manifest import read_manifest
    from edgekit.models import load_model, prepare

    recipes = builtin_recipes()
    names = [n for n in args.recipes.split(",") if n] or list(recipes)
    prepared = prepare(args.model)
    model = load_model(prepared)
    vocab = model.config.vocab_size
    eager_prefill, eager_decode = time_runner(EagerRunner(model), vocab)
    rows = [{"recipe": "eager-pytorch-fp32", "prefill_ms": eager_prefill, "decode_ms_per_token": eager_decode}]
    for name in names:
        out = Path(tempfile.mkdtemp()) / name
        with contextlib.suppress(ParityError):  # a failed gate is a result here: its numbers are in the manifest
            export(args.model, recipes[name], out, use_cache=not args.fresh)
        m = read_manifest(out)
        wall = m.export_wall_s
        path = out / m.artifact
        runner = OnnxRunner(path, THREADS) if m.target == "onnx" else PteRunner(path)
        prefill, decode = time_runner(runner, vocab)
        rows.append(
            {
                "recipe": name,
                "export_wall_s": round(wall, 1),
                "size_mb": round(m.weights_bytes / 1e6, 1),
                "linear_quantized": f"{m.quantization.linear_quantized}/{m.quantization.linear_total}",
                "max_abs_logit_diff": m.parity.max_abs_logit_diff,
                "top1_agreement": m.parity.top1_agreement,
                "ppl_ratio": m.parity.ppl_ratio,
                "gate": "passed" if m.gate.passed else "failed",
                "prefill_ms": prefill,
                "decode_ms_per_token": decode,
                "decode_speedup_vs_eager": eager_decode / decode,
            }
        )
        print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "model": args.model,
        "threads": THREADS,
        "prompt_len": PROMPT_LEN,
        "gen_len": GEN_LEN,
        "host": platform.platform(),
        "cpus": __import__("os").cpu_count(),
    }
    (RESULTS / "export.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        f"# export: {args.model} on this host ({meta['cpus']} CPUs, {THREADS} threads, P={PROMPT_LEN}, G={GEN_LEN})",
        "",
        "| recipe | export s | size MB | quantized | max abs dlogit | top-1 | ppl ratio | gate | prefill ms "
        "| decode ms/tok | decode vs eager |",
        "|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            "| {recipe} | {e} | {s} | {q} | {d} | {t} | {p} | {g} | {pf:.1f} | {dc:.2f} | {sp} |".format(
                recipe=r["recipe"],
                e=r.get("export_wall_s", "-"),
                s=r.get("size_mb", "-"),
                q=r.get("linear_quantized", "-"),
                d=f"{r['max_abs_logit_diff']:.3f}" if "max_abs_logit_diff" in r else "-",
                t=f"{r['top1_agreement']:.3f}" if "top1_agreement" in r else "-",
                p=f"{r['ppl_ratio']:.3f}" if "ppl_ratio" in r else "-",
                g=r.get("gate", "-"),
                pf=r["prefill_ms"],
                dc=r["decode_ms_per_token"],
                sp=f"{r['decode_speedup_vs_eager']:.2f}x" if "decode_speedup_vs_eager" in r else "1.00x",
            )
        )
    (RESULTS / "export.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
