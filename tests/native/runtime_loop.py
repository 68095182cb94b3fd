"""A direct executorch.runtime timing loop, run as its own process by test_agreement.py.

``python runtime_loop.py PTE PROMPT_IDS_FILE GEN_LEN RUNS READY OUT`` loads the program, finds the greedy
tokens once (untimed, also the warm-up), creates the file READY, then runs RUNS repetitions and writes OUT:
a JSON list of ``[start_ns, end_ns]`` (CLOCK_MONOTONIC, the clock of the runner's and the agent's traces)
of every decode step's ``execute``. Between two execute calls only two integers are written (through
numpy views of the input tensors), so no torch work disturbs the runtime's caches and nothing but the
runtime is timed.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(pte: str, ids_file: str, gen_len: int, runs: int, ready: str, out: str) -> None:
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  kernels of the programs' llama:: ops
    import torch
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    torch.set_num_threads(1)  # no idle OpenMP worker spinning beside the runtime
    portable_lib._unsafe_reset_threadpool(1)
    method = Runtime.get().load_program(pte).load_method("forward")._method  # set_inputs / execute apart
    with open(ids_file) as fh:
        ids = [int(word) for word in fh.read().split()]  # the ids the host gives every runner
    prompt_len = len(ids)
    prefill = [torch.tensor([ids]), torch.arange(prompt_len)]

    (logits,) = method(prefill)  # the greedy tokens, once (also the warm-up)
    tokens = [int(logits[0, -1].argmax())]
    for k in range(1, gen_len):
        (logits,) = method([torch.tensor([[tokens[-1]]]), torch.tensor([prompt_len + k - 1])])
        tokens.append(int(logits[0, -1].argmax()))
    with open(ready, "w"):  # an empty marker file
        pass

    one = torch.zeros((1, 1), dtype=torch.long)
    position = torch.zeros(1, dtype=torch.long)
    one_np, position_np = one.numpy(), position.numpy()
    clock = time.monotonic_ns
    steps: list[tuple[int, int]] = []
    for _ in range(runs):
        method(prefill)
        for k in range(1, gen_len):
            one_np[0, 0] = tokens[k - 1]
            position_np[0] = prompt_len + k - 1
            method.set_inputs([one, position])
            start = clock()
            method.execute()
            steps.append((start, clock()))
    with open(out + ".part", "w") as fh:
        json.dump(steps, fh)
    os.replace(out + ".part", out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])
