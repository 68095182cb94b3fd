"""The emulated phone's adbd against hosts it should not trust: no key, a wrong key, malformed frames.

The stock client is the reference for what must keep working; a raw peer (``_adb_peer``) sends what
the stock client never would.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit.emulator import adbd
from edgekit.emulator._adb_auth import (
    ADB_AUTH_RSAPUBLICKEY,
    ADB_AUTH_SIGNATURE,
    ADB_AUTH_TOKEN,
    Authorizer,
    decode_public_key,
    encode_public_key,
)
from edgekit.emulator.adbd import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_V1_BYTES, AdbDaemon, ServiceRunner
from tests.emulator._adb_peer import A_VERSION_OLD, RawPeer, authorize, frame, new_key
from tests.fixtures.phone import Phone, start_adb_server

COMMANDS = [b"CNXN", b"OPEN", b"OKAY", b"WRTE", b"CLSE", b"AUTH", b"SYNC", b"STLS", b"XXXX"]


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _phone_pid(phone: Phone) -> int:
    assert phone.process.proc is not None
    return phone.process.proc.pid


# -- authentication ---------------------------------------------------------------------------------
def test_a_peer_without_a_key_gets_a_token_and_no_service(phone: Phone) -> None:
    marker = phone.state_dir / "data" / "local" / "tmp" / "pwned"
    with RawPeer(phone.process.port) as peer:
        token = peer.hello()
        assert (token.command, token.arg0, len(token.data)) == (b"AUTH", ADB_AUTH_TOKEN, 20)
        peer.send(frame(b"OPEN", 1, 0, b"shell:touch /data/local/tmp/pwned\0"))
        peer.send(frame(b"AUTH", ADB_AUTH_SIGNATURE, 0, b"\1" * 256))
        # Frames are handled in order: the answer to the bad signature (a fresh token) comes after
        # whatever the OPEN caused, and the OPEN caused nothing.
        reply = peer.read()
        assert reply is not None
        assert (reply.command, reply.arg0) == (b"AUTH", ADB_AUTH_TOKEN) and reply.data != token.data
    assert not marker.exists()


def test_stock_adb_with_an_unknown_key_is_refused(phone: Phone, tmp_path: Path) -> None:
    (tmp_path / "stranger-home").mkdir()
    stranger = start_adb_server(tmp_path / "stranger-home")  # a fresh key the phone never saw
    try:
        stranger.adb("connect", phone.serial, timeout_s=20)
        deadline = time.monotonic() + 20
        state = b""
        while time.monotonic() < deadline:
            listing = stranger.adb("devices", timeout_s=10).stdout
            state = next((line.split()[1] for line in listing.splitlines()
                          if line.startswith(phone.serial.encode()) and len(line.split()) > 1), b"")
            if state in (b"unauthorized", b"device"):
                break
            time.sleep(0.1)
        assert state == b"unauthorized"
        out = stranger.adb("-s", phone.serial, "shell", "touch /data/local/tmp/pwned")
        assert out.returncode != 0 and b"unauthorized" in out.stderr
        assert not (phone.state_dir / "data" / "local" / "tmp" / "pwned").exists()
    finally:
        stranger.adb("kill-server", timeout_s=30)
    assert phone.adb("shell", "echo", "still-mine").stdout == b"still-mine\n"  # the trusted server


class _EchoServices:
    def open_service(self, destination: str) -> ServiceRunner | None:
        return (lambda stream: stream.send(stream.recv())) if destination == "echo:" else None


@pytest.fixture
def daemon_factory() -> Iterator:
    daemons: list[AdbDaemon] = []

    def start(keys_file: Path, *, accept_new_keys: bool) -> int:
        daemon = AdbDaemon("device::", _EchoServices(), Authorizer(keys_file, accept_new_keys=accept_new_keys))
        port = daemon.bind(0)
        threading.Thread(target=daemon.serve_forever, daemon=True).start()
        daemons.append(daemon)
        return port

    yield start
    for daemon in daemons:
        daemon.shutdown()


def test_an_offered_key_is_trusted_and_kept_only_when_configured(daemon_factory, tmp_path: Path) -> None:
    key = new_key()
    offer = encode_public_key(key.public_key(), "me@host").encode() + b"\0"
    refusing = daemon_factory(tmp_path / "refusing_keys", accept_new_keys=False)
    with RawPeer(refusing) as peer:
        peer.hello()
        peer.send(frame(b"AUTH", ADB_AUTH_RSAPUBLICKEY, 0, offer))
        peer.send(frame(b"AUTH", ADB_AUTH_SIGNATURE, 0, b"\0" * 256))
        reply = peer.read()  # not CNXN: the offer changed nothing
        assert reply is not None and (reply.command, reply.arg0) == (b"AUTH", ADB_AUTH_TOKEN)
    assert not (tmp_path / "refusing_keys").exists()

    accepting = daemon_factory(tmp_path / "adb_keys", accept_new_keys=True)
    with RawPeer(accepting) as peer:
        peer.hello()
        peer.send(frame(b"AUTH", ADB_AUTH_RSAPUBLICKEY, 0, offer))
        reply = peer.read()
        assert reply is not None and reply.command == b"CNXN"
    kept = (tmp_path / "adb_keys").read_text().splitlines()
    assert len(kept) == 1 and kept[0].endswith(" me@host")
    assert decode_public_key(kept[0]) == key.public_key()
    with RawPeer(accepting) as peer:  # the kept key now signs its way in
        assert peer.authenticate(key).data == b"device::"
        remote = peer.open(1, b"echo:")
        assert remote and peer.write_paced(1, remote, b"ping")


def test_bad_signatures_are_bounded(daemon_factory, tmp_path: Path) -> None:
    port = daemon_factory(tmp_path / "adb_keys", accept_new_keys=False)
    with RawPeer(port) as peer:
        peer.hello()
        # The daemon may drop the peer (after 64) while these are still going out: the next send is then reset.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            for _ in range(200):
                peer.send(frame(b"AUTH", ADB_AUTH_SIGNATURE, 0, b"\2" * 256))
        assert peer.closed_by_daemon()


def test_a_stalled_peer_is_dropped_within_the_handshake_time(daemon_factory, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adbd, "HANDSHAKE_TIMEOUT_S", 0.3)
    port = daemon_factory(tmp_path / "adb_keys", accept_new_keys=False)
    started = time.monotonic()
    with RawPeer(port) as silent, RawPeer(port) as stuck_in_auth:
        stuck_in_auth.hello()  # a token comes, no signature follows
        assert silent.closed_by_daemon() and stuck_in_auth.closed_by_daemon()
    assert time.monotonic() - started < 5


def test_idle_peers_do_not_lock_out_the_adb_server(phone: Phone) -> None:
    peers: list[RawPeer] = []
    try:
        for _ in range(adbd.MAX_CONNECTIONS + 8):
            peers.append(RawPeer(phone.process.port))
            peers[-1].hello()  # each holds a slot, unauthenticated
        assert peers[0].closed_by_daemon()  # the oldest made way for the newest
        phone.server.adb("disconnect", phone.serial, timeout_s=10)
        phone.connect()  # a new connection from the adb server still gets in
        assert phone.adb("shell", "echo", "in").stdout == b"in\n"
    finally:
        for peer in peers:
            peer.close()


# -- bounded frames ---------------------------------------------------------------------------------
def test_writes_ahead_of_okay_are_refused_not_queued(phone: Phone) -> None:
    """The host may have one WRTE per stream in flight; a flood is dropped, not buffered in memory."""
    key = new_key()
    authorize(phone.state_dir, key)
    before_kb = _peak_rss_kb(_phone_pid(phone))
    with RawPeer(phone.process.port) as peer:
        peer.authenticate(key)
        remote = peer.open(1, b"shell,v2,raw:sleep 30")
        assert remote
        chunk = frame(b"WRTE", 1, remote, b"\0" * MAX_PAYLOAD_BYTES)
        try:
            for _ in range(96):
                peer.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # dropped while we were still sending: the point
        assert peer.closed_by_daemon()
    grown_mb = (_peak_rss_kb(_phone_pid(phone)) - before_kb) / 1024
    assert grown_mb < 40, f"the phone's peak RSS grew by {grown_mb:.0f} MB"
    assert phone.adb("shell", "echo", "ok").stdout == b"ok\n"


def test_shell_v2_lengths_are_not_buffer_sizes(phone: Phone) -> None:
    """A stdin packet announcing 4 GB is passed on as it arrives; an over-long control packet ends the stream."""
    key = new_key()
    authorize(phone.state_dir, key)
    pid = _phone_pid(phone)
    before_kb = _peak_rss_kb(pid)
    with RawPeer(phone.process.port) as peer:
        peer.authenticate(key)
        remote = peer.open(1, b"shell,v2,raw:cat >/dev/null")
        assert remote
        assert peer.write_paced(1, remote, struct.pack("<BI", 0, 0xFFFFFFFF))  # stdin, "4 GB" follow
        for _ in range(64):
            assert peer.write_paced(1, remote, b"\0" * MAX_PAYLOAD_BYTES)
        grown_mb = (_peak_rss_kb(pid) - before_kb) / 1024
        assert grown_mb < 40, f"64 MB of stdin grew the phone's peak RSS by {grown_mb:.0f} MB"

        remote = peer.open(2, b"shell,v2,raw:cat >/dev/null")
        assert remote
        closed = not peer.write_paced(2, remote, struct.pack("<BI", 5, 1 << 20))  # a 1 MB "window size"
        while not closed and (reply := peer.read()) is not None:
            closed = reply.command == b"CLSE" and reply.arg1 == 2
        assert closed


def _drop_frame(rng: random.Random, kind: int) -> bytes:
    """A frame after which the daemon must end the connection."""
    data = rng.randbytes(rng.randrange(0, 64))
    if kind == 0:  # bad magic
        return frame(rng.choice(COMMANDS), rng.getrandbits(32), rng.getrandbits(32), data,
                     magic=rng.getrandbits(32) | 1)
    if kind == 1:  # a length no peer may send (before authentication 4 KiB is the most)
        return frame(rng.choice(COMMANDS), 0, 0, length=rng.choice(
            [MAX_PAYLOAD_V1_BYTES + 1, MAX_PAYLOAD_BYTES + 1, 0xFFFFFFFF, rng.getrandbits(32) | 1 << 20]))
    if kind == 2:  # truncated header
        return frame(rng.choice(COMMANDS), 0, 0, data)[: rng.randrange(1, 24)]
    # truncated payload: announce more than is sent
    return frame(rng.choice(COMMANDS), 0, 0, data, length=len(data) + rng.randrange(1, 4000))


def _noise(rng: random.Random, *, authenticated: bool) -> bytes:
    """A well-framed message with random contents that must not end the connection."""
    command = rng.choice([b"OKAY", b"CLSE", b"WRTE", b"SYNC", b"STLS", b"XXXX", b"OPEN"]
                         + ([] if authenticated else [b"AUTH"]))
    if command == b"OPEN":  # a destination no service answers (never shell/exec/sync)
        data = b"zz" + rng.randbytes(rng.randrange(0, 200)) + b"\0"
    else:
        data = rng.randbytes(rng.randrange(0, 512))
    arg0 = rng.getrandbits(32)
    if command == b"AUTH":
        arg0 = rng.choice([0, ADB_AUTH_TOKEN, 7, rng.getrandbits(32)])  # never a signature attempt
    return frame(command, arg0, rng.getrandbits(32), data)


def _drain(peer: RawPeer) -> threading.Thread:
    """Read (and drop) whatever the daemon answers, so it never blocks on a full socket."""
    def run() -> None:
        try:
            while peer.read() is not None:
                pass
        except OSError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _sync_garbage(rng: random.Random) -> bytes:
    request = rng.choice([b"STAT", b"LIST", b"SEND", b"RECV", b"DATA", b"DONE", b"LIS2", b"STA2", b"QUIT",
                          rng.randbytes(4)])
    length = rng.choice([0, 4, 4096, 4097, 65536, 0xFFFFFFFF, rng.getrandbits(32)])
    return struct.pack("<4sI", request, length) + rng.randbytes(rng.randrange(0, 300))


def _shell_garbage(rng: random.Random) -> bytes:
    packet_id = rng.choice([0, 1, 2, 3, 4, 5, 6, 255])
    length = rng.choice([0, 1, 64, 4096, 4097, 1 << 20, 0xFFFFFFFF, rng.getrandbits(32)])
    return struct.pack("<BI", packet_id, length) + rng.randbytes(rng.randrange(0, 300))


def test_fuzzed_frames_leave_the_daemon_serving(phone: Phone, tmp_path: Path) -> None:
    rng = random.Random(14)
    key = new_key()
    authorize(phone.state_dir, key)
    port, pid = phone.process.port, _phone_pid(phone)
    before_kb = _peak_rss_kb(pid)
    started = time.monotonic()
    frames = 0

    # 1. Frames that must end the connection: one connection each, some after a handshake.
    for i in range(1200):
        with RawPeer(port, version=A_VERSION_OLD if i % 7 == 0 else 0x01000001) as peer:
            truncated = False
            if i % 10 == 0:
                peer.authenticate(key)  # then a bad checksum (old peers check them) or a bad magic
                bad = frame(b"OKAY", 1, 1, b"abc", check=12345) if peer.version == A_VERSION_OLD \
                    else _drop_frame(rng, 0)
            else:
                bad, truncated = _drop_frame(rng, i % 4), i % 4 in (2, 3)
            peer.send(bad)
            frames += 1
            if truncated:
                peer.sock.shutdown(socket.SHUT_WR)  # the frame never completes
            assert peer.closed_by_daemon(), f"frame {i} did not end the connection"

    # 2. Noise before and after authentication: ignored, answered, never served.
    for authenticated in (False, True):
        with RawPeer(port) as peer:
            if authenticated:
                peer.authenticate(key)
            else:
                peer.hello()
            drain = _drain(peer)
            for _ in range(3000):
                peer.send(_noise(rng, authenticated=authenticated))
                frames += 1
            peer.sock.shutdown(socket.SHUT_WR)
            drain.join(timeout=30)
            assert not drain.is_alive()

    # 3. Garbage inside sync and shell v2 streams, paced by OKAY as the protocol asks.
    with RawPeer(port) as peer:
        peer.authenticate(key)
        local_id = 1
        for service, garbage, count in ((b"sync:", _sync_garbage, 1500),
                                        (b"shell,v2,raw:cat >/dev/null", _shell_garbage, 1500)):
            remote, sent = 0, 0
            while sent < count:
                if not remote:
                    local_id += 1
                    remote = peer.open(local_id, service)
                    assert remote, f"{service!r} refused"
                if not peer.write_paced(local_id, remote, garbage(rng)):
                    remote = 0  # the service gave up on the stream; open another
                sent += 1
            frames += sent
            if remote:
                peer.send(frame(b"CLSE", local_id, remote))

    elapsed_s = time.monotonic() - started
    grown_mb = (_peak_rss_kb(pid) - before_kb) / 1024
    print(f"{frames} malformed frames in {elapsed_s:.1f}s; phone peak RSS grew {grown_mb:.1f} MB")
    assert frames >= 10_000
    assert phone.process.proc is not None and phone.process.proc.poll() is None
    assert grown_mb < 40
    # The stock client still works: shell and a push/pull round trip.
    assert phone.adb("shell", "echo", "survived").stdout == b"survived\n"
    src = tmp_path / "after-fuzz.bin"
    src.write_bytes(rng.randbytes(200_000))
    assert phone.adb("push", str(src), "/data/local/tmp/after-fuzz.bin").returncode == 0
    assert phone.adb("pull", "/data/local/tmp/after-fuzz.bin", str(tmp_path / "back.bin")).returncode == 0
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_stream_okay_pacing_is_what_the_stock_client_does(phone: Phone, tmp_path: Path) -> None:
    """A large stdin through the stock client (many WRTEs, each after its OKAY) is not mistaken for a flood."""
    data = random.Random(3).randbytes(3 * 1024 * 1024)
    out = phone.adb("shell", "wc -c", stdin=data)
    assert out.returncode == 0 and out.stdout.strip() == str(len(data)).encode()

