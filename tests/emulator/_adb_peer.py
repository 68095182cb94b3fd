"""A raw adb host for tests: speaks the transport protocol to the emulated adbd over a socket.

The stock client only sends well-formed frames; tests that need an old-protocol peer, a peer without
a key or a hostile one use this instead. It signs AUTH tokens the way the stock client does.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from edgekit.emulator._adb_auth import ADB_AUTH_SIGNATURE, ADB_AUTH_TOKEN, encode_public_key, sign_token

A_VERSION_OLD = 0x01000000  # checksums on
A_VERSION_NEW = 0x01000001


def command_id(name: bytes) -> int:
    return int(struct.unpack("<I", name)[0])


@dataclass
class Message:
    command: bytes
    arg0: int
    arg1: int
    data: bytes
    check: int


def frame(command: bytes | int, arg0: int, arg1: int, data: bytes = b"", *, length: int | None = None,
          check: int | None = None, magic: int | None = None) -> bytes:
    """One message; ``length``, ``check`` and ``magic`` override the honest values (for bad frames)."""
    cmd = command_id(command) if isinstance(command, bytes) else command
    header = struct.pack("<6I", cmd, arg0, arg1, len(data) if length is None else length,
                         (sum(data) & 0xFFFFFFFF) if check is None else check,
                         (cmd ^ 0xFFFFFFFF) if magic is None else magic)
    return header + data


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def load_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def authorize(state_dir: Path, key: rsa.RSAPrivateKey) -> None:
    """Add ``key`` to a phone's ``adb_keys`` (read at each handshake, so a running phone takes it)."""
    with (state_dir / "adb_keys").open("a") as f:  # a new line: adbkey.pub ends without one
        f.write("\n" + encode_public_key(key.public_key(), "test@edgekit") + "\n")


class RawPeer:
    def __init__(self, port: int, *, version: int = A_VERSION_NEW, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.version = version

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n_bytes: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n_bytes:
            chunk = self.sock.recv(n_bytes - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def read(self) -> Message | None:
        """The next message, or None once the daemon closed the connection."""
        try:
            header = self._exact(24)
        except ConnectionResetError:
            return None
        if header is None:
            return None
        cmd, arg0, arg1, length, check, magic = struct.unpack("<6I", header)
        assert magic == cmd ^ 0xFFFFFFFF, "daemon sent a bad magic"
        data = self._exact(length) if length else b""
        assert data is not None, "daemon cut a message short"
        return Message(struct.pack("<I", cmd), arg0, arg1, data, check)

    def closed_by_daemon(self) -> bool:
        """True when the daemon ends the connection (what it sends first is skipped)."""
        try:
            while self.read() is not None:
                pass
        except TimeoutError:
            return False
        return True

    def hello(self) -> Message:
        self.send(frame(b"CNXN", self.version, 256 * 1024, b"host::\0"))
        reply = self.read()
        assert reply is not None, "daemon closed the connection after CNXN"
        return reply

    def authenticate(self, key: rsa.RSAPrivateKey) -> Message:
        """CNXN, then sign the token with ``key``; returns the daemon's CNXN (its banner)."""
        reply = self.hello()
        assert (reply.command, reply.arg0) == (b"AUTH", ADB_AUTH_TOKEN), reply
        self.send(frame(b"AUTH", ADB_AUTH_SIGNATURE, 0, sign_token(key, reply.data)))
        reply2 = self.read()
        assert reply2 is not None and reply2.command == b"CNXN", reply2
        return reply2

    def open(self, local_id: int, destination: bytes) -> int:
        """OPEN a service; the daemon's stream id (0 if it refused with CLSE)."""
        self.send(frame(b"OPEN", local_id, 0, destination + b"\0"))
        while (reply := self.read()) is not None:
            if reply.command == b"OKAY" and reply.arg1 == local_id:
                return reply.arg0
            if reply.command == b"CLSE" and reply.arg1 == local_id:
                return 0
        raise AssertionError("daemon closed the connection on OPEN")

    def write_paced(self, local_id: int, remote_id: int, data: bytes) -> bool:
        """WRTE and wait for its OKAY (acknowledging the daemon's own WRTEs); False once the stream closed."""
        self.send(frame(b"WRTE", local_id, remote_id, data))
        while (reply := self.read()) is not None:
            if reply.arg1 != local_id:
                continue
            if reply.command == b"WRTE":
                self.send(frame(b"OKAY", local_id, remote_id))
            elif reply.command == b"OKAY":
                return True
            elif reply.command == b"CLSE":
                return False
        return False
