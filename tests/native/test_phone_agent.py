"""The sh agent with the native runner on the emulated Android phone, through the real adb server:
push runner + libraries + model + agent.sh with AdbDevice, run the agent under the phone's busybox sh,
pull trace.jsonl and check it is a complete trace (device_agents/TRACE.md) that the host accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.devices.adb import AdbDevice
from edgekit.devices.push import digest_artifact
from edgekit.profile.native import PreparedNative, bundle_files
from edgekit.profile.runner import RunFiles, device_facts, run_inputs
from edgekit.profile.trace import load_trace
from edgekit.workload import Workload
from tests.native.conftest import NativeRunner, manifest_of, parse_jsonl, prompt_ids

REMOTE = "/data/local/tmp/edgekit-native"


def push_bundle(device: AdbDevice, runtime: str, artifact: Path) -> None:
    """The runtime's runner bundle as the host makes it (``native.bundle_files``) and the artifact's files."""
    device.run(["rm", "-rf", f"{REMOTE}/bin", f"{REMOTE}/lib", f"{REMOTE}/model"], check=True)
    device.run(["mkdir", "-p", f"{REMOTE}/bin", f"{REMOTE}/lib", f"{REMOTE}/model"], check=True)
    for rel, local in bundle_files("x86_64", runtime).items():
        device.push(str(local), f"{REMOTE}/{rel}")
    device.run(["chmod", "755", f"{REMOTE}/bin/edgekit_runner", f"{REMOTE}/bin/edgekit_sampler"], check=True)
    for f in sorted(artifact.iterdir()):
        device.push(str(f), f"{REMOTE}/model/{f.name}")


def agent_argv(device: AdbDevice, artifact: Path, out: str, tmp_path: Path, *, prompt_len: int, gen_len: int,
               warmup: int, runs: int) -> list[str]:  # fmt: skip
    """The agent's command line as the host builds it (the runner contract), with its inputs pushed."""
    manifest = manifest_of(artifact)
    workload = Workload(prompt_len=prompt_len, gen_len=gen_len, warmup=warmup, runs=runs, threads=1, sample_ms=20)
    device.run(["mkdir", "-p", out], check=True)
    for name, text in run_inputs(manifest, workload, device_facts(device)).items():
        (tmp_path / name).write_text(text)
        device.push(str(tmp_path / name), f"{out}/{name}")
    files = RunFiles.in_run_dir(f"{REMOTE}/model", digest_artifact(artifact).sha256, out)
    return PreparedNative(REMOTE).argv(manifest, workload, files)


@pytest.mark.parametrize("sampler", ["native", "sh"])
def test_agent_on_emulated_phone(phone_dev: AdbDevice, native_runner: NativeRunner,
                                 tiny_pte_dirs: dict[str, Path], tmp_path: Path, sampler: str) -> None:
    artifact = tiny_pte_dirs["pte-fp32"]
    push_bundle(phone_dev, "executorch", artifact)
    # The custom-op program decodes the tiny model in ~0.1 ms a token: 21 x 200 tokens span many of the agent's
    # 20 ms samples (the program holds 256 positions)
    prompt_len, gen_len, warmup, runs = 16, 200, 1, 20
    argv = agent_argv(phone_dev, artifact, f"{REMOTE}/run1", tmp_path, prompt_len=prompt_len, gen_len=gen_len,
                      warmup=warmup, runs=runs)
    if sampler == "sh":  # the agent's fallback: its own loop samples the run too
        argv += ["--sampler", "sh"]
    result = phone_dev.run(argv, timeout_s=180)
    assert result.exit_code == 0, f"{result.stdout!r} {result.stderr!r}"
    local = tmp_path / "trace.jsonl"
    phone_dev.pull(f"{REMOTE}/run1/trace.jsonl", str(local))
    raw = [json.loads(line) for line in local.read_text().splitlines()]
    trace = load_trace(local)  # the host's own validation: header first, footer last, clocks mapped

    header = trace.header
    assert header["agent"]["name"] == "edgekit-android-agent" and header["agent"]["sampler"] == sampler
    assert header["runner"]["kind"] == "native-executorch" and "edgekit_runner" in header["runner"]["version"]
    assert header["device"]["model"] == "EKP-1 Emulated Phone" and header["device"]["abi"] == "x86_64"
    assert header["device"]["cores"] >= 1 and header["device"]["ram_kb"] == 8 * 1024 * 1024
    assert header["device"]["charging"] is False and 0 <= header["device"]["battery_pct"] <= 100
    assert header["power_source"] == "battery"
    assert header["artifact"]["sha256"] == digest_artifact(artifact).sha256
    assert header["artifact"]["model_id"] == "tiny-llama" and header["artifact"]["file"] == "model.pte"
    vocab = manifest_of(artifact).model.vocab_size
    assert header["workload"] == {"prompt_len": prompt_len, "gen_len": gen_len, "warmup": warmup, "runs": runs,
                                  "threads": 1, "sample_ms": 20, "prompt_ids": prompt_ids(prompt_len, vocab)}

    names = [e["name"] for e in trace.events]
    assert names.index("baseline_start") < names.index("baseline_end") < names.index("load_start")
    assert names.count("clock_sync") >= 4  # the agent's (baseline, end) and the runner's (start, exit)
    for run in range(runs):
        mine = [e["name"] for e in trace.events if e["run"] == run and not e["warmup"]]
        assert mine == ["run_start", "prefill_start", "prefill_end", *["decode_step"] * (gen_len - 1), "run_end"]
    assert "error" not in names
    base = [e["ts_ns"] for e in trace.events if e["name"] in ("baseline_start", "baseline_end")]
    assert base[1] - base[0] >= 0.9e9

    # The runner adds its own memory, on the monotonic clock, at the end of every repetition (warmup included),
    # between the last token and run_end.
    own = [s for s in raw if s["type"] == "sample" and "cpu_freq_khz" not in s]
    assert len(own) == warmup + runs and all(set(s) == {"type", "ts_ns", "rss_kb", "hwm_kb", "pss_kb"} for s in own)
    assert all(0 < s["pss_kb"] <= s["rss_kb"] <= s["hwm_kb"] for s in own)
    ends = sorted(e["ts_ns"] for e in trace.events if e["name"] == "run_end")
    stamps = sorted(s["ts_ns"] for s in own)
    assert all(end - 50_000_000 < ts <= end for ts, end in zip(stamps, ends, strict=True))
    # The shell stamps its samples with the boot clock (it has no other), edgekit_sampler with the runner's.
    samples = [s for s in trace.samples if "cpu_freq_khz" in s]
    during = [s for s in samples if s["rss_kb"] is not None]
    assert all(("ts_boot_ns" in s) == (sampler == "sh") for s in during)
    assert len(during) >= 3, f"only {len(during)} samples while the runner ran"
    assert all(s["rss_kb"] > 0 for s in during)
    # The peak and PSS: every sample while the runner is under 32 MB resident, else at most every 100 ms (the
    # first sample of the run has them), null between.
    full = [s for s in during if s["hwm_kb"] is not None]
    assert full and full[0] is during[0], "the first sample of the run reads the peak and PSS"
    assert all(s["pss_kb"] > 0 for s in full), [s["pss_kb"] for s in full]
    # The peak is read from /proc/PID/status a moment after the resident size from statm. VmHWM is the larger
    # of the current size and the peak the kernel last recorded, which it records when the process unmaps
    # memory, not when pages go back otherwise (free() returning them with madvise): pages released between
    # the two reads can leave it just under the size read first (a CI run saw one such sample). A working
    # sampler never reads it far under.
    low = [(s["hwm_kb"], s["rss_kb"]) for s in full if s["hwm_kb"] < s["rss_kb"] - max(1024, s["rss_kb"] // 50)]
    assert not low, f"VmHWM well under the resident size read just before it (hwm, rss): {low}"
    assert all(s["pss_kb"] is None and s["rss_kb"] >= 32768 for s in during if s["hwm_kb"] is None)
    powered = [s for s in samples if s["power_uw"] is not None]
    assert len(powered) == len(samples)
    assert all(s["power_uw"] > 0 and s["current_ua"] < 0 for s in powered), "discharging: consumed power is positive"
    # computed as mV x uA / 1000 in 32-bit shell arithmetic: off by at most |current| / 1000 + 1 uW
    assert all(abs(s["power_uw"] - s["voltage_uv"] * -s["current_ua"] / 1e6) <= -s["current_ua"] / 1e3 + 2
               for s in powered)
    assert all(s["cpu_freq_khz"] and s["thermal_mc"].get("cpu-thermal") for s in samples)
    # /proc/uptime has 10 ms resolution: leave that much slack at the window's end
    baseline = [s for s in samples if base[0] <= s["ts_ns"] <= base[1] - 20_000_000]
    assert len(baseline) >= 10 and all(s["rss_kb"] is None for s in baseline)

    footer = trace.footer
    assert footer["status"] == "ok" and footer["runs_completed"] == runs and footer["runs_failed"] == 0
    assert footer["self_hwm_kb"] >= max(s["hwm_kb"] for s in full) * 0.9
    assert footer["ts_ns"] >= max(e["ts_ns"] for e in trace.events if e["name"] != "clock_sync")


def test_missing_library_is_named(phone_dev: AdbDevice, native_runner: NativeRunner,
                                  tiny_pte_dirs: dict[str, Path], tmp_path: Path) -> None:
    push_bundle(phone_dev, "executorch", tiny_pte_dirs["pte-fp32"])
    phone_dev.run(["rm", f"{REMOTE}/lib/libexecutorch_kernels_quantized.so"], check=True)
    argv = agent_argv(phone_dev, tiny_pte_dirs["pte-fp32"], f"{REMOTE}/run2", tmp_path, prompt_len=8, gen_len=4,
                      warmup=0, runs=1)
    result = phone_dev.run(argv, timeout_s=60)
    assert result.exit_code == 3
    assert "missing library libexecutorch_kernels_quantized.so" in result.stderr.decode()
    local = tmp_path / "trace.jsonl"
    phone_dev.pull(f"{REMOTE}/run2/trace.jsonl", str(local))
    trace = load_trace(local)
    (error,) = trace.events_named("error")
    assert error["reason"] == "missing-library" and error["run"] == -1
    assert "libexecutorch_kernels_quantized.so" in error["message"]
    assert "libexecutorch_kernels_quantized.so" in error["stderr_tail"]  # the dynamic loader's own words
    assert trace.footer["status"] == "failed" and trace.footer["runs_completed"] == 0
    assert not trace.events_named("run_start")


@pytest.mark.parametrize("runtime", ["onnxruntime-genai", "llama.cpp"])
def test_other_runtimes_on_emulated_phone(phone_dev: AdbDevice, runtime: str, request: pytest.FixtureRequest,
                                         tmp_path: Path) -> None:
    """The GenAI and llama.cpp runners through the same agent: a complete trace the host accepts."""
    if runtime == "llama.cpp":
        request.getfixturevalue("llama_runner")
        artifact = request.getfixturevalue("tiny_gguf_dir")
    else:
        request.getfixturevalue("genai_runner")
        artifact = request.getfixturevalue("tiny_genai_dir")
    push_bundle(phone_dev, runtime, artifact)
    prompt_len, gen_len, runs = 12, 20, 2
    argv = agent_argv(phone_dev, artifact, f"{REMOTE}/run-{runtime}", tmp_path, prompt_len=prompt_len,
                      gen_len=gen_len, warmup=1, runs=runs)
    result = phone_dev.run(argv, timeout_s=180)
    assert result.exit_code == 0, f"{result.stdout!r} {result.stderr!r}"
    local = tmp_path / "trace.jsonl"
    phone_dev.pull(f"{REMOTE}/run-{runtime}/trace.jsonl", str(local))
    trace = load_trace(local)
    assert trace.header["runner"]["kind"] == f"native-{runtime}"
    assert trace.header["artifact"]["runtime"] == runtime
    assert trace.header["workload"]["prompt_ids"] == prompt_ids(prompt_len, manifest_of(artifact).model.vocab_size)
    for run in range(runs):
        mine = [e["name"] for e in trace.events if e["run"] == run and not e["warmup"]]
        assert mine == ["run_start", "prefill_start", "prefill_end", *["decode_step"] * (gen_len - 1), "run_end"]
    assert trace.footer["status"] == "ok" and trace.footer["runs_completed"] == runs
    assert len([s for s in trace.samples if s["rss_kb"] is not None]) >= 1
    # The runtime's cache holds the artifact's max_context (as the app that ships it would allocate it), not
    # just the workload's P + G: the memory breakdown's KV cache is that size (llama.cpp may round it up).
    phone_dev.pull(f"{REMOTE}/run-{runtime}/runner.jsonl", str(tmp_path / "runner.jsonl"))
    (info,) = [x for x in parse_jsonl((tmp_path / "runner.jsonl").read_text()) if x["type"] == "runner_info"]
    max_context = manifest_of(artifact).max_context
    assert max_context > prompt_len + gen_len and info["max_context"] >= max_context, (info, max_context)
