"""The native runner alone on the host: trace events per device_agents/TRACE.md, the workload it was
given, greedy tokens equal to executorch.runtime's, and clear refusals of wrong programs and workloads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.native.conftest import (
    NativeRunner,
    greedy_reference,
    ids_file,
    manifest_of,
    parse_jsonl,
    prompt_ids,
)

EXPECTED_SIGNATURE = "forward(input_ids int64[1, seq], cache_position int64[seq]) -> logits float32[1, seq, vocab]"


def check_run_events(events: list[dict], run: int, warmup: bool, gen_len: int) -> None:
    mine = [e for e in events if e["run"] == run and e["warmup"] is warmup]
    names = [e["name"] for e in mine]
    assert names == ["run_start", "prefill_start", "prefill_end", *["decode_step"] * (gen_len - 1), "run_end"], names
    assert [e["token_index"] for e in mine if e["name"] == "decode_step"] == list(range(1, gen_len))
    stamps = [e["ts_ns"] for e in mine]
    assert stamps == sorted(stamps), "timestamps of one repetition go backwards"


def test_version(native_runner: NativeRunner) -> None:
    proc = native_runner.run("--version")
    assert proc.returncode == 0
    assert re.fullmatch(r"edgekit_runner \d+\.\d+\.\d+ \(executorch \d+\.\d+\.\d+\S*\)\n", proc.stdout)


@pytest.mark.parametrize("recipe", ["pte-fp32", "pte-8da4w"])
def test_runner_trace_and_greedy_tokens(native_runner: NativeRunner, tiny_pte_dirs: dict[str, Path],
                                        recipe: str, tmp_path: Path) -> None:
    artifact = tiny_pte_dirs[recipe]
    manifest = manifest_of(artifact)
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
    events = [x for x in lines if x["type"] == "event"]
    for event in events:
        assert isinstance(event["ts_ns"], int) and isinstance(event["run"], int)
        assert isinstance(event["warmup"], bool)

    syncs = [e for e in events if e["name"] == "clock_sync"]
    assert len(syncs) == 2 and all(e["run"] == -1 and isinstance(e["ts_boot_ns"], int) for e in syncs)
    assert syncs[0] is events[0] and syncs[1]["ts_ns"] >= max(e["ts_ns"] for e in events if e is not syncs[1])
    load = [e["name"] for e in events if e["name"].startswith("load_")]
    assert load == ["load_start", "load_end"]
    assert not [e for e in events if e["name"] == "error"]
    for run in range(warmup):
        check_run_events(events, run, True, gen_len)
    for run in range(runs):
        check_run_events(events, run, False, gen_len)
    assert {e["run"] for e in events if not e["warmup"]} == {-1, *range(runs)}
    assert {e["run"] for e in events if e["warmup"]} == set(range(warmup))

    (info,) = [x for x in lines if x["type"] == "runner_info"]
    assert info["vocab_size"] == vocab and info["max_context"] == manifest.max_context
    assert info["prompt_ids"] == prompt_ids(prompt_len, vocab) and info["threads"] == 1
    footer = lines[-1]
    assert footer["type"] == "runner_footer" and footer["status"] == "ok"
    assert footer["runs_completed"] == runs and footer["runs_failed"] == 0
    assert footer["self_hwm_kb"] > 1000

    expected = greedy_reference(artifact / "model.pte", prompt_ids(prompt_len, vocab), gen_len)
    tokens = [x for x in lines if x["type"] == "tokens"]
    assert len(tokens) == warmup + runs
    for record in tokens:
        assert record["ids"] == expected, f"run {record['run']} (warmup={record['warmup']})"


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
