"""A connection that drops mid-profile while the device stays up (and has not noticed the drop): the retry
starts only once the lost attempt's agent is gone from the device, so its numbers are those of one
workload."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

from edgekit.devices.ssh import SshDevice
from edgekit.profile.run import profile_on
from tests.fixtures.board import BoardFactory
from tests.profile.conftest import DEVICE_PYTHON, board_device, make_request

BOARD_WORKDIR = "/home/edgekit"
# Long enough (seconds) that the lost attempt's agent, left alone, is still running when the retry starts.
WORKLOAD = {"prompt_len": 8, "gen_len": 64, "runs": 120, "warmup": 1, "threads": 1, "sample_ms": 20,
            "baseline_s": 0.2, "cooldown_s": 0.0, "runner": "python", "timeout_s": 240.0}


def _agent_processes(attempt: str) -> list[psutil.Process]:
    """The processes of one attempt's agent on the board (its processes are the host's too; the host's own
    ``ssh`` client carries the same command line and is left out)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        line = " ".join(argv)
        if f"/{attempt} " in f"{line} " and "edgekit_agent" in line and not argv[0].endswith("ssh"):
            found.append(proc)
    return found


def _agents_of(attempt: str) -> list[str]:
    return [" ".join(p.cmdline()) for p in _agent_processes(attempt) if p.is_running()]


def _freeze_the_boards_end(attempt: str) -> psutil.Process:
    """Stop the board's sshd process that serves the agent's session: the link is dead but the board has
    not noticed yet (as when a network path fails silently: sshd learns of it only much later)."""
    supervisor = next(p for p in _agent_processes(attempt) if "--runner-child" not in p.cmdline())
    session = supervisor.parent()
    while session is not None and "sshd" not in session.name():
        session = session.parent()
    assert session is not None, "the agent runs under no sshd session"
    session.suspend()
    return session


def _drop_connection(device: SshDevice) -> None:
    """Kill the host side of the device's shared SSH connection (the board itself stays up)."""
    check = subprocess.run([*device._base, "-O", "check", "--", device.host], capture_output=True, text=True,
                           timeout=10, check=False)
    match = re.search(r"pid=(\d+)", check.stderr + check.stdout)
    assert match, f"no SSH master connection to drop: {check.stderr}"
    psutil.Process(int(match.group(1))).send_signal(signal.SIGKILL)


def test_a_connection_dropped_mid_run_leaves_no_agent_beside_the_retry(make_board: BoardFactory,
                                                                         tiny_onnx: Path) -> None:
    board = make_board("pi-link")
    device = board_device(board).connect()
    runs_root = board.state_dir / "rootfs" / BOARD_WORKDIR.lstrip("/") / "runs"
    dropped = threading.Event()
    stop = threading.Event()
    beside: list[str] = []  # attempt-1 agents seen while attempt 2 existed
    frozen: list[psutil.Process] = []

    def drop_then_watch() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not stop.is_set():
            if not dropped.is_set():
                for trace in runs_root.glob("*/attempt-1/trace.jsonl"):
                    if '"run_start"' in trace.read_text(errors="replace"):
                        frozen.append(_freeze_the_boards_end("attempt-1"))
                        _drop_connection(device)
                        dropped.set()
            elif any(runs_root.glob("*/attempt-2")):
                beside.extend(_agents_of("attempt-1"))
            time.sleep(0.02)

    failures: list[BaseException] = []

    def watch() -> None:
        try:
            drop_then_watch()
        except BaseException as exc:  # reported by the test, not lost with the thread
            failures.append(exc)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        request = make_request(tiny_onnx, WORKLOAD, retries=1)
        result = profile_on(device, request, workdir=BOARD_WORKDIR, python=DEVICE_PYTHON, device_class="board",
                            reopen=lambda: board_device(board).connect())
    finally:
        stop.set()
        watcher.join(timeout=30)
        device.close()
        for session in frozen:  # the board's sshd notices the closed connection now and ends the session
            with contextlib.suppress(psutil.Error):
                session.resume()
    assert not failures, failures
    assert dropped.is_set()
    assert result.attempts == 2 and all(r.ok for r in result.metrics.runs)
    assert beside == [], f"the lost attempt's agent ran beside the retry: {beside[:2]}"
    assert _agents_of("attempt-1") == [] and _agents_of("attempt-2") == []
