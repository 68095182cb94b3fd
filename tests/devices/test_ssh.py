"""SshDevice against emulated boards (real sshd, stock ssh client): config, host keys, commands, files."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit.devices.base import DeviceUnreachable
from edgekit.devices.ssh import HostKeyRejected, SshDevice
from edgekit.errors import LimitExceeded, TransportError
from tests.fixtures.board import BoardFactory, BoardHandle


@pytest.fixture
def device(shared_board: BoardHandle) -> Iterator[SshDevice]:
    with SshDevice(shared_board.alias, ssh_config=shared_board.ssh_config,
                   known_hosts=shared_board.known_hosts) as dev:
        assert isinstance(dev, SshDevice)
        yield dev


def _board_commands(device: SshDevice) -> str:
    return device.run(["ps", "-eo", "args="], check=True).text()


def test_alias_resolves_hostname_user_port_identity_from_ssh_config(shared_board: BoardHandle,
                                                                    tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        "Host unrelated\n    HostName 192.0.2.1\n\n"
        f"Host my-pi\n    HostName 127.0.0.1\n    Port {shared_board.process.port}\n"
        f"    User {shared_board.process.user}\n    IdentityFile {shared_board.process.client_key}\n"
        "    IdentitiesOnly yes\n"
    )
    with SshDevice("my-pi", ssh_config=config, known_hosts=shared_board.known_hosts) as dev:
        assert dev.run(["uname", "-n"], check=True).text().strip() == "pi-shared"
        assert dev.run(["id", "-un"], check=True).text().strip() == shared_board.process.user


def test_explicit_address_without_any_ssh_config(shared_board: BoardHandle, tmp_path: Path) -> None:
    empty = tmp_path / "empty_config"
    empty.write_text("")
    with SshDevice("127.0.0.1", name="direct", port=shared_board.process.port, user=shared_board.process.user,
                   identity_file=shared_board.process.client_key, ssh_config=empty,
                   known_hosts=shared_board.known_hosts) as dev:
        assert dev.run(["uname", "-n"], check=True).text().strip() == "pi-shared"


def test_proxyjump_through_another_board(make_board: BoardFactory, tmp_path: Path) -> None:
    jump, target = make_board("pi-jump"), make_board("pi-target")
    known_hosts = tmp_path / "both.known_hosts"
    known_hosts.write_text(jump.process.known_hosts_line() + target.process.known_hosts_line())
    config = tmp_path / "jump_config"
    config.write_text(jump.ssh_config.read_text() + target.ssh_config.read_text() +
                      "Host behind\n    HostName 127.0.0.1\n"
                      f"    Port {target.process.port}\n    User {target.process.user}\n"
                      f"    IdentityFile {target.process.client_key}\n    ProxyJump pi-jump\n")
    with SshDevice("behind", ssh_config=config, known_hosts=known_hosts) as dev:
        assert dev.run(["uname", "-n"], check=True).text().strip() == "pi-target"


def test_unknown_host_key_is_refused_then_accepted_explicitly(make_board: BoardFactory) -> None:
    board = make_board("pi-new", pin_host_key=False)
    with SshDevice(board.alias, ssh_config=board.ssh_config, known_hosts=board.known_hosts) as dev, \
            pytest.raises(HostKeyRejected, match=r"not known.*accept_new_host_key=True"):
        dev.run(["true"])
    assert board.known_hosts.read_text() == ""
    with SshDevice(board.alias, ssh_config=board.ssh_config, known_hosts=board.known_hosts,
                   accept_new_host_key=True) as dev:
        assert dev.run(["echo", "hi"], check=True).text() == "hi\n"
    assert board.process.known_hosts_line().split()[-1] in board.known_hosts.read_text()


def test_changed_host_key_is_refused_even_with_accept_new(make_board: BoardFactory, tmp_path: Path) -> None:
    board = make_board("pi-changed")
    impostor = tmp_path / "impostor_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    kind, blob = impostor.with_suffix(".pub").read_text().split()[:2]
    board.known_hosts.write_text(f"[127.0.0.1]:{board.process.port} {kind} {blob}\n")
    for accept_new in (False, True):
        with SshDevice(board.alias, ssh_config=board.ssh_config, known_hosts=board.known_hosts,
                       accept_new_host_key=accept_new) as dev, \
                pytest.raises(HostKeyRejected, match=r"CHANGED.*ssh-keygen -R"):
            dev.run(["true"])
    assert blob in board.known_hosts.read_text()


def test_arguments_are_never_interpreted_by_the_remote_shell(device: SshDevice) -> None:
    argv = ["printf", "%s|", "a b", "it's", '"dq"', "$(touch pwned)", "`id`", "x;y", "*", "$HOME",
            "new\nline"]
    assert device.run(argv, check=True).text() == "a b|it's|\"dq\"|$(touch pwned)|`id`|x;y|*|$HOME|new\nline|"
    assert not device.run(["test", "-e", "pwned"]).ok


NAMES = ["plain.bin", "with space.bin", "it's.bin", 'dq".bin', "$(touch pwned).bin", "semi;colon.bin",
         "-leading-dash.bin", "star*q?.bin"]


def test_weird_file_names_round_trip_intact(device: SshDevice, tmp_path: Path) -> None:
    for index, name in enumerate(NAMES):
        source = tmp_path / name
        source.write_bytes(os.urandom(1000 + index))
        device.push(str(source), f"weird/{name}")
        back = tmp_path / f"back-{index}"
        device.pull(f"weird/{name}", str(back))
        assert back.read_bytes() == source.read_bytes(), name
    listed = device.run(["ls", "-1", "weird"], check=True).text().splitlines()
    assert sorted(listed) == sorted(NAMES)
    assert not device.run(["test", "-e", "pwned"]).ok
    device.run(["rm", "-rf", "weird"], check=True)


def test_info_reports_board_facts(device: SshDevice) -> None:
    info = device.info()
    assert info.reachable and info.transport == "ssh"
    assert info.model is not None and info.model.startswith("Raspberry Pi 5")
    assert info.cores == os.cpu_count() and info.abi == os.uname().machine
    assert info.ram_bytes and info.ram_bytes > 0 and info.free_bytes and info.free_bytes > 0
    assert info.temperature_c is not None and 20 < info.temperature_c < 100
    assert info.os_version and info.battery_pct is None
    assert info.extra["hostname"] == "pi-shared"


def test_board_killed_mid_push_then_retry_after_restart(make_board: BoardFactory, tmp_path: Path) -> None:
    board = make_board("pi-flaky")
    source = tmp_path / "model.bin"
    with source.open("wb") as f:
        for _ in range(48):
            f.write(os.urandom(1 << 20))
    with SshDevice(board.alias, ssh_config=board.ssh_config, known_hosts=board.known_hosts) as dev:
        dev.run(["true"], check=True)

        def pull_the_plug(done: int, total: int) -> None:
            if done >= 8 << 20 and board.process.proc is not None:
                board.process.kill()

        expected = r"push of .*model\.bin.* failed after \d+ of 50331648 bytes"
        with pytest.raises(DeviceUnreachable, match=expected):
            dev.push(str(source), "/home/edgekit/model.bin", progress=pull_the_plug)
        assert not dev.info().reachable
        board.process.start()
        dev.push(str(source), "/home/edgekit/model.bin")
        remote_sum = dev.run(["sha256sum", "/home/edgekit/model.bin"], check=True).text().split()[0]
        assert remote_sum == hashlib.sha256(source.read_bytes()).hexdigest()
        assert "model.bin.edgekit-part" not in dev.run(["ls", "/home/edgekit"], check=True).text()


def test_pull_of_a_4_gb_file_is_refused_before_reading_it(device: SshDevice, tmp_path: Path) -> None:
    """A sparse 4 GB file on the board (no disk spent) is refused from its announced size, at once."""
    device.run(["truncate", "-s", "4G", "/home/edgekit/huge.bin"], check=True)
    try:
        start = time.monotonic()
        with pytest.raises(LimitExceeded, match=r"pull of /home/edgekit/huge\.bin \(4294967296 bytes\): over the "
                                                r"limit pull_file_bytes = \d+ bytes \(EDGEKIT_LIMIT_PULL_FILE_BYTES"):
            device.pull("/home/edgekit/huge.bin", str(tmp_path / "huge.bin"))
        assert time.monotonic() - start < 10
        assert list(tmp_path.iterdir()) == []
    finally:
        device.run(["rm", "-f", "/home/edgekit/huge.bin"])


def test_command_output_over_its_limit_stops_and_the_command_is_killed(
        device: SshDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_LIMIT_COMMAND_OUTPUT_BYTES", str(1 << 20))
    with pytest.raises(LimitExceeded, match=r"output of command .*over the limit command_output_bytes = 1048576"):
        device.run(["sh", "-c", "head -c 8000000 /dev/zero; exec sleep 1001"], timeout_s=30)
    assert "sleep 1001" not in _board_commands(device)
    assert device.run(["echo", "ok"], check=True).stdout == b"ok\n"  # the connection still serves


def test_silent_peer_is_given_up_within_the_stall_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 'board' that accepts the connection and then sends nothing and does not close."""
    monkeypatch.setenv("EDGEKIT_LIMIT_STALL_S", "1")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with SshDevice("127.0.0.1", port=port, known_hosts=known_hosts, ssh_config=os.devnull) as dev:
            start = time.monotonic()
            with pytest.raises(DeviceUnreachable, match=r"sent nothing and did not close.*stall_s = 1 s"):
                dev.pull("/home/edgekit/trace.jsonl", str(tmp_path / "trace.jsonl"))
            assert time.monotonic() - start < 5
    assert not (tmp_path / "trace.jsonl").exists()


def _live_in_namespace(pid_ns: str) -> list[int]:
    """Host pids of the processes in pid namespace ``pid_ns`` that have not exited (zombies excluded)."""
    live = []
    for entry in os.listdir("/proc"):
        try:
            if (entry.isdigit() and os.readlink(f"/proc/{entry}/ns/pid") == pid_ns
                    and Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0] != "Z"):
                live.append(int(entry))
        except OSError:
            continue
    return live


def test_killed_board_runs_nothing_once_kill_returns(make_board: BoardFactory, tmp_path: Path) -> None:
    """A power loss is instant: when ``kill`` returns mid-push, no process of the board (its sshd, the
    session carrying the push) may still run, or the push can complete on a board that is 'dead' (the
    flaky mid-push test: the sandbox used to die a moment after the serve process, through parent-death
    signals, and on a busy host the rest of a 48 MB push got through meanwhile)."""
    board = make_board("pi-gone")
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(16 << 20))
    sandbox = board.process.ready["sshd_pid"]
    init = int(Path(f"/proc/{sandbox}/task/{sandbox}/children").read_text().split()[0])
    pid_ns = os.readlink(f"/proc/{init}/ns/pid")
    left: list[list[int]] = []

    def pull_the_plug(done: int, total: int) -> None:
        if done >= 4 << 20 and not left:
            assert len(_live_in_namespace(pid_ns)) >= 3  # init, sshd, the session carrying the push
            board.process.kill()
            left.append(_live_in_namespace(pid_ns))

    with (SshDevice(board.alias, ssh_config=board.ssh_config, known_hosts=board.known_hosts) as dev,
          pytest.raises(DeviceUnreachable)):
        dev.push(str(source), "/home/edgekit/model.bin", progress=pull_the_plug)
    assert left == [[]]


def test_pull_never_reads_past_the_size_the_board_announced(device: SshDevice, tmp_path: Path) -> None:
    """A file that grows while it is pulled is not followed to its end (a log being written could be
    endless). /proc/self/cmdline is one such file, deterministically: the size is read by ``wc`` (its
    command line, 6 bytes), the content by ``cat`` (a longer one)."""
    with pytest.raises(TransportError, match=r"sent more than the 6 bytes it announced"):
        device.pull("/proc/self/cmdline", str(tmp_path / "cmdline"))
    assert list(tmp_path.iterdir()) == []


def test_link_dropped_mid_push_leaves_nothing_at_the_final_name(make_board: BoardFactory, tmp_path: Path) -> None:
    """The link drops (the client end of the connection goes away) while the board stays up: sshd ends
    the board's side with a plain end of input, so the board must check it got every byte before the
    rename, or a truncated file takes the final name while the host is told the push failed."""
    board = make_board("pi-link")
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(16 << 20))
    with SshDevice(board.alias, ssh_config=board.ssh_config, known_hosts=board.known_hosts) as dev:
        dev.run(["true"], check=True)
        dropped: list[int] = []

        def drop_the_link(done: int, total: int) -> None:
            if done >= 4 << 20 and not dropped:
                dropped.append(done)
                subprocess.run([*dev._base, "-O", "exit", "--", dev.host], capture_output=True, timeout=30,
                               check=False)

        with pytest.raises(DeviceUnreachable):
            dev.push(str(source), "/home/edgekit/model.bin", progress=drop_the_link)
        assert dropped
        # The board finishes its side on its own; wait (bounded) until the partial copy is dealt with.
        deadline = time.monotonic() + 15
        while "model.bin.edgekit-part" in dev.run(["ls", "-a", "/home/edgekit"], check=True).text():
            assert time.monotonic() < deadline, "the board never finished the dropped push"
        assert "model.bin" not in dev.run(["ls", "-a", "/home/edgekit"], check=True).text()
