"""Benchmark (not a test): the results store at scale, 10,000 runs and 1,000,000 samples.

Generates ``--traces`` TRACE.md traces (default 1,000 of ``--runs`` = 10 measured repetitions each, about
``--samples`` = 1,000 sampler rows each) spread over 5 devices x 5 models x 2 recipes x 2 workloads, ingests
them one transaction each into a throw-away EDGEKIT_HOME, then times the report: in-process (query, cell
statistics with 2,000-resample bootstraps, rendering) for the text formats and HTML, and the CLI end to end.
Writes ``bench/results/store.json`` and ``bench/results/store.md``.

Run: ``.venv/bin/python bench/store.py [--traces 1000] [--runs 10] [--samples 1000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekit.report.cells import report_cells  # noqa: E402
from edgekit.report.html import to_html  # noqa: E402
from edgekit.report.render import render_text  # noqa: E402
from edgekit.store import Store, ingest_trace  # noqa: E402
from tests.store.tracegen import ArtifactSpec, ProfileSpec, generate, write_artifact, write_trace  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
DEVICES = ("pixel-8", "galaxy-s24", "rpi5", "jetson-orin", "x86-laptop")
MODELS = (("tiny-llama", 135_000_000), ("tiny-qwen", 494_000_000), ("tiny-phi3", 1_100_000_000),
          ("tiny-gemma", 2_000_000_000), ("smollm2", 360_000_000))  # fmt: skip
RECIPES = (("onnx-int4", "int4", 0.28), ("onnx-fp32", "none", 1.0))  # name, scheme, relative weight size
WORKLOADS = ((50, 50), (128, 32))


def _cell_plan(index: int) -> tuple[str, tuple[str, int], tuple[str, str, float], tuple[int, int]]:
    device = DEVICES[index % len(DEVICES)]
    model = MODELS[(index // len(DEVICES)) % len(MODELS)]
    recipe = RECIPES[(index // (len(DEVICES) * len(MODELS))) % len(RECIPES)]
    workload = WORKLOADS[(index // (len(DEVICES) * len(MODELS) * len(RECIPES))) % len(WORKLOADS)]
    return device, model, recipe, workload


def generate_traces(root: Path, traces: int, runs: int, samples: int) -> tuple[list[tuple[Path, Path]], int]:
    artifacts: dict[tuple[str, str], tuple[Path, str, ArtifactSpec]] = {}
    out: list[tuple[Path, Path]] = []
    total_samples = 0
    for i in range(traces):
        device, (model, params), (recipe, scheme, size), (prompt_len, gen_len) = _cell_plan(i)
        if (model, recipe) not in artifacts:
            spec = ArtifactSpec(model_id=model, params=params, recipe=recipe, scheme=scheme,
                                weights_bytes=int(params * 4 * size))  # fmt: skip
            manifest, sha = write_artifact(root / "artifacts" / f"{model}-{recipe}", spec)
            artifacts[(model, recipe)] = (manifest, sha, spec)
        manifest, sha, art = artifacts[(model, recipe)]
        speed = params / 135_000_000 * (1.0 if scheme == "none" else 0.5) * (1 + DEVICES.index(device) * 0.3)
        profile = ProfileSpec(device=device, prompt_len=prompt_len, gen_len=gen_len, runs=runs, warmup=1,
                              prefill_ms=2.0 * prompt_len * speed / 4, decode_ms=8.0 * speed, seed=i)  # fmt: skip
        # Choose the sampling period that gives about ``samples`` rows over the trace's span.
        span_ms = 1500 + 200 + (runs + 1) * (52 + profile.prefill_ms + (gen_len - 1) * profile.decode_ms)
        profile.sample_ms = max(1, int(span_ms / samples))  # floor: at least ``samples`` rows
        records, _ = generate(profile, art, sha)
        total_samples += sum(1 for r in records if r["type"] == "sample")
        out.append((write_trace(root / "traces" / f"{i:05d}" / "trace.jsonl", records), manifest))
    return out, total_samples


def _timed(function: Any, repeats: int = 3) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-store-") as tmp:
        root = Path(tmp)
        home = root / "home"
        os.environ["EDGEKIT_HOME"] = str(home)
        started = time.perf_counter()
        traces, n_samples = generate_traces(root / "gen", args.traces, args.runs, args.samples)
        generate_s = time.perf_counter() - started
        trace_bytes = sum(t.stat().st_size for t, _ in traces)

        started = time.perf_counter()
        with Store(home) as store:
            for trace, manifest in traces:
                ingest_trace(trace, manifest, store=store)
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()
        with Store(home) as store:
            for trace, manifest in traces[:100]:
                ingest_trace(trace, manifest, store=store)
        reingest_s = (time.perf_counter() - started) / min(100, len(traces))

        with Store(home) as store:
            n_runs = store.con.execute("SELECT count(*) FROM runs").fetchone()[0]
            stored_samples = store.con.execute(f"SELECT count(*) FROM {store.samples_view()}").fetchone()[0]
            query_s, cells = _timed(lambda: report_cells(store))
            timings = {fmt: _timed(lambda f=fmt: render_text(report_cells(store), f))[0] for fmt in ("table", "json")}
            html_s, _ = _timed(lambda: to_html(report_cells(store)), repeats=1)
        shim = ("import sys; from edgekit import cli; from edgekit.cli import results; results.register(cli.app); "
                "cli.main(sys.argv[1:])")  # fmt: skip
        cli_runs = []
        for _ in range(3):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", shim, "report", "--format", "json"], capture_output=True,
                                  text=True, env=dict(os.environ))  # fmt: skip
            cli_runs.append(time.perf_counter() - start)
            assert proc.returncode == 0, proc.stderr
        db_bytes = (home / "results.duckdb").stat().st_size
        parquet_bytes = sum(p.stat().st_size for p in (home / "samples").iterdir())

    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "traces": len(traces), "runs": n_runs, "samples": n_samples, "stored_samples": stored_samples,
        "cells": len(cells), "trace_bytes": trace_bytes, "db_bytes": db_bytes, "parquet_bytes": parquet_bytes,
        "generate_s": round(generate_s, 2), "ingest_s": round(ingest_s, 2),
        "ingest_traces_per_s": round(len(traces) / ingest_s, 1), "ingest_runs_per_s": round(n_runs / ingest_s, 1),
        "ingest_samples_per_s": round(n_samples / ingest_s), "reingest_skip_ms": round(reingest_s * 1000, 2),
        "report_cells_s": round(query_s, 3), "report_table_s": round(timings["table"], 3),
        "report_json_s": round(timings["json"], 3), "report_html_s": round(html_s, 3),
        "report_cli_json_s": round(min(cli_runs), 3), "target_report_s": 2.0,
    }  # fmt: skip
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "store.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Results store benchmark",
        "",
        f"{result['traces']} traces, {result['runs']} runs, {result['samples']} samples, {result['cells']} cells "
        f"on {result['machine']['cpus']} CPUs ({result['machine']['platform']}).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| ingest (one transaction per trace) | {result['ingest_s']} s: {result['ingest_traces_per_s']} traces/s, "
        f"{result['ingest_runs_per_s']} runs/s, {result['ingest_samples_per_s']} samples/s |",
        f"| re-ingest of a stored trace (skipped) | {result['reingest_skip_ms']} ms |",
        f"| report cells (query + bootstrap CIs) | {result['report_cells_s']} s |",
        f"| report table / json (in process) | {result['report_table_s']} s / {result['report_json_s']} s |",
        f"| report html with 4 plots (in process) | {result['report_html_s']} s |",
        f"| `edgekit report --format json` (CLI, incl. Python start) | {result['report_cli_json_s']} s |",
        f"| store size | DuckDB {db_bytes / 2**20:.1f} MiB + Parquet {parquet_bytes / 2**20:.1f} MiB "
        f"(traces {trace_bytes / 2**20:.0f} MiB) |",
        "",
        "Target: report < 2 s. Timings are the best of 3 (HTML: one run).",
    ]
    (RESULTS_DIR / "store.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
