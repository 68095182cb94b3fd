"""The profiling contracts without a device: one workload with the agents' own limits, one rule for the
runner, one command line (and one set of prompt ids) for both agents, one definition of the artifact's
address."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import NativeRunnerMissing, WorkloadError
from edgekit.manifest import read_manifest
from edgekit.profile.native import AGENT_SH, PreparedNative
from edgekit.profile.python_agent import AGENT_DIR, PreparedAgent
from edgekit.profile.runner import DEVICE_JSON, PROMPT_IDS, RunFiles, choose_runner, run_inputs
from edgekit.workload import SAMPLE_MS_MAX, SAMPLE_MS_MIN, Workload
from tests.store.tracegen import ArtifactSpec, write_artifact


def test_workload_refuses_what_the_agents_refuse(tmp_path: Path) -> None:
    for good in (SAMPLE_MS_MIN, SAMPLE_MS_MAX):
        Workload(sample_ms=good)
    with pytest.raises(WorkloadError, match=r"farm\.yaml: sample_ms: must be within 10\.\.100 ms .*got 5"):
        Workload.parse({"sample_ms": 5}, "farm.yaml")
    # The agents themselves, with a command line that is valid but for the period: both refuse 5 (exit 2).
    files = [tmp_path / name for name in ("model.bin", "ids.txt")]
    for f in files:
        f.write_text("1 2 3\n")
    common = ["--model", str(files[0]), "--runtime", "executorch", "--model-id", "m", "--recipe", "r",
              "--artifact-sha256", "ab" * 32, "--out", str(tmp_path / "out"), "--prompt-len", "3",
              "--prompt-ids", str(files[1]), "--gen-len", "4", "--warmup", "0", "--runs", "1", "--threads", "1",
              "--sample-ms", "5"]
    python = subprocess.run([sys.executable, str(AGENT_DIR / "edgekit_agent.py"), *common], capture_output=True,
                            text=True, timeout=60)
    assert python.returncode == 2 and "--sample-ms must be within 10..100, got 5" in python.stderr
    native = subprocess.run(["sh", str(AGENT_SH), "--runner", "/bin/true", "--lib-dir", str(tmp_path), *common],
                            capture_output=True, text=True, timeout=60)
    assert native.returncode == 2 and "--sample-ms must be 10..100, got 5" in native.stderr

    # The PSS cadence is the workload's, passed to both agents (neither keeps its own); both refuse a bad one.
    assert Workload(pss_ms=40).agent_flags("ids.txt")[-4:-2] == ["--pss-ms", "40"]
    common[-1] = "20"
    python = subprocess.run([sys.executable, str(AGENT_DIR / "edgekit_agent.py"), *common, "--pss-ms", "-1"],
                            capture_output=True, text=True, timeout=60)
    assert python.returncode == 2 and "--pss-ms must be >= 0, got -1" in python.stderr
    native = subprocess.run(["sh", str(AGENT_SH), "--runner", "/bin/true", "--lib-dir", str(tmp_path), *common,
                             "--pss-ms", "x"], capture_output=True, text=True, timeout=60)
    assert native.returncode == 2 and "--pss-ms must be a non-negative integer, got 'x'" in native.stderr


def test_one_rule_picks_the_runner() -> None:
    assert choose_runner("auto", "phone", "executorch").kind == "native"
    assert choose_runner("auto", "phone", "onnxruntime").kind == "python"  # plain ORT graphs: Python only
    assert choose_runner("auto", "phone", "onnxruntime-genai").kind == "native"
    assert choose_runner("auto", "phone", "llama.cpp").kind == "native"
    assert choose_runner("auto", "board", "llama.cpp").kind == "native"  # the Python agent has no llama.cpp
    assert choose_runner("auto", "board", "executorch").kind == "python"
    assert choose_runner("auto", None, "onnxruntime").kind == "python"
    assert choose_runner("python", "phone", "executorch").kind == "python"
    with pytest.raises(NativeRunnerMissing, match="drives executorch, onnxruntime-genai, llama.cpp artifacts, not "
                                                  "onnxruntime: profile it with --runner python"):
        choose_runner("native", "phone", "onnxruntime")


def test_both_agents_get_the_same_flags_and_prompt_ids(tmp_path: Path) -> None:
    manifest_path, sha = write_artifact(tmp_path / "art", ArtifactSpec(target="executorch"))
    manifest = read_manifest(manifest_path)
    workload = Workload(prompt_len=7, gen_len=5, runs=2, warmup=0, threads=1, baseline_s=0.25)
    files = RunFiles("/w/artifacts/x", sha, "/w/runs/r", f"/w/runs/r/{DEVICE_JSON}", f"/w/runs/r/{PROMPT_IDS}")
    python = PreparedAgent("python3", "/w/runners/a/edgekit_agent.py", "1.5.1").argv(manifest, workload, files)
    native = PreparedNative("/w/runners/n").argv(manifest, workload, files)
    assert python[:2] == ["python3", "/w/runners/a/edgekit_agent.py"]
    assert native[:6] == ["sh", "/w/runners/n/agent.sh", "--runner", "/w/runners/n/bin/edgekit_runner", "--lib-dir",
                          "/w/runners/n/lib"]
    assert python[2:] == native[6:], "the two agents take the same flags, in the same units"
    flags = dict(zip(python[2::2], python[3::2], strict=True))
    assert flags["--prompt-ids"] == files.prompt_ids and flags["--baseline-ms"] == "250"
    assert flags["--max-context"] == str(manifest.max_context), "the runtime allocates the artifact's context"
    assert flags["--artifact-sha256"] == sha == manifest.address() and flags["--model"] == "/w/artifacts/x/model.pte"
    ids = run_inputs(manifest, workload, {"name": "d"})[PROMPT_IDS].split()
    assert [int(i) for i in ids] == workload.prompt_ids(manifest.model.vocab_size) and len(ids) == 7


@pytest.mark.parametrize(("field", "bad"), [("files", "../../etc/passwd"), ("files", "/etc/passwd"),
                                            ("artifact", "../model.pte"), ("runtime", "executorch; import os")])
def test_a_manifest_naming_paths_or_code_is_refused_when_read(tmp_path: Path, field: str, bad: str) -> None:
    # A cached or downloaded manifest is input: its file names become paths and its runtime becomes code on
    # the device, so both are checked when it is read (one ArtifactError line naming the file).
    import json

    from edgekit.errors import ArtifactError

    path, _ = write_artifact(tmp_path / "a", ArtifactSpec())
    data = json.loads(path.read_text())
    if field == "files":
        data["files"][0]["name"] = bad
    else:
        data[field] = bad
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=str(path)):
        read_manifest(path)
