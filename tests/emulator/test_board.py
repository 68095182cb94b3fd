"""The emulated board against the stock OpenSSH clients: commands, scp, identity, isolation, power."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from edgekit.emulator._board_files import _python_prefixes
from tests.fixtures.board import BoardFactory, BoardHandle


def _ssh(board: BoardHandle, *remote: str, timeout_s: float = 30) -> str:
    done = subprocess.run(board.ssh_argv(*remote), capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_stock_ssh_runs_commands_inside_the_board(shared_board: BoardHandle) -> None:
    assert "pi-shared" in _ssh(shared_board, "uname", "-a")
    assert _ssh(shared_board, "pwd").strip() == "/home/edgekit"
    model = _ssh(shared_board, "tr -d '\\0' < /sys/firmware/devicetree/base/model")
    assert model.startswith("Raspberry Pi 5")
    # Own pid namespace: sshd and this session only, not the host's processes.
    commands = _ssh(shared_board, "ps", "-eo", "comm=").split()
    assert "sshd" in commands and "pytest" not in commands and len(commands) < 10
    # Host binaries run, but the host system is read-only.
    failed = subprocess.run(shared_board.ssh_argv("touch", "/usr/edgekit-probe"),
                            capture_output=True, text=True)
    assert failed.returncode != 0 and "Read-only" in failed.stderr


@pytest.mark.parametrize("size_bytes", [1024, 50 * 1000 * 1000], ids=["1KB", "50MB"])
def test_scp_round_trip_keeps_content(shared_board: BoardHandle, tmp_path: Path, size_bytes: int) -> None:
    source = tmp_path / "payload.bin"
    with source.open("wb") as f:
        f.write(os.urandom(size_bytes))
    scp = ["scp", "-q", "-F", str(shared_board.ssh_config)]
    subprocess.run([*scp, str(source), f"{shared_board.alias}:payload.bin"], check=True, timeout=120)
    # The shell sees the file scp (SFTP protocol) wrote, at the same path.
    remote_sum = _ssh(shared_board, "sha256sum", "/home/edgekit/payload.bin").split()[0]
    back = tmp_path / "back.bin"
    subprocess.run([*scp, f"{shared_board.alias}:payload.bin", str(back)], check=True, timeout=120)
    assert _sha256(back) == _sha256(source) == remote_sum
    _ssh(shared_board, "rm", "/home/edgekit/payload.bin")


def test_identity_and_files_survive_stop_and_start(make_board: BoardFactory) -> None:
    board = make_board("pi-keep")
    host_key = board.process.known_hosts_line()
    _ssh(board, "echo kept > /home/edgekit/note.txt; echo gone > /tmp/scratch.txt")
    board.process.stop()
    board.process.start()
    assert board.process.known_hosts_line() == host_key
    # StrictHostKeyChecking=yes with the old known_hosts: same identity or this fails.
    assert _ssh(board, "cat", "/home/edgekit/note.txt") == "kept\n"
    # /tmp is emptied, like after a reboot; only mount points of the host Python may stand there (a
    # checkout under /tmp has its virtualenv bound in at the same path).
    python_mounts = {Path(p).relative_to("/tmp").parts[0] for p in _python_prefixes() if p.startswith("/tmp/")}
    assert set(_ssh(board, "ls", "/tmp").split()) == python_mounts


def test_two_boards_are_isolated(make_board: BoardFactory) -> None:
    a, b = make_board("pi-a"), make_board("pi-b")
    assert a.process.known_hosts_line().split()[-1] != b.process.known_hosts_line().split()[-1]
    _ssh(a, "echo only-a > /home/edgekit/secret.txt; echo a > /tmp/a.txt")
    assert "secret.txt" not in _ssh(b, "ls", "-a", "/home/edgekit")
    assert "a.txt" not in _ssh(b, "ls", "/tmp")
    assert not list(b.state_dir.rglob("secret.txt"))
    # b's client key does not open a: each board authorizes only its own client key.
    config = a.ssh_config.read_text().replace(str(a.process.client_key), str(b.process.client_key))
    b_key_config = a.ssh_config.with_name("a-with-b-key.ssh_config")
    b_key_config.write_text(config)
    refused = subprocess.run(["ssh", "-F", str(b_key_config), a.alias, "true"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_power_sensor_follows_cpu_load_and_truth_grows(shared_board: BoardHandle) -> None:
    truth = shared_board.process.truth_path
    energy_before_j = json.loads(truth.read_text())["energy_j"]
    script = (
        "p=/sys/class/hwmon/hwmon0/power1_input; idle=$(cat $p); "
        "(while :; do :; done) & busy=$!; sleep 0.6; load=0; "
        "for i in 1 2 3 4; do v=$(cat $p); [ $v -gt $load ] && load=$v; sleep 0.1; done; "
        "t=$(cat /sys/class/thermal/thermal_zone0/temp); kill $busy; echo $idle $load $t"
    )
    idle_uw, load_uw, temp_mc = (int(v) for v in _ssh(shared_board, script).split())
    assert 2_000_000 <= idle_uw <= 3_500_000
    # One busy core adds per_core_w (1.2 W); on a host shared with other work it may get half a core.
    assert load_uw > idle_uw + 400_000
    assert temp_mc > 38_000
    time.sleep(0.1)
    assert json.loads(truth.read_text())["energy_j"] > energy_before_j


@pytest.mark.parametrize("period_s", [0.01, 0.1])
def test_sampled_power_integrates_to_the_energy_counter(shared_board: BoardHandle, period_s: float) -> None:
    # An agent on the board samples power1_input every period_s for 3 s (with 1.2 s of load in the
    # middle) and integrates; the result must match the energy counter (= ground truth) within 3%.
    sampler = r"""
import json, subprocess, time
hw = "/sys/class/hwmon/hwmon0/"
def read(name):
    with open(hw + name) as f:
        return int(f.read())
e0, t0 = read("energy1_input"), time.monotonic()
integral_uj, last_t, last_p = 0.0, t0, read("power1_input")
busy = None
while (now := time.monotonic()) - t0 < 3.0:
    if busy is None and now - t0 > 0.9:
        busy = subprocess.Popen(["timeout", "1.2", "sh", "-c", "while :; do :; done"])
    p = read("power1_input")
    integral_uj += last_p * (now - last_t)
    last_t, last_p = now, p
    time.sleep(PERIOD_S)
e1 = read("energy1_input")
integral_uj += last_p * (time.monotonic() - last_t)
busy.wait()
print(json.dumps({"integral_j": integral_uj / 1e6, "counter_j": (e1 - e0) / 1e6}))
""".replace("PERIOD_S", repr(period_s))
    truth_before_j = json.loads(shared_board.process.truth_path.read_text())["energy_j"]
    out = json.loads(_ssh(shared_board, "python3", "-c", shlex.quote(sampler)))
    truth_after_j = json.loads(shared_board.process.truth_path.read_text())["energy_j"]
    assert out["counter_j"] == pytest.approx(out["integral_j"], rel=0.03)
    assert out["counter_j"] > 3.0 * 2.7  # idle for 3 s plus the load
    assert truth_after_j - truth_before_j >= out["counter_j"] * 0.97
