#!/usr/bin/env python3
"""edgekit's on-device profiling agent for Linux boards and emulated devices (stdlib only, plus the runtime
it drives: onnxruntime-genai, onnxruntime, or executorch's Python runtime). The host pushes this directory
as one content-addressed bundle and runs it with the device's own Python:

    python3 edgekit_agent.py --model FILE --runtime onnxruntime-genai|onnxruntime|executorch --model-id ID \
        --recipe NAME --artifact-sha256 SHA --out DIR --device-json FILE --prompt-len 50 --prompt-ids FILE \
        --gen-len 50 \
        --warmup 1 --runs 5 --threads 2 --sample-ms 20 --baseline-ms 1000

(the same flags, with the same names, as the Android agent around the native runner: the host builds
both command lines from one ``Workload``). It writes ``DIR/trace.jsonl`` in the format of
``device_agents/TRACE.md`` plus ``DIR/summary.json`` (counts only). It records raw facts; it never
computes a rate, an average or an energy.

Modules: ``agent_supervisor`` (header, baseline, the runner child, footer), ``agent_runner`` (the child
process that loads the model and runs the repetitions), ``agent_loops`` (the generation loops, the only
code inside timed phases), ``agent_trace`` (trace writer and sampler), ``agent_sensors`` (sysfs/procfs).
Exit status: 0 ok, 1 a repetition or the load failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys

from agent_supervisor import AGENT_VERSION, supervise

SAMPLE_MS_MIN, SAMPLE_MS_MAX = 10, 100  # the host's Workload has the same limits
RUNTIMES = ("onnxruntime-genai", "onnxruntime", "executorch")


def read_prompt_ids(path, parser):
    try:
        with open(path) as fh:
            words = fh.read().split()
    except OSError as exc:
        parser.error(f"cannot read --prompt-ids file {path!r}: {exc.strerror}")
    ids = []
    for word in words:
        if not word.isdigit():
            parser.error(f"--prompt-ids file {path!r} holds {word!r}, not a token id")
        ids.append(int(word))
    if not ids:
        parser.error(f"--prompt-ids file {path!r} holds no ids")
    return ids


def parse_args(argv):
    parser = argparse.ArgumentParser(description="edgekit on-device profiling agent (Linux)")
    parser.add_argument("--version", action="version", version=AGENT_VERSION)
    parser.add_argument("--model", required=True, help="the model file the runtime loads")
    parser.add_argument("--runtime", required=True, choices=RUNTIMES)
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--artifact-sha256", required=True, help="the artifact's content address")
    parser.add_argument("--out", required=True, help="run directory for trace.jsonl and summary.json")
    parser.add_argument("--device-json", default=None, help="device facts from the host (name, model...)")
    parser.add_argument("--prompt-len", type=int, required=True)
    parser.add_argument("--prompt-ids", required=True, help="file of whitespace-separated prompt token ids")
    parser.add_argument("--gen-len", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--sample-ms", type=int, required=True)
    parser.add_argument("--baseline-ms", type=int, default=1000)
    parser.add_argument("--max-context", type=int, default=0,
                        help="positions the runtime's KV cache holds: the artifact's max_context (0: its default)")
    parser.add_argument("--pss-ms", type=int, default=100,
                        help="read PSS at most this often unless cheap (0: no floor); the host passes the workload's")
    parser.add_argument("--no-sampler", action="store_true", help="no samples (overhead benchmarks)")
    parser.add_argument("--fail-run", type=int, default=None, help="test hook: fail measured run K")
    parser.add_argument("--fail-mode", choices=("error", "oom", "crash", "hang"), default="error")
    parser.add_argument("--runner-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-load-events", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not SAMPLE_MS_MIN <= args.sample_ms <= SAMPLE_MS_MAX:
        parser.error(f"--sample-ms must be within {SAMPLE_MS_MIN}..{SAMPLE_MS_MAX}, got {args.sample_ms}")
    if args.prompt_len < 1 or args.gen_len < 1 or args.runs < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--prompt-len, --gen-len, --runs and --threads must be >= 1, --warmup >= 0")
    if args.baseline_ms < 0:
        parser.error(f"--baseline-ms must be >= 0, got {args.baseline_ms}")
    if args.pss_ms < 0:
        parser.error(f"--pss-ms must be >= 0, got {args.pss_ms}")
    args.prompt_ids = read_prompt_ids(args.prompt_ids, parser)
    if len(args.prompt_ids) != args.prompt_len:
        parser.error(f"--prompt-len {args.prompt_len} but the --prompt-ids file holds {len(args.prompt_ids)} ids")
    args.agent_argv = [a for a in argv if a not in ("--runner-child", "--no-load-events")]
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.runner_child:
        from agent_runner import runner_child

        return runner_child(args)
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
