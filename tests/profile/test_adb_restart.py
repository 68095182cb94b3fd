"""The host's adb server restarted mid-profile (a user's `adb kill-server`, an SDK update, another tool):
the phone and its agent stay up, the host loses every connection. The profile reconnects through a new
server, stops the lost attempt's agent before the retry, and its numbers come from one workload."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edgekit.profile.run import profile_on
from tests.fixtures.phone import Phone
from tests.profile.conftest import PHONE_WORKDIR, make_request, phone_device

# Long enough (seconds) that the lost attempt's agent, left alone, would still run when the retry starts.
WORKLOAD = {"prompt_len": 8, "gen_len": 512, "runs": 60, "warmup": 1, "threads": 1, "sample_ms": 20,
            "baseline_s": 0.2, "cooldown_s": 0.0, "runner": "native", "timeout_s": 240.0}


def _agents(phone: Phone, attempt: str) -> list[str]:
    """Command lines of the phone's processes that belong to ``attempt`` (read from the phone's own ps)."""
    out = phone.adb("shell", "ps", "-A", "-o", "pid,args", timeout_s=20).stdout.decode(errors="replace")
    return [line for line in out.splitlines() if f"/{attempt}/" in line and "agent.sh" in line]


def test_adb_server_restarted_mid_profile_is_retried_without_a_stale_agent(phone: Phone, tiny_onnx_long: Path,
                                                                           native_builds: object) -> None:
    runs_root = phone.state_dir / "data" / PHONE_WORKDIR.removeprefix("/data/") / "runs"
    restarted = threading.Event()
    beside: list[str] = []  # attempt-1 agents seen while attempt 2 was running

    def restart_then_watch() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not restarted.is_set():
            for trace in runs_root.glob("*/attempt-1/runner.jsonl"):
                if '"run_start"' in trace.read_text(errors="replace"):
                    phone.server.adb("kill-server", timeout_s=30)  # every host connection goes
                    restarted.set()
                    break
            time.sleep(0.05)
        while time.monotonic() < deadline:  # then: no attempt-1 agent while attempt 2 runs
            attempt2 = list(runs_root.glob("*/attempt-2/trace.jsonl"))
            if attempt2 and '"footer"' in attempt2[0].read_text(errors="replace"):
                return
            if attempt2:
                beside.extend(_agents(phone, "attempt-1"))
            time.sleep(0.2)

    watcher = threading.Thread(target=restart_then_watch, daemon=True)
    watcher.start()
    device = phone_device(phone)
    try:
        request = make_request(tiny_onnx_long, WORKLOAD, retries=1)
        # The reconnect goes through whatever server answers on the port: AdbDevice starts one when none does.
        result = profile_on(device, request, workdir=PHONE_WORKDIR, device_class="phone",
                            reopen=lambda: phone_device(phone))
    finally:
        watcher.join(timeout=120)
        device.close()
        # the server the reconnect started has this process's HOME: put the session's own back on its port
        phone.server.adb("kill-server", timeout_s=30)
        phone.server.adb("start-server", timeout_s=30, check=True)
    assert restarted.is_set(), "the adb server was never killed mid-run"
    assert result.attempts == 2 and len(result.metrics.runs) == WORKLOAD["runs"]
    assert all(r.ok for r in result.metrics.runs)
    assert beside == [], f"the lost attempt's agent ran beside the retry: {beside}"
    assert _agents(phone, "attempt-1") == [] and _agents(phone, "attempt-2") == []
