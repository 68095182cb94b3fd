"""edgekit_sampler, the sh agent's sampler of the run (android_harness/src/sampler.cpp), run on this machine
against files written here: it reads every number as the agent's shell does (garbage is null), spaces PSS reads
as the agent does, stops by itself once the runner is gone (a zombie included), and refuses bad flags with one
line and exit code 2."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.native.conftest import NativeRunner

# A process with 48 MB resident (past the 32 MB under which PSS is read every tick) for a while.
BIG = "import time; x = bytearray(b'1' * (48 << 20)); time.sleep({s})"


@pytest.fixture
def sampler(native_runner: NativeRunner) -> Path:
    path = native_runner.binary.with_name("edgekit_sampler")
    assert path.is_file(), f"{path} not built: android_harness/build_host.sh builds it beside the runner"
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_numbers_are_read_as_the_shell_reads_them(sampler: Path, tmp_path: Path) -> None:
    files = {"freq_ok": "1800000\n", "freq_unit": "1800000 MHz\n", "zone_pad": "  42000 \n", "zone_dash": "-\n",
             "zone_neg": "-5000\nmore\n", "zone_huge": "9" * 30 + "\n", "zone_lead": "007\n", "volt": "4000000\n",
             "cur": "-500000\n"}  # fmt: skip
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    out = tmp_path / "s.jsonl"
    zones = [f"z_{z}={tmp_path / f'zone_{z}'}" for z in ("pad", "dash", "neg", "huge", "lead")]
    proc = subprocess.run([str(sampler), "--pid", str(child.pid), "--out", str(out), "--sample-ms", "50",
                           "--freq", str(tmp_path / "freq_ok"), "--freq", str(tmp_path / "freq_unit"),
                           "--freq", str(tmp_path / "missing"),
                           *itertools.chain.from_iterable(("--thermal", zone) for zone in zones),
                           "--voltage", str(tmp_path / "volt"), "--current", str(tmp_path / "cur"),
                           "--current-sign", "-1"], capture_output=True, text=True, timeout=30)  # fmt: skip
    child.wait()
    assert proc.returncode == 0, proc.stderr
    samples = _lines(out)
    assert len(samples) >= 3
    for s in samples:
        assert s["type"] == "sample" and isinstance(s["ts_ns"], int) and s["rss_kb"] > 0
        assert s["cpu_freq_khz"] == [1800000, None, None]
        assert s["thermal_mc"] == {"z_pad": 42000, "z_dash": None, "z_neg": -5000, "z_huge": None, "z_lead": 7}
        # mV x uA / 1000, the sign making consumption positive while discharging
        assert (s["voltage_uv"], s["current_ua"], s["power_uw"], s["energy_uj"]) == (4000000, -500000, 2000000, None)
    stamps = [s["ts_ns"] for s in samples]
    assert all(40e6 <= b - a <= 200e6 for a, b in itertools.pairwise(stamps)), "not every --sample-ms"

    (tmp_path / "cur").write_text("n/a\n")  # a gauge that stops answering: no power, the voltage still read
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    subprocess.run([str(sampler), "--pid", str(child.pid), "--out", str(out), "--sample-ms", "50", "--voltage",
                    str(tmp_path / "volt"), "--current", str(tmp_path / "cur")], check=True, timeout=30)  # fmt: skip
    child.wait()
    assert all((s["voltage_uv"], s["current_ua"], s["power_uw"]) == (4000000, None, None) for s in _lines(out))


def test_pss_is_spaced_and_the_sampler_stops_with_the_runner(sampler: Path, tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", BIG.format(s=1.5)])
    out = tmp_path / "s.jsonl"
    run = subprocess.Popen([str(sampler), "--pid", str(child.pid), "--out", str(out), "--sample-ms", "20",
                            "--pss-ms", "100"])  # fmt: skip
    # Not reaped until the sampler is done: it must stop on the zombie too, whose statm is all zeros.
    assert run.wait(timeout=30) == 0
    assert child.wait() == 0
    big = [s for s in _lines(out) if s["rss_kb"] >= 32768]
    read = [s["ts_ns"] for s in big if s["pss_kb"] is not None]
    assert len(big) >= 30 and len(read) >= 2, (len(big), len(read))  # a walk of several ms spaces them 1 s+
    assert all(b - a >= 100_000_000 for a, b in itertools.pairwise(read)), "PSS more often than --pss-ms"
    assert all(s["pss_kb"] > 32768 * 0.9 and s["hwm_kb"] >= s["rss_kb"] for s in big if s["pss_kb"] is not None)
    assert all(s["hwm_kb"] is None for s in big if s["pss_kb"] is None)


def test_sigterm_leaves_whole_lines(sampler: Path, tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    out = tmp_path / "s.jsonl"
    try:
        run = subprocess.Popen([str(sampler), "--pid", str(child.pid), "--out", str(out), "--sample-ms", "10"])
        time.sleep(0.3)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=5) == 0
    finally:
        child.kill()
        child.wait()
    text = out.read_text()
    assert text.endswith("}\n") and len(_lines(out)) >= 5


@pytest.mark.parametrize(("flags", "problem"), [
    ([], "--pid is required"),
    (["--pid", "1"], "--out is required"),
    (["--pid", "x", "--out", "o"], "--pid must be an integer, got 'x'"),
    (["--pid", "1", "--out", "o", "--sample-ms", "5"], "--sample-ms must be 10..100"),
    (["--pid", "1", "--out", "o", "--sample-ms", "20", "--thermal", 'gpu"}=/x'], "--thermal must be LABEL=PATH"),
    (["--pid", "1", "--out", "o", "--sample-ms", "20", "--current-sign", "2"], "--current-sign must be 1 or -1"),
    (["--pid", "1", "--out", "o", "--sample-ms", "20", "--voltage", "/v"], "--voltage and --current go together"),
    (["--pid", "1", "--out", "o", "--bogus", "1"], "unknown option '--bogus'"),
])  # fmt: skip
def test_bad_flags_are_refused(sampler: Path, tmp_path: Path, flags: list[str], problem: str) -> None:
    proc = subprocess.run([str(sampler), *flags], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("edgekit_sampler: ") and problem in proc.stderr
    assert not (tmp_path / "o").exists()
