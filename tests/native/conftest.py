"""Fixtures for the native runner: its host builds (android_harness/build_host.sh, once per session; a failed
build fails every test that needs it), one per runtime; tiny artifacts of each runtime's format
(``artifacts.py``); a .pte with the wrong signature and one with an operator no runner has; helpers to run a
runner, parse what it writes and get the runtimes' own greedy tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from edgekit.devices.adb import AdbDevice
    from tests.fixtures.phone import Phone

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgekit.manifest import Manifest, read_manifest
from edgekit.workload import Workload
from tests.native import artifacts

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "android_harness"
AGENT = REPO / "device_agents" / "android" / "agent.sh"
BUILD = HARNESS / "build" / "host"
LLAMA_CPP_SCRIPT = REPO / "scripts" / "build_llama_cpp.sh"


@dataclass(frozen=True)
class NativeRunner:
    binary: Path
    lib_dir: Path

    def run(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)


def _build_host(**env: str) -> dict[str, NativeRunner]:
    """Runs build_host.sh with this interpreter's wheels; the runners it built, by runtime."""
    import os

    proc = subprocess.run([str(HARNESS / "build_host.sh")], capture_output=True, text=True, timeout=1800,
                          stdin=subprocess.DEVNULL, env={**os.environ, "PYTHON": sys.executable, **env})
    if proc.returncode != 0:
        pytest.fail(f"android_harness/build_host.sh failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}", pytrace=False)
    runners = {}
    for line in proc.stdout.split():
        binary = Path(line)
        runners[binary.parent.parent.name] = NativeRunner(binary, binary.parent.parent / "lib")
    assert all(r.binary.is_file() for r in runners.values()), proc.stdout
    return runners


@pytest.fixture(scope="session")
def native_builds() -> dict[str, NativeRunner]:
    """Every runner build_host.sh can build here (llama.cpp only when its build already exists)."""
    return _build_host()


@pytest.fixture(scope="session")
def native_runner(native_builds: dict[str, NativeRunner]) -> NativeRunner:
    """The ExecuTorch runner."""
    assert "executorch" in native_builds, "build_host.sh built no ExecuTorch runner (is the executorch wheel there?)"
    return native_builds["executorch"]


@pytest.fixture(scope="session")
def genai_runner(native_builds: dict[str, NativeRunner]) -> NativeRunner:
    assert "onnxruntime-genai" in native_builds, "build_host.sh built no GenAI runner (onnxruntime-genai wheel?)"
    return native_builds["onnxruntime-genai"]


@pytest.fixture(scope="session")
def llama_cpp_dir() -> Path:
    """The llama.cpp build (scripts/build_llama_cpp.sh: from its cache, else built, which takes ~20 minutes)."""
    proc = subprocess.run([str(LLAMA_CPP_SCRIPT)], capture_output=True, text=True, timeout=3600,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"scripts/build_llama_cpp.sh failed ({proc.returncode}): {proc.stderr[-3000:]}", pytrace=False)
    return Path(proc.stdout.split()[-1])


@pytest.fixture(scope="session")
def llama_runner(native_builds: dict[str, NativeRunner], llama_cpp_dir: Path) -> NativeRunner:
    if "llama.cpp" not in native_builds:  # llama.cpp was built just now: build its runner too
        native_builds.update(_build_host(LLAMA_CPP_DIR=str(llama_cpp_dir)))
    return native_builds["llama.cpp"]


# -- artifacts -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_hf_dir(shared_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """edgekit's tiny Llama (trained briefly, cached for the session) as a Hugging Face directory."""
    from edgekit.models import prepare

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKIT_CACHE", str(shared_cache))
        mp.setenv("EDGEKIT_HOME", str(tmp_path_factory.mktemp("tiny-home")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        return prepare("tiny-llama").hf_dir


@pytest.fixture(scope="session")
def tiny_pte_dirs(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model as custom-op .pte programs: fp32 and 8da4w (XNNPACK)."""
    root = tmp_path_factory.mktemp("native-pte")
    return {name: artifacts.custom_op_pte(tiny_hf_dir, root / name, quantize=name == "pte-8da4w")
            for name in ("pte-fp32", "pte-8da4w")}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_genai_dir(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as the ORT GenAI model builder writes it (fp32, CPU)."""
    root = tmp_path_factory.mktemp("native-genai")
    return artifacts.genai_dir(tiny_hf_dir, root / "onnx-fp32", root / "work")


@pytest.fixture(scope="session")
def tiny_gguf_dir(tiny_hf_dir: Path, llama_cpp_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as an f32 GGUF written by llama.cpp's own converter."""
    root = tmp_path_factory.mktemp("native-gguf")
    return artifacts.gguf_file(tiny_hf_dir, root / "gguf-f32", root / "work", llama_cpp_dir)


# A random-initialised Llama large enough that one decode step takes ~10 ms on one thread (85 MB of fp32
# weights): timing comparisons need steps long against the scheduler's jitter and against the per-step
# work a side adds around execute (the agent's is ~1% of a 10 ms step). 12 layers (19 ms steps, 2.5 min
# to export instead of 1) did not bring the rates closer: native / agent 1.007-1.056 in four runs.
WIDE_CONFIG = {"vocab_size": 512, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 6,
               "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 1024,
               "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}


@pytest.fixture(scope="session")
def wide_pte_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wide model as an fp32 custom-op .pte of 128 positions."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    source = tmp_path_factory.mktemp("wide-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**WIDE_CONFIG)).save_pretrained(source, safe_serialization=True)
    return artifacts.custom_op_pte(source, tmp_path_factory.mktemp("wide-artifact") / "pte-fp32", max_context=128)


def lower_program(module: object, example: tuple, max_seq: int) -> object:
    """``module`` as a portable .pte with the edgekit signature's dynamic seq dimension (no delegate)."""
    import torch
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    seq = torch.export.Dim("seq", min=1, max=max_seq)
    program = torch.export.export(module, example, dynamic_shapes=({1: seq}, {0: seq}), strict=True)
    edge = to_edge_transform_and_lower(program, compile_config=EdgeCompileConfig(_check_ir_validity=False))
    return edge.to_executorch(ExecutorchBackendConfig(
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
        sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass()))  # fmt: skip


@pytest.fixture(scope="session")
def missing_kernel_dir(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact whose program calls ``edgekit_test::twice.out``, an operator defined here and in no runner."""
    import executorch.exir  # noqa: F401  (before torch.library: ExecuTorch registers its own libraries first)
    import torch

    lib = torch.library.Library("edgekit_test", "DEF")
    lib.define("twice(Tensor x) -> Tensor")
    lib.define("twice.out(Tensor x, *, Tensor(a!) out) -> Tensor(a!)")
    lib.impl("twice", lambda x: 2 * x, "CompositeExplicitAutograd")
    lib.impl("twice.out", lambda x, *, out: out.copy_(2 * x), "CompositeExplicitAutograd")
    vocab = json.loads((tiny_hf_dir / "config.json").read_text())["vocab_size"]

    class Twice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, vocab)

        def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
            return torch.ops.edgekit_test.twice(self.embed(input_ids)) + cache_position[None, :, None].float()

    out = tmp_path_factory.mktemp("missing-kernel")
    example = (torch.zeros((1, 2), dtype=torch.long), torch.arange(2, dtype=torch.long))
    program = lower_program(Twice().eval(), example, 15)
    (out / "model.pte").write_bytes(program.buffer)  # type: ignore[attr-defined]
    artifacts.write_manifest(out, tiny_hf_dir, "executorch", "model.pte", 16, recipe="test-missing-kernel",
                             requires=artifacts.operators(program))
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


# -- helpers ---------------------------------------------------------------------------------------------


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


def pte_logits(pte: Path, ids: list[int], tokens: list[int]) -> list:
    """executorch.runtime's last-position logits (numpy) for prefill ``ids`` then each of ``tokens`` fed in turn
    (ExecuTorch's own kernels for the LLM custom ops, which importing custom_ops registers)."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(pte)).load_method("forward")
    out = [method.execute([torch.tensor([ids]), torch.arange(len(ids))])[0][0, -1].numpy().copy()]
    for k, token in enumerate(tokens):
        logits = method.execute([torch.tensor([[token]]), torch.tensor([len(ids) + k])])[0]
        out.append(logits[0, -1].numpy().copy())
    return out


def greedy_reference(pte: Path, ids: list[int], gen_len: int) -> list[int]:
    """Greedy tokens from executorch.runtime (the Python bindings) for the same program and ids."""
    from edgekit.export.executorch import PteRunner

    runner = PteRunner(pte, threads=1)
    tokens = [int(runner.prefill(ids).argmax())]
    while len(tokens) < gen_len:
        tokens.append(int(runner.step(tokens[-1]).argmax()))
    return tokens


def check_runner_trace(lines: list[dict], *, warmup: int, runs: int, gen_len: int) -> None:
    """The runner's lines for a run with no errors: events per device_agents/TRACE.md (names, order, run and
    warmup numbering, token_index, timestamps that never go backwards), runner_info after load_end, the footer
    last, a tokens line and a memory sample per repetition."""
    events = [x for x in lines if x["type"] == "event"]
    for event in events:
        assert isinstance(event["ts_ns"], int) and isinstance(event["run"], int)
        assert isinstance(event["warmup"], bool)
    syncs = [e for e in events if e["name"] == "clock_sync"]
    assert len(syncs) == 2 and all(e["run"] == -1 and isinstance(e["ts_boot_ns"], int) for e in syncs)
    assert syncs[0] is events[0] and syncs[1]["ts_ns"] >= max(e["ts_ns"] for e in events if e is not syncs[1])
    assert [e["name"] for e in events if e["name"].startswith("load_")] == ["load_start", "load_end"]
    assert not [e for e in events if e["name"] == "error"]
    for run, warm in [(r, True) for r in range(warmup)] + [(r, False) for r in range(runs)]:
        mine = [e for e in events if e["run"] == run and e["warmup"] is warm]
        names = [e["name"] for e in mine]
        assert names == ["run_start", "prefill_start", "prefill_end", *["decode_step"] * (gen_len - 1), "run_end"]
        assert [e["token_index"] for e in mine if e["name"] == "decode_step"] == list(range(1, gen_len))
        stamps = [e["ts_ns"] for e in mine]
        assert stamps == sorted(stamps), "timestamps of one repetition go backwards"
        # The runner's own memory between the last token and run_end: a PSS figure for every repetition.
        (memory,) = [x for x in lines if x["type"] == "sample" and stamps[-2] <= x["ts_ns"] <= stamps[-1]]
        assert 1000 < memory["pss_kb"] <= memory["rss_kb"] <= memory["hwm_kb"]
    assert {e["run"] for e in events if not e["warmup"]} == {-1, *range(runs)}
    assert {e["run"] for e in events if e["warmup"]} == set(range(warmup))
    kinds = [x["type"] for x in lines]
    assert kinds.index("runner_info") > [x.get("name") for x in lines].index("load_end")
    footer = lines[-1]
    assert footer["type"] == "runner_footer" and footer["status"] == "ok"
    assert footer["runs_completed"] == runs and footer["runs_failed"] == 0 and footer["self_hwm_kb"] > 1000
    assert len([x for x in lines if x["type"] == "tokens"]) == warmup + runs


@pytest.fixture
def phone_dev(phone: Phone) -> Iterator[AdbDevice]:
    """An adb device on the emulated phone, closed after the test."""
    from edgekit.devices.adb import AdbDevice

    device = AdbDevice(phone.serial, name="phone", server_port=phone.server.port)
    try:
        yield device
    finally:
        device.close()
