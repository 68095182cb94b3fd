"""The Python agent's ExecuTorch decode loop computes what the program computes: its in-place path (inputs
bound once, logits read where the program writes them) and its per-call path give executorch.runtime's
greedy tokens, repetition after repetition."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from tests.native.conftest import greedy_reference, manifest_of, prompt_ids


def agent_module(name: str):
    """One of the agent's modules, imported as the agent imports it (its directory on the path)."""
    from edgekit.profile.python_agent import AGENT_DIR

    if str(AGENT_DIR) not in sys.path:
        sys.path.insert(0, str(AGENT_DIR))
    return importlib.import_module(name)


def test_pte_loop_tokens_match_the_runtime(tiny_pte_dirs: dict[str, Path]) -> None:
    prompt_len, gen_len = 7, 12
    for name, artifact in tiny_pte_dirs.items():
        pte = artifact / "model.pte"
        ids = prompt_ids(prompt_len, manifest_of(artifact).model.vocab_size)
        expected = greedy_reference(pte, ids, gen_len)
        loop = agent_module("agent_loops").PteLoop(str(pte), 1, prompt_len + gen_len + 1)
        assert loop.raw is not None and loop.inputs_by_reference and loop.output_in_place, \
            f"{name}: the in-place path is not taken for edgekit's own export"
        stamps: list[tuple[str, int | None]] = []
        for _ in range(3):  # the inputs are re-bound and the logits re-found after every prefill
            assert loop.generate(ids, gen_len, lambda event, k, seen=stamps: seen.append((event, k)), None) \
                == expected, name
        assert [k for event, k in stamps if event == "decode_step"] == list(range(1, gen_len)) * 3
        loop.raw = None
        assert loop.generate(ids, gen_len, lambda event, k: None, None) == expected, f"{name}: per-call path"
