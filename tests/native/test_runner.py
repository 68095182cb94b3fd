"""The ExecuTorch runner alone on the host: trace events per device_agents/TRACE.md, the workload it was given,
logits and greedy tokens equal to executorch.runtime's (whose LLM custom-op kernels are ExecuTorch's own, the
runner's are its own), and clear refusals of wrong programs, missing operators and workloads."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.native.conftest import (
    NativeRunner,
    check_runner_trace,
    greedy_reference,
    ids_file,
    lower_program,
    manifest_of,
    parse_jsonl,
    prompt_ids,
    pte_logits,
)

EXPECTED_SIGNATURE = "forward(input_ids int64[1, seq], cache_position int64[seq]) -> logits float32[1, seq, vocab]"


def test_version(native_runner: NativeRunner) -> None:
    proc = native_runner.run("--version")
    assert proc.returncode == 0
    assert re.fullmatch(r"edgekit_runner \d+\.\d+\.\d+ \(executorch \d+\.\d+\.\d+\S*\)\n", proc.stdout)


def test_kernels_lists_the_registry(native_runner: NativeRunner) -> None:
    proc = native_runner.run("--kernels")
    assert proc.returncode == 0
    kernels = proc.stdout.split()
    assert kernels == sorted(set(kernels))
    # The runner's own LLM kernels, the wheel's quantized embeddings, the optimized ATen kernels.
    for name in ("llama::update_cache.out", "llama::custom_sdpa.out", "quantized_decomposed::embedding_4bit.out",
                 "quantized_decomposed::embedding_byte.out", "aten::embedding.out"):
        assert name in kernels


@pytest.mark.parametrize("recipe", ["pte-fp32", "pte-8da4w"])
def test_runner_trace_and_greedy_tokens(native_runner: NativeRunner, tiny_pte_dirs: dict[str, Path],
                                        recipe: str, tmp_path: Path) -> None:
    artifact = tiny_pte_dirs[recipe]
    manifest = manifest_of(artifact)
    assert {"llama::update_cache.out", "llama::custom_sdpa.out"} <= set(manifest.requires)
    vocab = manifest.model.vocab_size
    prompt_len, gen_len, warmup, runs = 11, 7, 2, 3
    trace = tmp_path / "runner.jsonl"
    ids = ids_file(tmp_path, prompt_ids(prompt_len, vocab))
    proc = native_runner.run("--model", str(artifact / "model.pte"), "--prompt-len", str(prompt_len),
                             "--prompt-ids", str(ids),
                             "--gen-len", str(gen_len), "--warmup", str(warmup), "--runs", str(runs),
                             "--threads", "1", "--trace", str(trace), "--print-tokens")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "", "with --trace nothing goes to stdout"
    lines = parse_jsonl(trace.read_text())
    check_runner_trace(lines, warmup=warmup, runs=runs, gen_len=gen_len)
    (info,) = [x for x in lines if x["type"] == "runner_info"]
    assert info["vocab_size"] == vocab and info["max_context"] == manifest.max_context
    assert info["prompt_ids"] == prompt_ids(prompt_len, vocab) and info["threads"] == 1
    assert info["planned_memory_bytes"] > manifest.kv_cache.bytes_at_max_context  # the cache is planned memory
    expected = greedy_reference(artifact / "model.pte", prompt_ids(prompt_len, vocab), gen_len)
    for record in [x for x in lines if x["type"] == "tokens"]:
        assert record["ids"] == expected, f"run {record['run']} (warmup={record['warmup']})"


@pytest.mark.parametrize("threads", ["1", "2"])
def test_logits_equal_the_runtimes_own(native_runner: NativeRunner, tiny_pte_dirs: dict[str, Path],
                                       threads: str, tmp_path: Path) -> None:
    """Every position's logits, prefill and 24 decode steps, against ExecuTorch's implementation of the ops."""
    pte = tiny_pte_dirs["pte-fp32"] / "model.pte"
    ids = prompt_ids(13, manifest_of(tiny_pte_dirs["pte-fp32"]).model.vocab_size)
    proc = native_runner.run("--model", str(pte), "--prompt-ids", str(ids_file(tmp_path, ids)), "--gen-len", "25",
                             "--warmup", "0", "--runs", "1", "--threads", threads, "--print-logits", "--print-tokens")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = parse_jsonl(proc.stdout)
    (tokens,) = [x["ids"] for x in lines if x["type"] == "tokens"]
    mine = [np.array(x["values"], dtype=np.float32) for x in lines if x["type"] == "logits"]
    assert [x["token_index"] for x in lines if x["type"] == "logits"] == list(range(25))
    reference = pte_logits(pte, ids, tokens[:-1])
    worst = max(float(np.abs(a - b).max()) for a, b in zip(mine, reference, strict=True))
    assert worst < 1e-4, f"largest logit difference {worst}"
    assert tokens == [int(r.argmax()) for r in reference]


@pytest.fixture(scope="module")
def sdpa_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Programs whose logits are custom_sdpa's output itself ([1, seq, 4 heads x 8]; 2 kv heads), in three
    modes: causal, not causal (scale 0.5), and an additive mask over the whole cache."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    import torch

    max_context, heads, kv_heads, dim = 16, 4, 2, 8

    class Attention(torch.nn.Module):
        def __init__(self, mode: str) -> None:
            super().__init__()
            self.mode = mode
            self.embed = torch.nn.Embedding(32, (heads + 2 * kv_heads) * dim)
            self.register_buffer("k", torch.zeros(1, max_context, kv_heads, dim), persistent=False)
            self.register_buffer("v", torch.zeros(1, max_context, kv_heads, dim), persistent=False)
            self.register_buffer("bias", torch.randn(max_context, max_context))

        def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
            start = cache_position[0].item()
            torch._check(start >= 0)
            torch._check(start + input_ids.shape[1] <= max_context)
            x = self.embed(input_ids)
            seq = x.shape[1]
            q, k, v = x.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
            torch.ops.llama.update_cache(k.reshape(1, seq, kv_heads, dim), self.k, start)
            torch.ops.llama.update_cache(v.reshape(1, seq, kv_heads, dim), self.v, start)
            mask = self.bias[:seq].contiguous() if self.mode == "mask" else None
            out = torch.ops.llama.custom_sdpa(q.reshape(1, seq, heads, dim), self.k, self.v, start, mask, 0.0,
                                              self.mode == "causal", 0.5 if self.mode == "not-causal" else None)
            return out.reshape(1, seq, heads * dim)

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("sdpa")
    example = (torch.zeros((1, 2), dtype=torch.long), torch.arange(2, dtype=torch.long))
    paths = {}
    for mode in ("causal", "not-causal", "mask"):
        paths[mode] = root / f"{mode}.pte"
        paths[mode].write_bytes(lower_program(Attention(mode).eval(), example, max_context - 1).buffer)  # type: ignore[attr-defined]
    return paths


@pytest.mark.parametrize("mode", ["causal", "not-causal", "mask"])
def test_custom_sdpa_semantics(native_runner: NativeRunner, sdpa_programs: dict[str, Path], mode: str,
                               tmp_path: Path) -> None:
    ids = [3, 7, 9, 1, 30]
    # After a warm-up the cache holds its entries past the current position: without a mask they must not be
    # read (the reference's cache is fresh). A mask spans the whole cache, stale entries included, by design.
    warmup = "0" if mode == "mask" else "1"
    proc = native_runner.run("--model", str(sdpa_programs[mode]), "--prompt-ids", str(ids_file(tmp_path, ids)),
                             "--gen-len", "6", "--warmup", warmup, "--runs", "1", "--threads", "2", "--print-logits",
                             "--print-tokens")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = parse_jsonl(proc.stdout)
    (tokens,) = [x["ids"] for x in lines if x["type"] == "tokens" and not x["warmup"]]
    mine = [np.array(x["values"], dtype=np.float32) for x in lines if x["type"] == "logits" and not x["warmup"]]
    reference = pte_logits(sdpa_programs[mode], ids, tokens[:-1])
    worst = max(float(np.abs(a - b).max()) for a, b in zip(mine, reference, strict=True))
    assert worst < 1e-5, f"{mode}: largest difference {worst}"


def test_prompt_ids_file(native_runner: NativeRunner, tiny_pte_dirs: dict[str, Path], tmp_path: Path) -> None:
    pte = tiny_pte_dirs["pte-fp32"] / "model.pte"
    ids = [5, 17, 300, 2, 2, 511, 0]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("5 17\n300\t2 2\n511 0\n")
    proc = native_runner.run("--model", str(pte), "--prompt-ids", str(ids_file), "--gen-len", "4",
                             "--warmup", "0", "--runs", "1", "--print-tokens")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = parse_jsonl(proc.stdout)
    (info,) = [x for x in lines if x["type"] == "runner_info"]
    assert info["prompt_ids"] == ids
    (tokens,) = [x for x in lines if x["type"] == "tokens"]
    assert tokens["ids"] == greedy_reference(pte, ids, 4)
    for text, problem in (("5 x 7", "holds 'x', not a token id"), ("", "holds no ids"), ("4 -1", "'-1'")):
        ids_file.write_text(text)
        proc = native_runner.run("--model", str(pte), "--prompt-ids", str(ids_file))
        assert proc.returncode == 2 and problem in proc.stderr, proc.stderr
    ids_file.write_text("1 512")
    proc = native_runner.run("--model", str(pte), "--prompt-ids", str(ids_file))
    assert proc.returncode == 2 and "prompt id 512 is outside the vocabulary (512 ids)" in proc.stderr
    proc = native_runner.run("--model", str(pte), "--prompt-ids", str(tmp_path / "absent.txt"))
    assert proc.returncode == 2 and "cannot read --prompt-ids file" in proc.stderr


def test_missing_operator_is_named(native_runner: NativeRunner, missing_kernel_dir: Path, tmp_path: Path) -> None:
    trace = tmp_path / "runner.jsonl"
    proc = native_runner.run("--model", str(missing_kernel_dir / "model.pte"), "--prompt-ids",
                             str(ids_file(tmp_path, [1, 2])), "--trace", str(trace))
    assert proc.returncode == 3
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("edgekit_runner:")]
    assert "needs 1 operator(s) this runner lacks: edgekit_test::twice.out" in line
    (error,) = [x for x in parse_jsonl(trace.read_text()) if x.get("name") == "error"]
    assert error["run"] == -1 and "edgekit_test::twice.out" in error["message"]


def test_wrong_signature_is_refused_clearly(native_runner: NativeRunner, bad_signature_pte: Path,
                                            tmp_path: Path) -> None:
    trace = tmp_path / "runner.jsonl"
    proc = native_runner.run("--model", str(bad_signature_pte), "--prompt-ids", str(ids_file(tmp_path, [1, 2])),
                             "--trace", str(trace))
    assert proc.returncode == 3
    message = proc.stderr.strip().splitlines()[-1]
    assert "does not have the edgekit KV-cache signature: 2 inputs expected, found 1" in message
    assert f"Expected {EXPECTED_SIGNATURE}" in message
    assert "found forward(float32[1, 8]) -> float32[1, 4]" in message
    lines = parse_jsonl(trace.read_text())
    errors = [x for x in lines if x.get("name") == "error"]
    assert len(errors) == 1 and errors[0]["reason"] == "runtime-error" and errors[0]["run"] == -1
    assert "2 inputs expected, found 1" in errors[0]["message"]
    assert not [x for x in lines if x.get("name") in ("load_end", "run_start")]


def test_not_a_program_and_missing_file(native_runner: NativeRunner, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pte"
    junk.write_bytes(b"not a flatbuffer" * 64)
    ids = str(ids_file(tmp_path, [1, 2]))
    proc = native_runner.run("--model", str(junk), "--prompt-ids", ids)
    assert proc.returncode == 3 and "is not a loadable ExecuTorch program" in proc.stderr
    proc = native_runner.run("--model", str(tmp_path / "absent.pte"), "--prompt-ids", ids)
    assert proc.returncode == 3 and "cannot open model" in proc.stderr and "No such file" in proc.stderr


def test_workload_that_does_not_fit_is_refused(native_runner: NativeRunner, tiny_pte_dirs: dict[str, Path],
                                               tmp_path: Path) -> None:
    artifact = tiny_pte_dirs["pte-fp32"]
    max_context = manifest_of(artifact).max_context
    ids = ids_file(tmp_path, prompt_ids(max_context - 10, manifest_of(artifact).model.vocab_size))
    proc = native_runner.run("--model", str(artifact / "model.pte"), "--prompt-ids", str(ids), "--gen-len", "20")
    assert proc.returncode == 2
    assert f"max_context {max_context}" in proc.stderr and "do not fit" in proc.stderr
    proc = native_runner.run("--model", str(artifact / "model.pte"), "--prompt-ids", str(ids), "--runs", "zero")
    assert proc.returncode == 2 and "--runs must be an integer >= 1, got 'zero'" in proc.stderr
    proc = native_runner.run("--model", str(artifact / "model.pte"), "--prompt-ids", str(ids), "--ctx", "64")
    assert proc.returncode == 2 and f"--ctx 64 differs from the program's max_context {max_context}" in proc.stderr
    short = ids_file(tmp_path, prompt_ids(8, manifest_of(artifact).model.vocab_size))
    proc = native_runner.run("--model", str(artifact / "model.pte"), "--prompt-ids", str(short), "--gen-len", "4",
                             "--runs", "1", "--warmup", "0", "--ctx", str(max_context))  # restating it is fine
    assert proc.returncode == 0, proc.stderr


def test_prompt_ids_are_required(native_runner: NativeRunner, tiny_pte_dirs: dict[str, Path]) -> None:
    # The host gives every runner the same ids; the runner has no rule of its own to fall back on.
    proc = native_runner.run("--model", str(tiny_pte_dirs["pte-fp32"] / "model.pte"), "--prompt-len", "8")
    assert proc.returncode == 2 and "--prompt-ids is required" in proc.stderr


def test_clock_sync_mode(native_runner: NativeRunner) -> None:
    proc = native_runner.run("--clock-sync")
    assert proc.returncode == 0
    (event,) = parse_jsonl(proc.stdout)
    assert event["name"] == "clock_sync" and event["run"] == -1 and event["warmup"] is False
    assert isinstance(event["ts_ns"], int) and isinstance(event["ts_boot_ns"], int)
