"""How much each recipe costs in quality, next to llama.cpp's own quantizations of the same reference.

For every built-in recipe of the three targets, the model is exported (through the content-hash cache) and
the numbers are the ones its quality gate measured (edgekit/export/quality.py: KL divergence, perplexity
ratio and same-top-1 against the fp32 reference, with 95% intervals, on the gate's text). The peer rows are
measured by this script with llama.cpp's own tools built from source (scripts/build_llama_cpp.sh): the
reference dequantized to F32 by ``llama-quantize --allow-requantize`` (for a GGUF source) or converted by
``convert_hf_to_gguf.py``, quantized by ``llama-quantize`` to Q8_0 / Q4_K_M / Q4_0, and scored by
``llama-perplexity --kl-divergence`` on the same text, context and number of chunks (llama.cpp tokenizes
the text itself, so its token sequence can differ from edgekit's by a few tokens). Writes
bench/results/quality.json and quality.md.

Run: ``.venv/bin/python bench/quality.py [--model smollm2-135m] [--recipes a,b,...] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PEER_TYPES = ("Q8_0", "Q4_K_M", "Q4_0")
Z95 = 1.96


def llama_cpp_dir() -> Path:
    proc = subprocess.run([str(REPO / "scripts" / "build_llama_cpp.sh")], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"llama.cpp could not be built: {proc.stderr.strip()[-500:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def edgekit_rows(model: str, recipes: list[str], work: Path) -> list[dict[str, Any]]:
    from edgekit.errors import ParityError
    from edgekit.export.pipeline import export
    from edgekit.export.recipes import builtin_recipes
    from edgekit.manifest import read_manifest

    rows = []
    for name in recipes:
        recipe = builtin_recipes()[name]
        out = work / name
        started = time.monotonic()
        with contextlib.suppress(ParityError):  # a failed gate is a result here: its numbers are in the manifest
            export(model, recipe, out)
        m = read_manifest(out)
        p = m.parity
        rows.append({"recipe": name, "target": m.target, "runtime": m.runtime, "size_mb": m.weights_bytes / 1e6,
                     "ppl_ratio": p.ppl_ratio, "ppl_ratio_ci": list(p.ppl_ratio_ci), "kl_mean": p.kl_mean,
                     "kl_ci": list(p.kl_ci), "top1": p.top1_agreement, "top1_ci": list(p.top1_ci),
                     "tokens": p.tokens, "gate": "passed" if m.gate.passed else "failed",
                     "measured_by": "edgekit gate", "seconds": round(time.monotonic() - started, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _reference_gguf(model: str, llama: Path, work: Path) -> Path:
    """The fp32 reference as an F32 GGUF, from the source GGUF itself when there is one."""
    from edgekit.models import prepare

    prepared = prepare(model)
    ref = work / "reference-f32.gguf"
    source = prepared.gguf_file
    if source is not None:
        _run([str(llama / "bin" / "llama-quantize"), "--allow-requantize", str(source), str(ref), "F32"])
    else:
        _run([sys.executable, str(llama / "src" / "convert_hf_to_gguf.py"), str(prepared.hf_dir), "--outtype", "f32",
              "--outfile", str(ref)], cwd=llama / "src")  # fmt: skip
    return ref


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False, timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(f"{Path(argv[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc.stdout + proc.stderr


def _number(text: str, label: str) -> tuple[float, float]:
    """(value, its standard error) of a llama-perplexity statistics line ``label : value ± error``."""
    match = re.search(re.escape(label) + r"\s*:\s*([-0-9.eE+]+)\s*±\s*([-0-9.eE+]+)", text)
    if match is None:
        raise SystemExit(f"llama-perplexity printed no '{label}' line")
    return float(match.group(1)), float(match.group(2))


def peer_rows(model: str, text: Path, chunks: int, threads: int, work: Path) -> list[dict[str, Any]]:
    llama = llama_cpp_dir()
    ref = _reference_gguf(model, llama, work)
    perplexity = str(llama / "bin" / "llama-perplexity")
    base = work / "base.kld"
    _run([perplexity, "-m", str(ref), "-f", str(text), "-c", "512", "--chunks", str(chunks), "-t", str(threads),
          "--kl-divergence-base", str(base)])  # fmt: skip
    rows = []
    for kind in PEER_TYPES:
        quantized = work / f"{kind}.gguf"
        _run([str(llama / "bin" / "llama-quantize"), str(ref), str(quantized), kind])
        out = _run([perplexity, "-m", str(quantized), "-t", str(threads), "--kl-divergence-base", str(base),
                    "--kl-divergence"])  # fmt: skip
        ratio, ratio_se = _number(out, "Mean PPL(Q)/PPL(base)")
        kl, kl_se = _number(out, "Mean    KLD")
        top1, top1_se = _number(out, "Same top p")
        scored = chunks * 255
        rows.append({"recipe": f"llama.cpp {kind}", "target": "gguf", "runtime": "llama.cpp (llama-perplexity)",
                     "size_mb": quantized.stat().st_size / 1e6, "ppl_ratio": ratio,
                     "ppl_ratio_ci": [ratio - Z95 * ratio_se, ratio + Z95 * ratio_se], "kl_mean": kl,
                     "kl_ci": [kl - Z95 * kl_se, kl + Z95 * kl_se], "top1": top1 / 100,
                     "top1_ci": [(top1 - Z95 * top1_se) / 100, (top1 + Z95 * top1_se) / 100], "tokens": scored,
                     "gate": "", "measured_by": "llama-perplexity --kl-divergence"})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], model: str) -> str:
    lines = [f"Quality of every recipe of {model} against its fp32 reference (95% intervals), with llama.cpp's",
             "own quantizations of the same reference as the peer.", "",
             "| recipe | runtime | size MB | ppl ratio | mean KL divergence | same top-1 | scored tokens | gate |",
             "|---|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['runtime']} | {r['size_mb']:.1f} | {r['ppl_ratio']:.4f} "
            f"({r['ppl_ratio_ci'][0]:.4f}–{r['ppl_ratio_ci'][1]:.4f}) | {r['kl_mean']:.4f} "
            f"({r['kl_ci'][0]:.4f}–{r['kl_ci'][1]:.4f}) | {100 * r['top1']:.1f}% | {r['tokens']} | {r['gate']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--recipes", default="", help="comma-separated (default: every built-in recipe)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true", help="skip the llama.cpp rows")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from edgekit.data import gate_text
    from edgekit.export.quality import MIN_TOKENS, N_CTX
    from edgekit.export.recipes import builtin_recipes

    recipes = [r for r in args.recipes.split(",") if r] or sorted(builtin_recipes())
    chunks = -(-MIN_TOKENS // (N_CTX - 1 - N_CTX // 2))
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-quality-") as tmp:
        work = Path(tmp)
        text = work / "gate.txt"
        text.write_text(gate_text())
        (work / "artifacts").mkdir()
        rows = edgekit_rows(args.model, recipes, work / "artifacts")
        if not args.no_peer:
            rows += peer_rows(args.model, text, chunks, args.threads, work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps({"model": args.model, "rows": rows}, indent=2) + "\n")
    (RESULTS / "quality.md").write_text(markdown(rows, args.model))
    print(markdown(rows, args.model))


if __name__ == "__main__":
    main()
