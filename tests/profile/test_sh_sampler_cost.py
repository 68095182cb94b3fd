"""What the phone's sh agent spends on PSS: /proc/PID/smaps_rollup walks every page of the runner, so once the
runner is past 32 MB resident the agent reads it at most every pss_ms and never more often than 200x that
read's own CPU time (under 0.5% of a core, the Python agent's rule), whatever pss_ms asks.

What a walk costs depends on the kernel and on how the runner's memory is paged (a 48 MB buffer in 2 MB
pages is 24 entries to walk, in 4 kB pages 12288), so the test measures it on this host, on a process like
the phone's, and holds the agent to the spacing that cost implies."""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.phone import Phone
from tests.profile.test_run_hostile_sysfs import AGENT, FAKE_RUNNER_HEAD

ON_PHONE = "/data/local/tmp/pss-cost"

# The fake runner, then a 48 MB process for about three seconds: dd's buffer, filled from /dev/zero over and
# over, is resident (the phone has only busybox).
BIG_DD = "dd if=/dev/zero of=/dev/null bs=48M count=1200"
BIG_RUNNER = FAKE_RUNNER_HEAD + f"exec {BIG_DD} 2>/dev/null\n"
SAMPLE_MS = 20


@pytest.fixture
def pushed(phone: Phone, tmp_path: Path) -> Phone:
    runner = tmp_path / "runner"
    runner.write_text(BIG_RUNNER)
    (tmp_path / "ids").write_text("1\n")
    (tmp_path / "m.pte").write_bytes(b"not read by the fake runner")
    for local, name in ((AGENT, "agent.sh"), (runner, "runner"), (tmp_path / "ids", "ids"),
                        (tmp_path / "m.pte", "m.pte")):  # fmt: skip
        phone.adb("push", str(local), f"{ON_PHONE}/{name}", check=True)
    phone.adb("shell", f"chmod 755 {ON_PHONE}/runner", check=True)
    return phone


def _samples(phone: Phone, tmp_path: Path, pss_ms: int) -> list[dict]:
    out = f"{ON_PHONE}/out{pss_ms}"
    phone.adb("shell", f"sh {ON_PHONE}/agent.sh --runner {ON_PHONE}/runner --lib-dir {ON_PHONE} "
              f"--model {ON_PHONE}/m.pte --runtime executorch --model-id m --recipe r --artifact-sha256 0 "
              f"--out {out} --prompt-len 1 "
              f"--prompt-ids {ON_PHONE}/ids --gen-len 1 --warmup 0 --runs 1 --threads 1 --sample-ms {SAMPLE_MS} "
              f"--pss-ms {pss_ms} --baseline-ms 100", timeout_s=60)  # fmt: skip
    pulled = tmp_path / f"trace{pss_ms}.jsonl"
    phone.adb("pull", f"{out}/trace.jsonl", str(pulled), check=True)
    lines = [json.loads(line) for line in pulled.read_text().splitlines()]
    return [s for s in lines if s["type"] == "sample" and (s["rss_kb"] or 0) >= 32768]


def test_pss_is_read_at_most_every_pss_ms_and_within_its_cpu_budget(pushed: Phone, tmp_path: Path) -> None:
    floor = _samples(pushed, tmp_path, 100)
    read = [s["ts_boot_ns"] for s in floor if s["pss_kb"] is not None]
    assert len(floor) >= 40 and len(read) >= 2, (len(floor), len(read))  # two or more: a gap to check
    assert all(b - a >= 90_000_000 for a, b in itertools.pairwise(read)), "PSS more often than pss_ms"
    assert all(s["pss_kb"] > 32768 * 0.9 for s in floor if s["pss_kb"] is not None)
    # No floor: the read's own cost spaces them. The shell's read costs at least the kernel's walk, so reads
    # come at least 200x the walk's CPU time apart (half that, for the walk's spread, less the agent's clock
    # step of 10 ms), and no more often than every tick.
    gap_ns = max(SAMPLE_MS * 1_000_000, 200 * _walk_cpu_ns() // 2) - 10_000_000
    budget = _samples(pushed, tmp_path, 0)
    read = [s["ts_boot_ns"] for s in budget if s["pss_kb"] is not None]
    assert len(budget) >= 40 and len(read) >= 2, (len(budget), len(read))
    gaps = [b - a for a, b in itertools.pairwise(read)]
    assert min(gaps) >= gap_ns, (gaps, gap_ns)


def _walk_cpu_ns() -> int:
    """The CPU time of one read of smaps_rollup of a process like the phone's runner, on this host: the median
    of 30 reads of a host dd with the same buffer, once it is resident."""
    dd = subprocess.Popen(BIG_DD.split(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rollup = Path(f"/proc/{dd.pid}/smaps_rollup")
        deadline = time.monotonic() + 10
        while int(Path(f"/proc/{dd.pid}/statm").read_text().split()[1]) * 4 < 48 * 1024 * 0.9:
            assert time.monotonic() < deadline, "the host dd never became resident"
            time.sleep(0.05)
        costs = []
        for _ in range(30):
            t0 = time.thread_time_ns()
            rollup.read_bytes()
            costs.append(time.thread_time_ns() - t0)
        return int(statistics.median(costs))
    finally:
        dd.kill()
        dd.wait()
