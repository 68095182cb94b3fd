"""Device side of the ADB transport protocol, for emulated phones.

This module speaks the framing the stock ``adb`` server expects from a device reached with
``adb connect HOST:PORT``: 24-byte little-endian message headers (command, arg0, arg1, data length,
data checksum, magic), the CNXN handshake with a ``device::`` banner, and OPEN/OKAY/WRTE/CLSE streams
with one unacknowledged WRTE per stream in each direction. The host must authenticate first, as with a
real phone (``AUTH``, see ``_adb_auth``): before that, nothing but CNXN and AUTH is answered.

Everything the peer sends is bounded before it is read: a frame longer than the peer may send (4 KiB
before authentication, ``MAX_PAYLOAD_BYTES`` after), a second WRTE on a stream before its OKAY, more
than ``MAX_STREAMS`` open streams or ``MAX_AUTH_FAILURES`` bad signatures drop the connection; a peer
that has not authenticated within ``HANDSHAKE_TIMEOUT_S`` is dropped, and at most ``MAX_CONNECTIONS``
are served at once (the oldest unauthenticated one makes way for a newcomer).

It knows nothing about what a service does: ``OPEN`` destinations are handed to a ``ServiceFactory``
(the phone) which returns a function run on its own thread with a ``Stream`` to read from and write
to. It must not touch the device filesystem or start processes itself.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import struct
import threading
from collections.abc import Callable
from typing import Protocol

from edgekit.emulator._adb_auth import (
    ADB_AUTH_RSAPUBLICKEY,
    ADB_AUTH_SIGNATURE,
    ADB_AUTH_TOKEN,
    Authorizer,
    new_token,
)

log = logging.getLogger(__name__)


def _command_id(name: bytes) -> int:
    return int(struct.unpack("<I", name)[0])


A_CNXN = _command_id(b"CNXN")
A_OPEN = _command_id(b"OPEN")
A_OKAY = _command_id(b"OKAY")
A_WRTE = _command_id(b"WRTE")
A_CLSE = _command_id(b"CLSE")
A_AUTH = _command_id(b"AUTH")
A_SYNC = _command_id(b"SYNC")

# Peers announcing the oldest version fill in and verify the data checksum; newer ones send 0.
A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = A_VERSION_SKIP_CHECKSUM
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_PAYLOAD_V1_BYTES = 4096  # what a peer may send before the handshake has settled anything
MAX_STREAMS = 128  # open streams per connection (each runs a thread, a shell also a process)
MAX_CONNECTIONS = 32  # connections served at once; the stock adb server needs one per device
MAX_AUTH_FAILURES = 64  # bad signatures per connection (a client tries each of its keys once)
HANDSHAKE_TIMEOUT_S = 30.0
_HEADER = struct.Struct("<6I")


class StreamClosed(Exception):
    """The peer closed the stream (or the whole connection went away)."""


class ProtocolViolation(Exception):
    """The peer broke the framing rules; the connection is dropped."""


class Stream:
    """One OPENed service stream: a byte pipe to the host with ADB's WRTE/OKAY pacing."""

    def __init__(self, conn: AdbConnection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._pending = bytearray()
        self._may_write = threading.Event()
        self._may_write.set()  # our OKAY to the OPEN lets us write first
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._sent_close = False
        self._unacked_lock = threading.Lock()
        self._unacked = 0  # WRTEs delivered and not yet acknowledged: the protocol allows one

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- host -> device ---------------------------------------------------------------------------
    def _deliver(self, data: bytes) -> None:
        """Queue a WRTE's data; a second one before our OKAY breaks the protocol (and would pile up)."""
        with self._unacked_lock:
            if self._unacked:
                raise ProtocolViolation(f"second WRTE on stream {self.local_id} before its OKAY")
            self._unacked = 1
        self._inbox.put(data)

    def _acknowledge(self) -> None:
        with self._unacked_lock:  # cleared before the OKAY leaves, so the next WRTE finds it clear
            self._unacked = 0
        self.conn.send_message(A_OKAY, self.local_id, self.remote_id)

    def recv(self) -> bytes:
        """Next chunk the host wrote; acknowledges it (letting the host send more)."""
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            return data
        item = self._inbox.get()
        if item is None:
            self._inbox.put(None)  # keep later readers unblocked
            raise StreamClosed()
        self._acknowledge()
        return item

    def read_exact(self, n_bytes: int) -> bytes:
        while len(self._pending) < n_bytes:
            item = self._inbox.get()
            if item is None:
                self._inbox.put(None)
                raise StreamClosed()
            self._pending += item
            self._acknowledge()
        data = bytes(self._pending[:n_bytes])
        del self._pending[:n_bytes]
        return data

    # -- device -> host ---------------------------------------------------------------------------
    def _acknowledged(self) -> None:
        self._may_write.set()

    def send(self, data: bytes) -> None:
        """Write ``data`` to the host, split to the negotiated payload size, one WRTE in flight."""
        view = memoryview(data)
        with self._send_lock:
            while view:
                while not self._may_write.wait(0.5):
                    if self.closed:
                        raise StreamClosed()
                if self.closed:
                    raise StreamClosed()
                chunk = view[: self.conn.max_payload_bytes]
                view = view[len(chunk) :]
                self._may_write.clear()
                self.conn.send_message(A_WRTE, self.local_id, self.remote_id, bytes(chunk))

    def close(self) -> None:
        """Close from the device side (sends CLSE unless the host closed first)."""
        if not self._closed.is_set():
            self._closed.set()
            if not self._sent_close:
                self._sent_close = True
                with contextlib.suppress(OSError):
                    self.conn.send_message(A_CLSE, self.local_id, self.remote_id)
        self._wake()

    def _closed_by_peer(self) -> None:
        self._sent_close = True
        self._closed.set()
        self._wake()

    def _wake(self) -> None:
        self._inbox.put(None)
        self._may_write.set()


ServiceRunner = Callable[[Stream], None]


class ServiceFactory(Protocol):
    def open_service(self, destination: str) -> ServiceRunner | None:
        """A runner for ``destination`` (e.g. ``shell,v2,raw:ls``), or None to refuse it."""


class AdbConnection:
    """One TCP connection from an adb server: handshake and authentication, then demultiplex streams."""

    def __init__(self, sock: socket.socket, banner: str, services: ServiceFactory, auth: Authorizer) -> None:
        self.sock = sock
        self.banner = banner
        self.services = services
        self.auth = auth
        self.max_payload_bytes = 4096
        self.use_checksum = True
        self._write_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._next_id = 1
        self._peer_hello = False  # a CNXN arrived: AUTH is the only thing answered until it succeeds
        self._connected = False  # authenticated and CNXN answered: streams may open
        self._token = b""
        self._auth_failures = 0
        self._peer_version = A_VERSION_MIN

    @property
    def authenticated(self) -> bool:
        return self._connected

    def send_message(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        check = (sum(data) & 0xFFFFFFFF) if self.use_checksum else 0
        header = _HEADER.pack(command, arg0, arg1, len(data), check, command ^ 0xFFFFFFFF)
        with self._write_lock:
            self.sock.sendall(header + data if len(data) < 65536 else header)
            if len(data) >= 65536:
                self.sock.sendall(data)

    def serve(self) -> None:
        self.sock.settimeout(HANDSHAKE_TIMEOUT_S)  # lifted once the host has authenticated
        reader = self.sock.makefile("rb", buffering=256 * 1024)
        try:
            while True:
                header = reader.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return
                command, arg0, arg1, length, check, magic = _HEADER.unpack(header)
                limit = MAX_PAYLOAD_BYTES if self._connected else MAX_PAYLOAD_V1_BYTES
                if magic != command ^ 0xFFFFFFFF or length > limit:
                    log.warning("bad adb header from peer (bad magic, or %d bytes over the %d-byte limit); "
                                "dropping the connection", length, limit)
                    return
                data = reader.read(length) if length else b""
                if len(data) < length:
                    return
                if self.use_checksum and self._peer_hello and check != (sum(data) & 0xFFFFFFFF):
                    log.warning("bad adb data checksum; dropping the connection")
                    return
                self._dispatch(command, arg0, arg1, data)
        except ProtocolViolation as exc:
            log.warning("adb peer broke the protocol (%s); dropping the connection", exc)
            return
        except OSError:
            return
        finally:
            self._close_all()
            reader.close()

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            self._close_all()
            peer_version = arg0
            self.use_checksum = peer_version < A_VERSION_SKIP_CHECKSUM
            self.max_payload_bytes = max(4096, min(arg1, MAX_PAYLOAD_BYTES))
            self._peer_hello, self._connected = True, False
            self.sock.settimeout(HANDSHAKE_TIMEOUT_S)
            self._peer_version = peer_version
            self._send_token()
            return
        if command == A_AUTH and self._peer_hello and not self._connected:
            self._authenticate(arg0, data)
            return
        if not self._connected:
            return  # everything before the handshake is noise
        if command == A_OPEN:
            if len(self._streams) >= MAX_STREAMS:
                log.warning("refusing a stream: %d open already", MAX_STREAMS)
                self.send_message(A_CLSE, 0, arg0)
                return
            self._open(remote_id=arg0, destination=data.rstrip(b"\0").decode("utf-8", "replace"))
        elif command == A_OKAY:
            stream = self._streams.get(arg1)
            if stream is not None:
                stream._acknowledged()
        elif command == A_WRTE:
            stream = self._streams.get(arg1)
            if stream is None:
                self.send_message(A_CLSE, 0, arg0)
            else:
                stream._deliver(data)
        elif command == A_CLSE:
            stream = self._streams.pop(arg1, None)
            if stream is not None:
                stream._closed_by_peer()

    def _send_token(self) -> None:
        self._token = new_token()
        self.send_message(A_AUTH, ADB_AUTH_TOKEN, 0, self._token)

    def _authenticate(self, kind: int, data: bytes) -> None:
        """A signature of our token by a trusted key (or a new key the phone is told to accept) connects."""
        if kind == ADB_AUTH_SIGNATURE:
            token, self._token = self._token, b""  # each token is good for one try
            if token and self.auth.verify(token, data):
                self._complete_handshake()
                return
            self._auth_failures += 1
            if self._auth_failures > MAX_AUTH_FAILURES:
                raise ProtocolViolation(f"more than {MAX_AUTH_FAILURES} bad signatures")
            self._send_token()
        elif kind == ADB_AUTH_RSAPUBLICKEY and self.auth.offer(data):
            self._complete_handshake()
        # else (a key not accepted): like a phone whose user never answers the prompt, nothing is sent

    def _complete_handshake(self) -> None:
        self._connected = True
        self.sock.settimeout(None)
        version = min(A_VERSION, max(self._peer_version, A_VERSION_MIN))
        self.send_message(A_CNXN, version, MAX_PAYLOAD_BYTES, self.banner.encode())

    def _open(self, remote_id: int, destination: str) -> None:
        try:
            runner = self.services.open_service(destination)
        except Exception:
            log.exception("service %r failed to open", destination)
            runner = None
        if runner is None:
            self.send_message(A_CLSE, 0, remote_id)
            return
        local_id = self._next_id
        self._next_id += 1
        stream = Stream(self, local_id, remote_id)
        self._streams[local_id] = stream
        self.send_message(A_OKAY, local_id, remote_id)
        threading.Thread(
            target=self._run_service, args=(runner, stream, destination), daemon=True, name=f"adb-{local_id}"
        ).start()

    def _run_service(self, runner: ServiceRunner, stream: Stream, destination: str) -> None:
        try:
            runner(stream)
        except (StreamClosed, OSError):
            pass
        except Exception:
            log.exception("service %r crashed", destination)
        finally:
            stream.close()
            self._streams.pop(stream.local_id, None)

    def _close_all(self) -> None:
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream._closed_by_peer()


class AdbDaemon:
    """Accepts adb server connections on ``127.0.0.1:port`` and serves each on its own thread."""

    def __init__(self, banner: str, services: ServiceFactory, auth: Authorizer, *, host: str = "127.0.0.1") -> None:
        self.banner = banner
        self.services = services
        self.auth = auth
        self.host = host
        self._listener: socket.socket | None = None
        self._connections: dict[socket.socket, AdbConnection] = {}  # in the order accepted
        self._lock = threading.Lock()

    def bind(self, port: int, *, avoid: range = range(5555, 5586)) -> int:
        """Listen on ``port`` (0 = any free port outside ``avoid``, the range adb servers scan)."""
        for _ in range(50):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, port))
            bound_port = int(listener.getsockname()[1])
            if port == 0 and bound_port in avoid:
                listener.close()
                continue
            listener.listen(8)
            self._listener = listener
            return bound_port
        raise OSError("could not find a free port outside the adb scan range")

    def serve_forever(self) -> None:
        assert self._listener is not None, "bind() first"
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # listener closed by shutdown()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = AdbConnection(sock, self.banner, self.services, self.auth)
            if not self._admit(sock, connection):
                log.warning("refusing a connection: %d authenticated ones served already", MAX_CONNECTIONS)
                sock.close()
                continue
            threading.Thread(target=self._serve_one, args=(sock, connection), daemon=True, name="adb-conn").start()

    def _admit(self, sock: socket.socket, connection: AdbConnection) -> bool:
        """Room for one more: when full, the oldest peer still not authenticated makes way (so idle
        peers cannot lock the adb server out); with every slot authenticated, the newcomer is refused."""
        with self._lock:
            if len(self._connections) >= MAX_CONNECTIONS:
                pending = next((s for s, c in self._connections.items() if not c.authenticated), None)
                if pending is None:
                    return False
                del self._connections[pending]
                with contextlib.suppress(OSError):
                    pending.shutdown(socket.SHUT_RDWR)
            self._connections[sock] = connection
            return True

    def _serve_one(self, sock: socket.socket, connection: AdbConnection) -> None:
        try:
            connection.serve()
        finally:
            with self._lock:
                self._connections.pop(sock, None)
            with contextlib.suppress(OSError):
                sock.close()

    def shutdown(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
