"""A hostile device behind a fake adb server on loopback, for the limits and stall tests.

It speaks just enough of the adb server protocol for ``AdbDevice`` (version, get-state, features,
transport) and then misbehaves the way one chosen ``Behaviour`` says: announces a 4 GB packet, streams
a file or a command's output without end, or goes silent without closing. What it streams is bounded
by ``stream_bytes`` so that a client without limits fails in bounded time instead of filling the host.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass

SERIAL = "hostile-1"
SILENT = "silent"  # after the sync or shell request is accepted: no byte, no close
HUGE_SYNC_PACKET = "huge-sync-packet"  # RECV answered with DATA of length 0xFFFFFFFF, then zeros
HUGE_FAIL = "huge-fail"  # RECV answered with FAIL of length 0xFFFFFFFF
ENDLESS_FILE = "endless-file"  # STAT says 1000 bytes, RECV streams 64 KiB DATA packets without end
HUGE_SHELL_PACKET = "huge-shell-packet"  # shell v2 stdout packet of length 0xFFFFFFFF, then zeros
SHELL_FLOOD = "shell-flood"  # shell v2 stdout packets without end
SHELL_V1_FLOOD = "shell-v1-flood"  # no shell_v2 feature; shell v1 output without end
_ZEROS = bytes(64 * 1024)


@dataclass
class Behaviour:
    kind: str
    stream_bytes: int = 4 << 30  # what it streams at most before it closes


def _read_exact(conn: socket.socket, n_bytes: int) -> bytes:
    data = b""
    while len(data) < n_bytes:
        chunk = conn.recv(n_bytes - len(data))
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    return data


def _request(conn: socket.socket) -> str:
    length = int(_read_exact(conn, 4), 16)
    return _read_exact(conn, length).decode()


def _block(text: str) -> bytes:
    return b"OKAY" + f"{len(text):04x}".encode() + text.encode()


def _stream(conn: socket.socket, header: bytes, packet: bytes, total_bytes: int) -> None:
    conn.sendall(header)
    sent = 0
    while sent < total_bytes:
        conn.sendall(packet)
        sent += len(packet)


class HostileAdbServer:
    """Serves ``behaviour`` on 127.0.0.1 until ``close``; every connection in its own thread."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._closing = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not)
        self._sock.close()
        for conn in self._held:
            conn.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HostileAdbServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._answer(conn, _request(conn))
        except OSError:
            pass  # the client hung up: what a hostile device does not care about
        finally:
            if conn not in self._held:
                conn.close()

    def _answer(self, conn: socket.socket, request: str) -> None:
        kind = self.behaviour.kind
        if request == "host:version":
            conn.sendall(_block(f"{40:04x}"))
        elif request == f"host-serial:{SERIAL}:get-state":
            conn.sendall(_block("device"))
        elif request == f"host-serial:{SERIAL}:features":
            conn.sendall(_block("" if kind == SHELL_V1_FLOOD else "shell_v2,cmd"))
        elif request == f"host:transport:{SERIAL}":
            conn.sendall(b"OKAY")
            self._service(conn, _request(conn))
        else:
            conn.sendall(b"FAIL" + _block(f"unknown request {request}")[4:])

    def _service(self, conn: socket.socket, service: str) -> None:
        kind, total = self.behaviour.kind, self.behaviour.stream_bytes
        conn.sendall(b"OKAY")
        if kind == SILENT:
            self._held.append(conn)  # open until the server closes: no byte, no close
            return
        if service.startswith("shell,v2"):
            if kind == HUGE_SHELL_PACKET:
                _stream(conn, struct.pack("<BI", 1, 0xFFFFFFFF), _ZEROS, total)
            elif kind == SHELL_FLOOD:
                _stream(conn, b"", struct.pack("<BI", 1, len(_ZEROS)) + _ZEROS, total)
            conn.sendall(struct.pack("<BI", 3, 1) + b"\0")
        elif service.startswith("shell:"):
            _stream(conn, b"", _ZEROS, total)
        elif service == "sync:":
            self._sync(conn, kind, total)

    def _sync(self, conn: socket.socket, kind: str, total: int) -> None:
        while True:
            request_id = _read_exact(conn, 4)
            (length,) = struct.unpack("<I", _read_exact(conn, 4))
            if request_id in (b"STAT", b"RECV", b"SEND"):
                _read_exact(conn, length)
            if request_id == b"STAT":
                conn.sendall(b"STAT" + struct.pack("<III", 0o100644, 1000, 0))
            elif request_id == b"RECV":
                if kind == HUGE_SYNC_PACKET:
                    _stream(conn, b"DATA" + struct.pack("<I", 0xFFFFFFFF), _ZEROS, total)
                elif kind == HUGE_FAIL:
                    _stream(conn, b"FAIL" + struct.pack("<I", 0xFFFFFFFF), _ZEROS, total)
                elif kind == ENDLESS_FILE:
                    _stream(conn, b"", b"DATA" + struct.pack("<I", len(_ZEROS)) + _ZEROS, total)
                conn.sendall(b"DONE" + bytes(4))
            else:
                return

