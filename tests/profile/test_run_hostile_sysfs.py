"""The phone's sh agent writes only JSON it can vouch for: sysfs and /proc text that is not a number
(a vendor's odd cpufreq or thermal file, a CPU list instead of a range) becomes null, strings are
escaped, and one odd file never costs the whole trace; whether the shell samples the run or
edgekit_sampler beside the runner does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.profile import native
from tests.fixtures.phone import Phone

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "device_agents" / "android" / "agent.sh"
ON_PHONE = "/data/local/tmp/hostile"

# A runner that speaks only what the agent asks of it (version, clock sync, a run that writes its trace
# file): the agent's sampling is under test, not a runtime.
FAKE_RUNNER_HEAD = r"""#!/system/bin/sh
case "$1" in
  --version) echo "fake-runner 1"; exit 0 ;;
  --clock-sync)
    read -r up rest < /proc/uptime
    echo "{\"type\":\"event\",\"name\":\"clock_sync\",\"ts_ns\":${up%.*}${up#*.}0000000,\"run\":-1,\"warmup\":false}"
    exit 0 ;;
esac
while [ $# -gt 0 ]; do [ "$1" = --trace ] && trace=$2; shift; done
: > "$trace"
"""
FAKE_RUNNER = FAKE_RUNNER_HEAD + "sleep 0.3\n"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("sampler", ["sh", "native"])
def test_hostile_sysfs_text_never_breaks_the_trace(phone: Phone, tmp_path: Path, sampler: str) -> None:
    sys_dir = phone.state_dir / "sys"
    thermal = sys_dir / "class" / "thermal"
    _write(thermal / "thermal_zone5" / "type", 'gpu"}\\')  # a name that is not a plain word
    _write(thermal / "thermal_zone5" / "temp", '41"}, "x": [\n')
    _write(thermal / "thermal_zone6" / "type", "skin\n")
    _write(thermal / "thermal_zone6" / "temp", "-\n")
    _write(sys_dir / "devices" / "system" / "cpu" / "cpu9" / "cpufreq" / "scaling_cur_freq", "1800000 MHz\n")
    _write(sys_dir / "devices" / "system" / "cpu" / "present", "0-3,5\n")
    runner = tmp_path / "runner"
    runner.write_text(FAKE_RUNNER)
    (tmp_path / "ids").write_text("1\n")
    (tmp_path / "m.pte").write_bytes(b"not read by the fake runner")
    phone.adb("shell", f"rm -rf {ON_PHONE}; mkdir -p {ON_PHONE}/out", check=True)
    pushed = [(AGENT, "agent.sh"), (runner, "runner"), (tmp_path / "ids", "ids"), (tmp_path / "m.pte", "m.pte")]
    if sampler == "native":  # the agent runs the sampler it finds beside the runner
        built = native.build_dir("x86_64") / "bin" / native.SAMPLER_NAME
        assert built.is_file(), f"{built} not built: android_harness/build_host.sh builds it"
        pushed.append((built, native.SAMPLER_NAME))
    for local, name in pushed:
        phone.adb("push", str(local), f"{ON_PHONE}/{name}", check=True)
    done = phone.adb("shell", f"chmod 755 {ON_PHONE}/runner {ON_PHONE}/{native.SAMPLER_NAME} 2>/dev/null; "
                     f"sh {ON_PHONE}/agent.sh --runner {ON_PHONE}/runner "
                     f"--lib-dir {ON_PHONE} --model {ON_PHONE}/m.pte --runtime executorch --model-id m --recipe r "
                     f"--artifact-sha256 0 --out {ON_PHONE}/out --prompt-len 1 --prompt-ids {ON_PHONE}/ids "
                     "--gen-len 1 --warmup 0 --runs 1 --threads 1 --sample-ms 20 --baseline-ms 200", timeout_s=60)
    assert b"trace.jsonl" in phone.adb("shell", f"ls {ON_PHONE}/out").stdout, (done.stdout, done.stderr)
    pulled = tmp_path / "trace.jsonl"
    phone.adb("pull", f"{ON_PHONE}/out/trace.jsonl", str(pulled), check=True)
    lines = pulled.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON: nothing was lost
    header = records[0]
    assert header["type"] == "header", done.stderr
    assert header["agent"]["sampler"] == sampler
    assert header["device"]["cores"] >= 1
    samples = [r for r in records if r["type"] == "sample"]
    assert samples, lines
    # the run's samples on the runner's clock are edgekit_sampler's; the shell has only the boot clock
    assert any("ts_boot_ns" not in r and r["rss_kb"] for r in samples) == (sampler == "native")
    for sample in samples:
        assert sample["cpu_freq_khz"][-1] is None  # cpu9's "1800000 MHz"
        assert all(isinstance(f, int) for f in sample["cpu_freq_khz"][:-1])
        zones = sample["thermal_mc"]
        assert zones["thermal_zone5"] is None and zones["skin"] is None  # odd name replaced, odd values null
        assert isinstance(zones["cpu-thermal"], int)
