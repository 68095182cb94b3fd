"""Benchmark (not a test): ONNX Runtime's MatMulNBits kernel alone, 4-bit against 8-bit, one token.

Each case is a one-node model (``com.microsoft.MatMulNBits``, blocks of 32, random levels and scales) run on a
[1, K] activation by an ``onnxruntime.InferenceSession`` at the given intra-op threads, as a decode step runs
each of its matrix products. The shapes are SmolLM2-135M's: the tied lm_head (576 -> 49152, 28 MB at 8 bits:
out of every cache, so its rate is what streaming the weights costs) and one MLP projection each way (small
enough to stay cached when run alone in a loop). Accuracy level 4 (int8 activations, what the GenAI builder and
edgekit's recipes use) and 0 (float). The cases alternate within each repetition; the best of ``--reps`` counts.
GB/s is the weight bytes (levels only) moved per second.

Writes ``bench/results/<name>.json`` and ``.md`` (``--name``, default ``matmulnbits``).

Run: ``.venv/bin/python bench/matmulnbits.py [--threads 1] [--reps 5]``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import _report  # bench/_report.py: the script's directory is on sys.path
import numpy as np

SHAPES = {"lm_head": (576, 49152), "up_proj": (576, 1536), "down_proj": (1536, 576)}
BLOCK = 32


def session(k: int, n: int, bits: int, accuracy: int, threads: int) -> Any:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    blocks = (k + BLOCK - 1) // BLOCK
    levels = rng.integers(0, 256, size=(n, blocks, BLOCK * bits // 8), dtype=np.uint8)
    scales = (rng.random(n * blocks, dtype=np.float32) * 0.01).astype(np.float32)
    node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=BLOCK, accuracy_level=accuracy)  # fmt: skip
    graph = helper.make_graph([node], "matmulnbits", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(levels, "B"), numpy_helper.from_array(scales, "S")])  # fmt: skip
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--name", default="matmulnbits")
    args = parser.parse_args()
    cases = [(shape, bits, acc) for shape in SHAPES for bits in (4, 8) for acc in (4, 0)]
    sessions = {c: session(*SHAPES[c[0]], c[1], c[2], args.threads) for c in cases}
    inputs = {shape: {"A": np.random.default_rng(1).random((1, k), dtype=np.float32)}
              for shape, (k, _) in SHAPES.items()}  # fmt: skip
    best: dict[tuple[str, int, int], float] = {}
    load_before = os.getloadavg()[0]
    for _ in range(args.reps):
        for case, sess in sessions.items():
            feed = inputs[case[0]]
            sess.run(None, feed)
            calls = 30 if case[0] == "lm_head" else 300
            if case[2] == 0 and case[1] == 8:
                calls = max(3, calls // 30)  # the float path at 8 bits is ~50x slower
            start = time.perf_counter()
            for _ in range(calls):
                sess.run(None, feed)
            us = (time.perf_counter() - start) / calls * 1e6
            best[case] = min(best.get(case, us), us)
    rows = []
    for (shape, bits, acc), us in best.items():
        k, n = SHAPES[shape]
        rows.append({"shape": shape, "k": k, "n": n, "bits": bits, "accuracy_level": acc, "us": us,
                     "weight_gb_s": k * n * bits / 8 / us / 1e3})  # fmt: skip
    report = {"threads": args.threads, "reps": args.reps, "block": BLOCK, "rows": rows,
              **_report.provenance(load_before)}  # fmt: skip
    lines = [f"ONNX Runtime MatMulNBits, one [1, K] row, blocks of {BLOCK}, {args.threads} thread(s), best of "
             f"{args.reps}:", "", "| matrix | K x N | bits | accuracy level | us | weight GB/s |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['shape']} | {r['k']} x {r['n']} | {r['bits']} | {r['accuracy_level']} | {r['us']:.0f} | "
                     f"{r['weight_gb_s']:.1f} |")  # fmt: skip
    lines += ["", _report.host_line(report["host"])]
    _report.write(args.name, report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
