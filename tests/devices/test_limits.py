"""What a hostile device sends is bounded on the host (``edgekit.limits``).

The adb side runs against ``hostile_adb``: a fake adb server on loopback whose device announces 4 GB
packets, streams without end or goes silent. Every test checks the error names the limit, and that
nothing half-pulled is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgekit import limits
from edgekit.devices.adb import AdbDevice, parse_info
from edgekit.devices.local import LocalDevice
from edgekit.errors import CommandTimeout, ConfigError, DeviceUnreachable, LimitExceeded, TraceError
from edgekit.profile.remote import pull_files
from edgekit.profile.trace import read_bytes
from tests.devices import hostile_adb
from tests.devices.hostile_adb import Behaviour, HostileAdbServer
from tests.store.cli import assert_one_line_error, edgekit

REPO = Path(__file__).resolve().parents[2]
# Streams in these tests end there, so that a client without limits fails in bounded time and memory.
_SMALL_STREAM_BYTES = 8 << 20


def _device(server: HostileAdbServer) -> AdbDevice:
    return AdbDevice(hostile_adb.SERIAL, server_port=server.port, online_timeout_s=5)


def test_limits_are_overridden_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_LIMIT_PULL_FILE_BYTES", "1234")
    monkeypatch.setenv("EDGEKIT_LIMIT_STALL_S", "2.5")
    caps = limits.current()
    assert (caps.pull_file_bytes, caps.stall_s) == (1234, 2.5)
    assert caps.describe("pull_file_bytes") == "pull_file_bytes = 1234 bytes (EDGEKIT_LIMIT_PULL_FILE_BYTES changes it)"
    monkeypatch.setenv("EDGEKIT_LIMIT_LINE_BYTES", "-1")
    with pytest.raises(ConfigError, match="EDGEKIT_LIMIT_LINE_BYTES='-1' must be positive"):
        limits.current()
    monkeypatch.setenv("EDGEKIT_LIMIT_LINE_BYTES", "lots")
    with pytest.raises(ConfigError, match="EDGEKIT_LIMIT_LINE_BYTES='lots' is not a number"):
        limits.current()


@pytest.mark.parametrize(("kind", "limit"), [
    (hostile_adb.HUGE_SYNC_PACKET, "sync_packet_bytes"),
    (hostile_adb.HUGE_FAIL, "sync_packet_bytes"),
    (hostile_adb.ENDLESS_FILE, "pull_file_bytes"),
])
def test_pull_of_a_hostile_file_stops_at_its_limit(kind: str, limit: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_LIMIT_PULL_FILE_BYTES", str(1 << 20))
    with (HostileAdbServer(Behaviour(kind, stream_bytes=_SMALL_STREAM_BYTES)) as server,
          pytest.raises(LimitExceeded, match=f"over the limit {limit} = ")):
        _device(server).pull("/data/local/tmp/trace.jsonl", str(tmp_path / "trace.jsonl"))
    assert list(tmp_path.iterdir()) == []  # neither the file nor its partial copy


@pytest.mark.parametrize(("kind", "use_v2", "limit"), [
    (hostile_adb.HUGE_SHELL_PACKET, True, "shell_packet_bytes"),
    (hostile_adb.SHELL_FLOOD, True, "command_output_bytes"),
    (hostile_adb.SHELL_V1_FLOOD, False, "command_output_bytes"),
])
def test_command_output_stops_at_its_limit(kind: str, use_v2: bool, limit: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_LIMIT_COMMAND_OUTPUT_BYTES", str(1 << 20))
    with HostileAdbServer(Behaviour(kind, stream_bytes=_SMALL_STREAM_BYTES)) as server:
        device = _device(server)
        assert ("shell_v2" in device.features()) is use_v2
        with pytest.raises(LimitExceeded, match=f"over the limit {limit} = "):
            device.run(["cat", "/dev/zero"], timeout_s=30)


def test_stalled_device_is_given_up_within_the_stall_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device accepts the pull and then sends nothing and does not close."""
    monkeypatch.setenv("EDGEKIT_LIMIT_STALL_S", "1")
    with HostileAdbServer(Behaviour(hostile_adb.SILENT)) as server:
        device = _device(server)
        start = time.monotonic()
        with pytest.raises(DeviceUnreachable, match="sent nothing and did not close.*stall_s = 1 s"):
            device.pull("/data/local/tmp/trace.jsonl", str(tmp_path / "trace.jsonl"))
        assert time.monotonic() - start < 10
        # A command is bounded by its own timeout.
        start = time.monotonic()
        with pytest.raises(CommandTimeout):
            device.run(["true"], timeout_s=1)
        assert time.monotonic() - start < 10


_PULL_IN_A_CHILD = textwrap.dedent("""
    import json, sys
    from edgekit.devices.adb import AdbDevice, parse_info
    from edgekit.errors import EdgekitError
    error = None
    try:
        AdbDevice("hostile-1", server_port=int(sys.argv[1]), online_timeout_s=5).pull(
            "/data/local/tmp/trace.jsonl", sys.argv[2])
    except EdgekitError as exc:
        error = f"{type(exc).__name__}: {exc}"
    # VmHWM is this program's own peak (getrusage's ru_maxrss keeps the forking parent's across exec).
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(json.dumps({"error": error, "peak_rss_kb": int(status["VmHWM"].split()[0])}))
""")


@pytest.mark.parametrize(("kind", "limit"), [
    (hostile_adb.HUGE_SYNC_PACKET, "sync_packet_bytes"),  # one DATA packet that says it is 4 GB long
    (hostile_adb.ENDLESS_FILE, "pull_file_bytes"),  # 4 GB of ordinary 64 KiB DATA packets
])
def test_pull_answered_with_4_gb_keeps_host_memory_bounded(kind: str, limit: str, tmp_path: Path) -> None:
    """A device answers a pull with 4 GB; the edgekit process (a child, measured alone) stays far under
    500 MB peak RSS and its error names the limit. The file limit is lowered so the test writes little."""
    env = dict(os.environ, PYTHONPATH=str(REPO), EDGEKIT_LIMIT_PULL_FILE_BYTES=str(16 << 20))
    with HostileAdbServer(Behaviour(kind, stream_bytes=4 << 30)) as server:
        child = subprocess.run([sys.executable, "-c", _PULL_IN_A_CHILD, str(server.port), str(tmp_path / "t")],
                               capture_output=True, text=True, timeout=120, env=env, check=False)
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout)
    assert report["error"] is not None and report["error"].startswith("LimitExceeded: ")
    assert f"over the limit {limit} = " in report["error"]
    assert report["peak_rss_kb"] < 500 * 1024, report
    assert list(tmp_path.iterdir()) == []


def test_trace_read_back_over_its_limit_is_refused_unread(tmp_path: Path) -> None:
    """A 4 GB (sparse) trace is refused from its size alone, with the limit named."""
    trace = tmp_path / "trace.jsonl"
    with trace.open("wb") as fh:
        fh.truncate(4 << 30)
    with pytest.raises(TraceError, match="over the limit trace_file_bytes = "):
        read_bytes(trace)


def test_files_of_one_run_share_the_run_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = tmp_path / "device"
    remote.mkdir()
    for name, size in (("trace.jsonl", 600), ("summary.json", 600), ("runner.stderr", 10)):
        (remote / name).write_bytes(b"x" * size)
    monkeypatch.setenv("EDGEKIT_LIMIT_PULL_RUN_BYTES", "1000")
    with pytest.raises(LimitExceeded, match="over the limit pull_run_bytes = 1000 bytes"):
        pull_files(LocalDevice(), str(remote), tmp_path / "host")
    assert sorted(p.name for p in (tmp_path / "host").iterdir()) == ["trace.jsonl"]



def test_cli_names_the_limit_in_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trace over its limit, and a limit set to nonsense, are each one line and exit code 2."""
    trace = tmp_path / "trace.jsonl"
    trace.write_bytes(b"{}\n" * 1000)
    monkeypatch.setenv("EDGEKIT_LIMIT_TRACE_FILE_BYTES", "1000")
    assert_one_line_error(edgekit("ingest", str(trace)), "over the limit trace_file_bytes = 1000 bytes")
    monkeypatch.setenv("EDGEKIT_LIMIT_TRACE_FILE_BYTES", "lots")
    assert_one_line_error(edgekit("ingest", str(trace)), "EDGEKIT_LIMIT_TRACE_FILE_BYTES='lots' is not a number")
    assert trace.read_bytes() == b"{}\n" * 1000


def test_device_facts_that_are_not_finite_numbers_are_unknown() -> None:
    """A phone whose info script prints nan/inf (an odd kernel, a hostile device) gets unknowns, not a crash."""
    info = parse_info("odd", {"df": "/dev/x 100 50 inf /data", "cores": "nan", "capacity": "1e999",
                              "battery_temp": "-inf", "zone_temp": "nan", "mem": "MemTotal: 1000 kB"})
    assert (info.free_bytes, info.cores, info.battery_pct, info.temperature_c) == (None, None, None, None)
    assert info.ram_bytes == 1000 * 1024
