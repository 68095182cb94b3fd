"""Faults during profiling: a repetition that fails (exception, real MemoryError, native abort), an
agent that hangs past the timeout, a device without the artifact's runtime, a truncated trace, and a
device that drops mid-run."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from edgekit.devices.base import Device
from edgekit.errors import ProfileTimeout, RunnerFailed, RuntimeMissing, TraceError
from edgekit.profile.remote import leftover_processes
from edgekit.profile.run import ProfileRequest, profile_on
from edgekit.profile.trace import load_trace
from tests.fixtures.board import BoardFactory
from tests.profile.conftest import DEVICE_PYTHON, PHONE_WORKDIR, board_device, make_request

BOARD_WORKDIR = "/home/edgekit"


WORKLOAD = {"prompt_len": 8, "gen_len": 16, "runs": 3, "warmup": 1, "threads": 1, "sample_ms": 20,
            "baseline_s": 0.2, "cooldown_s": 0.0, "runner": "python", "timeout_s": 240.0}


def _request(artifact: Path, **overrides: object) -> ProfileRequest:
    return make_request(artifact, WORKLOAD, **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(("mode", "reason", "evidence"), [
    ("error", "runtime-error", "injected runtime failure"),
    ("oom", "oom", "MemoryError"),
    ("crash", "crash", "aborting on request"),
])
def test_failed_repetition_is_recorded_and_the_rest_continue(board_dev: Device, tiny_onnx: Path, mode: str,
                                                             reason: str, evidence: str) -> None:
    request = _request(tiny_onnx, agent_args=("--fail-run", "1", "--fail-mode", mode))
    result = profile_on(board_dev, request, workdir=BOARD_WORKDIR, python=DEVICE_PYTHON, device_class="board")
    runs = {r.run: r for r in result.metrics.runs}
    assert runs[0].ok and runs[2].ok
    assert not runs[1].ok and runs[1].error is not None and runs[1].error.startswith(reason)
    errors = [e for e in result.trace.events if e["name"] == "error"]
    assert len(errors) == 1 and errors[0]["run"] == 1 and errors[0]["reason"] == reason
    assert evidence in errors[0]["stderr_tail"]
    assert result.trace.footer["runs_completed"] == 2 and result.trace.footer["runs_failed"] == 1


def _assert_nothing_left(device: Device) -> None:
    assert leftover_processes(device, "edgekit_agent") == []
    assert leftover_processes(device, "edgekit_runner") == []


@pytest.mark.parametrize("kind", ["board", "phone"])
def test_timeout_kills_the_agent_and_keeps_the_partial_trace(kind: str, request: pytest.FixtureRequest,
                                                             tiny_onnx: Path) -> None:
    device: Device = request.getfixturevalue(f"{kind}_dev")
    workdir = BOARD_WORKDIR if kind == "board" else PHONE_WORKDIR
    if kind == "board":  # the Python agent's test hook hangs the first run
        hang = _request(tiny_onnx, runs=2, timeout_s=12.0, agent_args=("--fail-run", "0", "--fail-mode", "hang"))
    else:  # the phone has no Python: the native runner is given far more work than the time allowed
        request.getfixturevalue("native_builds")
        hang = _request(tiny_onnx, runs=5000, gen_len=120, timeout_s=12.0, runner="native")
    with pytest.raises(ProfileTimeout) as caught:
        profile_on(device, hang, workdir=workdir, python=DEVICE_PYTHON, device_class=kind)
    assert caught.value.leftovers == []
    _assert_nothing_left(device)
    # What the agent wrote before it was killed came back, has no footer, and is rejected and kept aside.
    partial = caught.value.trace_dir / "trace.jsonl"
    assert partial.is_file()
    with pytest.raises(TraceError, match="truncated") as rejected:
        load_trace(partial)
    assert rejected.value.kept_at is not None and rejected.value.kept_at.is_file() and not partial.exists()


@pytest.mark.parametrize("artifact_fixture", ["tiny_onnx", "tiny_pte"])
def test_missing_runtime_is_reported_before_anything_runs(board_dev: Device, artifact_fixture: str,
                                                          request: pytest.FixtureRequest) -> None:
    artifact: Path = request.getfixturevalue(artifact_fixture)
    system_python = "/usr/bin/python3"
    if not Path(system_python).exists():
        pytest.fail(f"{system_python} (a Python without the runtimes) is needed for this test")
    workdir = f"{BOARD_WORKDIR}/no-runtime-{artifact_fixture}"
    runtime = "onnxruntime-genai" if artifact_fixture == "tiny_onnx" else "executorch"
    with pytest.raises(RuntimeMissing, match=runtime):
        profile_on(board_dev, _request(artifact), workdir=workdir, python=system_python, device_class="board")
    listing = board_dev.run(["ls", workdir], timeout_s=30).text().split()
    assert "artifacts" not in listing and "runs" not in listing


def test_truncated_trace_is_rejected_and_kept(board_dev: Device, tiny_onnx: Path, tmp_path: Path) -> None:
    result = profile_on(board_dev, _request(tiny_onnx, runs=1), workdir=BOARD_WORKDIR, python=DEVICE_PYTHON,
                        device_class="board")
    text = (result.trace_dir / "trace.jsonl").read_text()
    cut = tmp_path / "trace.jsonl"
    cut.write_text(text[: len(text) * 2 // 3])  # mid-line, no footer
    with pytest.raises(TraceError, match="line|truncated"):
        load_trace(cut)
    assert not cut.exists() and (tmp_path / "trace.jsonl.rejected").read_text() == text[: len(text) * 2 // 3]


def test_device_lost_mid_run_is_retried_and_the_partial_attempt_kept(make_board: BoardFactory,
                                                                     tiny_onnx: Path) -> None:
    board = make_board("pi-drop")
    device = board_device(board).connect()
    runs_root = board.state_dir / "rootfs" / BOARD_WORKDIR.lstrip("/") / "runs"
    killed = threading.Event()

    def drop_when_running() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for trace in runs_root.glob("*/attempt-1/trace.jsonl"):
                if '"run_start"' in trace.read_text(errors="replace"):
                    board.process.kill()  # the board loses power mid-run ...
                    killed.set()
                    board.process.start()  # ... and comes back
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=drop_when_running, daemon=True)
    watcher.start()
    try:
        request = _request(tiny_onnx, runs=30, gen_len=64, retries=1)
        result = profile_on(device, request, workdir=BOARD_WORKDIR, python=DEVICE_PYTHON, device_class="board",
                            reopen=lambda: board_device(board).connect())
    finally:
        watcher.join(timeout=60)
        device.close()
    assert killed.is_set()
    assert result.attempts == 2 and all(r.ok for r in result.metrics.runs)
    partial = result.trace_dir / "attempt-1"
    assert (partial / "PARTIAL.json").is_file()
    if (partial / "trace.jsonl").exists():
        assert '"footer"' not in (partial / "trace.jsonl").read_text()
    shutil.rmtree(partial)


def test_artifact_the_runtime_cannot_load_is_reported(board_dev: Device, tiny_onnx: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_onnx, broken)
    (broken / "model.onnx").write_bytes(b"this is not an ONNX model")
    with pytest.raises(RunnerFailed, match="could not run the artifact \\(runtime-error\\)") as caught:
        profile_on(board_dev, _request(broken), workdir=BOARD_WORKDIR, python=DEVICE_PYTHON, device_class="board")
    assert caught.value.reason == "runtime-error" and not caught.value.retryable
    trace = load_trace(caught.value.trace_dir / "trace.jsonl")
    error = next(e for e in trace.events if e["name"] == "error")
    assert error["run"] == -1 and "model.onnx" in error["stderr_tail"] + error["message"]
    _assert_nothing_left(board_dev)


def test_a_drop_while_the_results_come_back_is_a_second_pull_not_a_lost_run(make_board: BoardFactory,
                                                                            tiny_onnx: Path) -> None:
    # The run finishes; the board loses power just as the host starts pulling its trace, and comes back.
    # The trace is still on the board: the host reconnects and pulls again (before: "no trace", permanent).
    board = make_board("pi-pull")
    device = board_device(board).connect()
    real_pull = device.pull
    dropped = threading.Event()

    def pull_after_a_drop(remote: str, local: str, **kwargs: object) -> None:
        if remote.endswith("/trace.jsonl") and not dropped.is_set():
            dropped.set()
            board.process.kill()
        real_pull(remote, local, **kwargs)  # type: ignore[arg-type]

    device.pull = pull_after_a_drop  # type: ignore[method-assign]

    def reopen() -> Device:
        board.process.start()  # (a no-op once it runs)
        return board_device(board).connect()

    try:
        result = profile_on(device, _request(tiny_onnx, retries=1), workdir=BOARD_WORKDIR, python=DEVICE_PYTHON,
                            device_class="board", reopen=reopen)
    finally:
        device.close()
    assert dropped.is_set()
    assert result.attempts == 1 and len(result.metrics.runs) == WORKLOAD["runs"]
    assert all(r.ok for r in result.metrics.runs)
