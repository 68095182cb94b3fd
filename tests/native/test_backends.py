"""The ORT GenAI and llama.cpp runners alone on the host: the same trace as the ExecuTorch runner, greedy tokens
equal to an independent computation (GenAI: onnxruntime_genai's Python generator; llama.cpp: the Hugging Face
fp32 model the f32 GGUF was converted from, logits within its f16 KV cache's rounding), the facts in
runner_info, and clear refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.native.conftest import (
    NativeRunner,
    check_runner_trace,
    ids_file,
    manifest_of,
    parse_jsonl,
    prompt_ids,
)

PROMPT, GEN, WARMUP, RUNS = 13, 24, 1, 2


def run_traced(runner: NativeRunner, model: Path, tmp_path: Path, *extra: str) -> tuple[list[dict], list[int]]:
    """A traced run of ``model`` with the usual workload; (its lines, the prompt ids)."""
    vocab = manifest_of(model.parent).model.vocab_size
    ids = prompt_ids(PROMPT, vocab)
    trace = tmp_path / "runner.jsonl"
    proc = runner.run("--model", str(model), "--prompt-ids", str(ids_file(tmp_path, ids)), "--gen-len", str(GEN),
                      "--warmup", str(WARMUP), "--runs", str(RUNS), "--threads", "1", "--trace", str(trace),
                      "--print-tokens", *extra)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""
    lines = parse_jsonl(trace.read_text())
    check_runner_trace(lines, warmup=WARMUP, runs=RUNS, gen_len=GEN)
    return lines, ids


def genai_greedy(model_dir: Path, ids: list[int], gen_len: int) -> list[int]:
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + gen_len, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    tokens = []
    for _ in range(gen_len):
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


def test_genai_trace_tokens_and_facts(genai_runner: NativeRunner, tiny_genai_dir: Path, tmp_path: Path) -> None:
    proc = genai_runner.run("--version")
    assert re.fullmatch(r"edgekit_runner \S+ \(onnxruntime-genai \d+\.\d+\.\d+, onnxruntime \d+\.\d+\.\d+\)\n",
                        proc.stdout), proc.stdout
    lines, ids = run_traced(genai_runner, tiny_genai_dir / "model.onnx", tmp_path)
    (info,) = [x for x in lines if x["type"] == "runner_info"]
    config = json.loads((tiny_genai_dir / "genai_config.json").read_text())["model"]
    decoder = config["decoder"]
    assert info["vocab_size"] == config["vocab_size"] and info["context_length"] == config["context_length"]
    # GenAI sizes its cache for max_length = prompt + generated: fp32 keys and values of every layer.
    assert info["max_context"] == PROMPT + GEN and info["threads"] == 1 and info["prompt_ids"] == ids
    assert info["kv_cache_bytes"] == (2 * decoder["num_hidden_layers"] * decoder["num_key_value_heads"]
                                      * decoder["head_size"] * (PROMPT + GEN) * 4)  # fmt: skip
    expected = genai_greedy(tiny_genai_dir, ids, GEN)
    assert len(set(expected)) > 3, f"a degenerate reference: {expected}"
    for record in [x for x in lines if x["type"] == "tokens"]:
        assert record["ids"] == expected, f"run {record['run']} (warmup={record['warmup']})"


def test_genai_takes_the_directory_and_refuses_clearly(genai_runner: NativeRunner, tiny_genai_dir: Path,
                                                       tmp_path: Path) -> None:
    ids = str(ids_file(tmp_path, [1, 2, 3]))
    by_file = genai_runner.run("--model", str(tiny_genai_dir / "model.onnx"), "--prompt-ids", ids, "--gen-len", "5",
                               "--warmup", "0", "--runs", "1", "--print-tokens")
    by_dir = genai_runner.run("--model", str(tiny_genai_dir), "--prompt-ids", ids, "--gen-len", "5", "--warmup", "0",
                              "--runs", "1", "--print-tokens")
    tokens = [[x["ids"] for x in parse_jsonl(p.stdout) if x["type"] == "tokens"] for p in (by_file, by_dir)]
    assert by_file.returncode == by_dir.returncode == 0 and tokens[0] == tokens[1]
    proc = genai_runner.run("--model", str(tmp_path), "--prompt-ids", ids)
    assert proc.returncode == 3 and "is not an ORT GenAI model directory: no genai_config.json" in proc.stderr
    proc = genai_runner.run("--model", str(tmp_path / "absent" / "model.onnx"), "--prompt-ids", ids)
    assert proc.returncode == 3 and "cannot open model" in proc.stderr
    context = json.loads((tiny_genai_dir / "genai_config.json").read_text())["model"]["context_length"]
    proc = genai_runner.run("--model", str(tiny_genai_dir), "--prompt-ids", ids, "--gen-len", str(context))
    assert proc.returncode == 2 and f"context_length {context}" in proc.stderr and "do not fit" in proc.stderr
    # --ctx sizes GenAI's cache (max_length) beyond what the workload needs
    proc = genai_runner.run("--model", str(tiny_genai_dir), "--prompt-ids", ids, "--gen-len", "5", "--ctx", "100",
                            "--runs", "1", "--warmup", "0")
    (info,) = [x for x in parse_jsonl(proc.stdout) if x["type"] == "runner_info"]
    assert proc.returncode == 0 and info["max_context"] == 100


def test_llama_cpp_trace_tokens_and_facts(llama_runner: NativeRunner, tiny_gguf_dir: Path, tiny_hf_dir: Path,
                                          tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    proc = llama_runner.run("--version")
    assert re.fullmatch(r"edgekit_runner \S+ \(llama\.cpp b\d+\)\n", proc.stdout), proc.stdout
    lines, ids = run_traced(llama_runner, tiny_gguf_dir / "model.gguf", tmp_path, "--print-logits")
    (info,) = [x for x in lines if x["type"] == "runner_info"]
    config = json.loads((tiny_hf_dir / "config.json").read_text())
    assert info["vocab_size"] == config["vocab_size"] and info["n_ctx_train"] == config["max_position_embeddings"]
    assert info["threads"] == 1 and info["prompt_ids"] == ids
    # llama.cpp rounds n_ctx up (to 256 cells here); its own accounting of the cache: f16 keys and values.
    n_ctx = info["max_context"]
    assert n_ctx >= PROMPT + GEN - 1 and info["kv_cache_source"] == "llama_get_memory_breakdown"
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert info["kv_cache_bytes"] == (n_ctx * config["num_hidden_layers"] * 2 * config["num_key_value_heads"]
                                      * head_dim * 2)  # fmt: skip

    tokens = [x["ids"] for x in lines if x["type"] == "tokens"]
    assert all(t == tokens[0] for t in tokens), "repetitions disagree: the cache was not cleared"
    model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():  # the reference, teacher-forced along the runner's own tokens
        reference = model(torch.tensor([ids + tokens[0][:-1]])).logits[0, len(ids) - 1:].numpy()
    mine = np.stack([np.array(x["values"], dtype=np.float32) for x in lines
                     if x["type"] == "logits" and x["run"] == 0 and not x["warmup"]])  # fmt: skip
    worst = float(np.abs(mine - reference).max())
    assert worst < 0.1, f"largest logit difference {worst} (logits up to {np.abs(reference).max():.1f})"
    assert tokens[0] == [int(t) for t in reference.argmax(-1)], "not the reference's greedy tokens"
    assert len(set(tokens[0])) > 3, f"a degenerate reference: {tokens[0]}"


def test_llama_cpp_refuses_clearly(llama_runner: NativeRunner, tiny_gguf_dir: Path, tiny_hf_dir: Path,
                                   tmp_path: Path) -> None:
    ids = str(ids_file(tmp_path, list(range(1, 30))))
    gguf = str(tiny_gguf_dir / "model.gguf")
    proc = llama_runner.run("--model", gguf, "--prompt-ids", ids, "--gen-len", "8", "--ctx", "32")
    assert proc.returncode == 2 and "in --ctx 32 do not fit" in proc.stderr
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"GGML" + b"\0" * 64)
    proc = llama_runner.run("--model", str(not_gguf), "--prompt-ids", ids)
    assert proc.returncode == 3 and "is not a GGUF file" in proc.stderr
    proc = llama_runner.run("--model", str(tmp_path / "absent.gguf"), "--prompt-ids", ids)
    assert proc.returncode == 3 and "cannot open model" in proc.stderr
    proc = llama_runner.run("--model", gguf, "--prompt-ids", ids, "--gen-len", "4", "--ctx", "64", "--runs", "1",
                            "--warmup", "0", "--load-mode", "file")
    (info,) = [x for x in parse_jsonl(proc.stdout) if x["type"] == "runner_info"]
    assert proc.returncode == 0 and info["max_context"] >= 64
    assert proc.stderr == "", "llama.cpp's info log must stay quiet"
    # A context beyond the trained one is an allocation (an artifact's max_context): allowed. Positions beyond
    # the trained context are not.
    trained = json.loads((tiny_hf_dir / "config.json").read_text())["max_position_embeddings"]
    proc = llama_runner.run("--model", gguf, "--prompt-ids", ids, "--gen-len", "4", "--ctx", str(2 * trained),
                            "--runs", "1", "--warmup", "0")
    (info,) = [x for x in parse_jsonl(proc.stdout) if x["type"] == "runner_info"]
    assert proc.returncode == 0 and info["max_context"] >= 2 * trained, proc.stderr
    proc = llama_runner.run("--model", gguf, "--prompt-ids", ids, "--gen-len", str(trained), "--ctx",
                            str(2 * trained))  # fmt: skip
    assert proc.returncode == 2 and f"n_ctx_train {trained}" in proc.stderr


@pytest.mark.parametrize("runtime", ["onnxruntime-genai", "llama.cpp"])
def test_kernels_is_empty_without_a_registry(runtime: str, genai_runner: NativeRunner,
                                             llama_runner: NativeRunner) -> None:
    runner = genai_runner if runtime == "onnxruntime-genai" else llama_runner
    proc = runner.run("--kernels")
    assert proc.returncode == 0 and proc.stdout == ""
