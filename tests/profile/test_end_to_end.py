"""Profile tiny ONNX, .pte and GGUF artifacts end to end on the emulated board (ssh, Python agent) and phone
(adb, no Python: the native runner): agent pushed, artifact pushed, trace pulled, validated, metrics computed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit import paths
from edgekit.devices.base import Device
from edgekit.errors import RuntimeMissing
from edgekit.profile.run import ProfileRequest, ProfileResult, profile_on
from edgekit.workload import Workload
from tests.profile.conftest import DEVICE_PYTHON, PHONE_WORKDIR, make_request

PROMPT, GEN, RUNS = 16, 24, 2


WORKLOAD = {"prompt_len": PROMPT, "gen_len": GEN, "runs": RUNS, "warmup": 1, "threads": 1, "sample_ms": 20,
            "baseline_s": 0.3, "cooldown_s": 0.0, "runner": "python", "timeout_s": 240.0}


def _request(artifact: Path, **overrides: object) -> ProfileRequest:
    return make_request(artifact, WORKLOAD, **overrides)  # type: ignore[arg-type]


def check_result(result: ProfileResult, runtime: str, *, summary: bool = True) -> None:
    trace, m = result.trace, result.metrics
    gen = trace.workload["gen_len"]
    assert result.trace_dir == paths.home() / "traces" / result.run_id
    assert (result.trace_dir / "trace.jsonl").is_file() and (result.trace_dir / "metrics.json").is_file()
    if summary:  # the Python agent's counts; the sh agent writes none
        counts = json.loads((result.trace_dir / "summary.json").read_text())
        assert counts["runs_completed"] == RUNS and counts["runs_failed"] == 0
    assert trace.header["artifact"]["runtime"] == runtime
    # Every runner feeds the ids the host gives it.
    vocab = result.manifest.model.vocab_size
    assert trace.workload["prompt_ids"] == Workload(prompt_len=PROMPT).prompt_ids(vocab)
    assert trace.footer["status"] == "ok"
    assert [r.run for r in m.runs] == list(range(RUNS)) and all(r.ok for r in m.runs)
    for run in range(RUNS):
        steps = [e for e in trace.events if e["run"] == run and not e["warmup"] and e["name"] == "decode_step"]
        assert sorted(e["token_index"] for e in steps) == list(range(1, gen))
    warm = [e for e in trace.events if e.get("warmup") and e["name"] == "decode_step"]
    assert len(warm) == gen - 1
    for run in m.runs:
        assert run.ttft_ms is not None and run.ttft_ms > 0
        assert run.decode_tok_s is not None and run.decode_tok_s > 0
        assert run.decode_ms_p50 is not None and run.decode_ms_p90 is not None
        assert run.decode_ms_p50 <= run.decode_ms_p90
        assert len(run.decode_ms) == gen - 1
    assert m.load_ms is not None and m.load_ms > 0
    assert m.memory["peak_rss_kb"] is not None and m.memory["peak_rss_kb"] > m.memory["weights_kb"]
    assert m.memory["peak_pss_kb"] is not None and 0 < m.memory["peak_pss_kb"] <= m.memory["peak_rss_kb"]
    # however short a repetition, its runner read its own PSS at the end of it
    assert all(r.peak_pss_kb is not None and r.peak_pss_kb > 0 for r in m.runs)
    assert m.temperature_max_c is not None and m.freq_mean_khz is not None
    assert m.idle_power_w is not None and m.idle_power_w > 0
    assert all(r.energy_per_token_mj is not None for r in m.runs), m.energy_missing_reason


def _leftover_runs(device: Device, workdir: str) -> str:
    return device.run(["ls", f"{workdir}/runs"], timeout_s=30).text().strip()


def test_board_onnx(board_dev: Device, tiny_onnx: Path) -> None:
    result = profile_on(board_dev, _request(tiny_onnx), workdir="/home/edgekit", python=DEVICE_PYTHON,
                        device_class="board")
    check_result(result, "onnxruntime-genai")
    assert result.trace.header["power_source"] == "hwmon"
    assert _leftover_runs(board_dev, "/home/edgekit") == ""


def test_board_pte(board_dev: Device, tiny_pte: Path) -> None:
    result = profile_on(board_dev, _request(tiny_pte), workdir="/home/edgekit", python=DEVICE_PYTHON,
                        device_class="board")
    check_result(result, "executorch")


def test_phone_has_no_python_and_says_so(phone_dev: Device, tiny_onnx: Path) -> None:
    # A phone's shell finds no Python: asked for the Python agent explicitly, edgekit names what is missing.
    assert phone_dev.run(["sh", "-c", "command -v python3 python || true"], timeout_s=30).text().strip() == ""
    with pytest.raises(RuntimeMissing, match="python"):
        profile_on(phone_dev, _request(tiny_onnx), workdir=PHONE_WORKDIR, python="python3", device_class="phone")


@pytest.mark.parametrize(("artifact", "runtime"), [("tiny_pte", "executorch"), ("tiny_onnx", "onnxruntime-genai"),
                                                   ("tiny_gguf", "llama.cpp")])
def test_phone_runs_every_runtime_through_the_native_runner(request: pytest.FixtureRequest, phone_dev: Device,
                                                           native_builds: object, artifact: str, runtime: str) -> None:
    # The native runner decodes the tiny model in ~0.1-1 ms a token: 400 tokens sampled every 10 ms make each
    # repetition span several of the sh agent's samples, enough for peak memory and energy per run.
    path = request.getfixturevalue(artifact)
    result = profile_on(phone_dev, _request(path, runner="auto", baseline_s=1.0, gen_len=400, sample_ms=10),
                        workdir=PHONE_WORKDIR, python=DEVICE_PYTHON, device_class="phone")
    assert result.runner == "native"
    assert result.trace.header["runner"]["kind"] == f"native-{runtime}"
    check_result(result, runtime, summary=False)
    assert result.trace.header["power_source"] == "battery"
    assert result.trace.header["device"]["charging"] is False
    assert result.conditioning.end.battery_pct is not None
