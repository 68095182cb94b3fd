"""Fixtures for the native runner: the host build (android_harness/build_host.sh, once per session; a
failed build fails every test that needs it), tiny exported .pte artifacts, a .pte with the wrong
signature, and helpers to run the runner and parse what it writes."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgekit.manifest import Manifest, read_manifest
from edgekit.workload import Workload

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "android_harness"
AGENT = REPO / "device_agents" / "android" / "agent.sh"


@dataclass(frozen=True)
class NativeRunner:
    binary: Path
    lib_dir: Path

    def run(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def native_runner() -> NativeRunner:
    proc = subprocess.run([str(HARNESS / "build_host.sh")], capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"android_harness/build_host.sh failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}", pytrace=False)
    build = HARNESS / "build" / "host"
    runner = NativeRunner(build / "bin" / "edgekit_runner", build / "lib")
    assert runner.binary.is_file(), f"build_host.sh succeeded but {runner.binary} is missing"
    return runner


def _export(recipe_name: str, out_dir: Path, cache: Path, home: Path) -> Path:
    from edgekit.export.pipeline import export
    from edgekit.export.recipes import resolve_recipe

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKIT_CACHE", str(cache))
        mp.setenv("EDGEKIT_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        result = export("tiny-llama", resolve_recipe(recipe_name), out_dir)
    assert result.passed, f"tiny {recipe_name} export failed its gate: {result.manifest.gate}"
    return out_dir


@pytest.fixture(scope="session")
def tiny_pte_dirs(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> dict[str, Path]:
    """Artifact directories of the tiny model as pte-fp32 and pte-8da4w (cached by content hash)."""
    home = tmp_path_factory.mktemp("native-export-home")
    root = tmp_path_factory.mktemp("native-artifacts")
    return {name: _export(name, root / name, shared_cache, home) for name in ("pte-fp32", "pte-8da4w")}


# A random-initialised Llama large enough that one decode step takes ~10 ms on one thread (85 MB of fp32
# weights): timing comparisons need steps long against the scheduler's jitter and against the per-step
# work a side adds around execute (the agent's is ~1% of a 10 ms step). 12 layers (19 ms steps, 2.5 min
# to export instead of 1) did not bring the rates closer: native / agent 1.007-1.056 in four runs.
WIDE_CONFIG = {"vocab_size": 512, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 6,
               "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 1024,
               "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}


@pytest.fixture(scope="session")
def wide_pte_dir(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """pte-fp32 of the wide model (a local Hugging Face directory as the source, cached by content hash)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgekit.export.pipeline import export
    from edgekit.export.recipes import resolve_recipe

    source = tmp_path_factory.mktemp("wide-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**WIDE_CONFIG)).save_pretrained(source, safe_serialization=True)
    out = tmp_path_factory.mktemp("wide-artifact") / "pte-fp32"
    recipe = resolve_recipe("pte-fp32").model_copy(update={"max_context": 128})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKIT_CACHE", str(shared_cache))
        mp.setenv("EDGEKIT_HOME", str(tmp_path_factory.mktemp("wide-home")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        export(str(source), recipe, out)
    assert (out / "model.pte").is_file(), f"no model.pte in {out}"
    return out


@pytest.fixture(scope="session")
def bad_signature_pte(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid XNNPACK .pte whose forward is Linear(8 -> 4) on float32[1, 8]: no ids, no KV cache."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    torch.manual_seed(0)
    program = torch.export.export(torch.nn.Linear(8, 4).eval(), (torch.randn(1, 8),), strict=True)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    path = tmp_path_factory.mktemp("bad-signature") / "linear.pte"
    path.write_bytes(edge.to_executorch().buffer)
    return path


def parse_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def manifest_of(artifact_dir: Path) -> Manifest:
    return read_manifest(artifact_dir)


def prompt_ids(count: int, vocab: int) -> list[int]:
    """The ids the host gives every runner (the one rule, ``Workload.prompt_ids``)."""
    return Workload(prompt_len=count).prompt_ids(vocab)


def ids_file(directory: Path, ids: list[int]) -> Path:
    """A --prompt-ids file as the host writes it."""
    path = directory / "prompt_ids.txt"
    path.write_text(" ".join(map(str, ids)) + "\n")
    return path


def greedy_reference(pte: Path, ids: list[int], gen_len: int) -> list[int]:
    """Greedy tokens from executorch.runtime (the Python bindings) for the same program and ids."""
    from edgekit.export.executorch import PteRunner

    runner = PteRunner(pte, threads=1)
    tokens = [int(runner.prefill(ids).argmax())]
    while len(tokens) < gen_len:
        tokens.append(int(runner.step(tokens[-1]).argmax()))
    return tokens

