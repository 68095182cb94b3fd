"""The ``shell:``, ``shell,v2,...:`` and ``exec:`` services of the emulated phone's adb daemon.

v1 (``shell:``/``exec:``) sends the raw output bytes, stdout and stderr mixed, and no exit status.
v2 wraps everything in packets of ``id (1 byte) + length (u32 LE) + data`` with ids stdin 0,
stdout 1, stderr 2, exit 3, close-stdin 4, window-size 5 (ignored here), so exit codes and stderr
reach the host separately. With ``pty`` (or an interactive v1 shell) the command gets a pseudo
terminal and all its output arrives as stdout. The command always runs as ``/system/bin/sh -c CMD``
inside the phone's sandbox; this module never runs anything on the host. A v2 packet's length comes
from the host: stdin is passed on in chunks as it arrives (never gathered whole), and any other packet
over ``MAX_CONTROL_PACKET_BYTES`` closes the stream before a byte of it is read.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edgekit.emulator.adbd import Stream, StreamClosed

log = logging.getLogger(__name__)

ID_STDIN, ID_STDOUT, ID_STDERR, ID_EXIT, ID_CLOSE_STDIN, ID_WINDOW_SIZE = 0, 1, 2, 3, 4, 5
_PACKET_HEADER = struct.Struct("<BI")
_READ_CHUNK_BYTES = 64 * 1024
MAX_CONTROL_PACKET_BYTES = 4096  # close-stdin and window-size packets are a few bytes


@dataclass(frozen=True)
class ShellRequest:
    command: str
    v2: bool
    tty: bool
    term: str | None


def parse_shell_destination(destination: str) -> ShellRequest | None:
    """``shell[,opt...]:CMD`` or ``exec:CMD`` -> request; None if it is not a shell service."""
    if destination.startswith("exec:"):
        return ShellRequest(destination[len("exec:") :], v2=False, tty=False, term=None)
    if not destination.startswith("shell"):
        return None
    head, sep, command = destination.partition(":")
    if not sep or (head != "shell" and not head.startswith("shell,")):
        return None
    options = head.split(",")[1:]
    v2 = "v2" in options
    term = next((o[len("TERM=") :] for o in options if o.startswith("TERM=")), None)
    if "raw" in options:
        tty = False
    elif "pty" in options:
        tty = True
    else:
        tty = not command  # like adbd: an interactive shell gets a terminal, a command does not
    return ShellRequest(command, v2=v2, tty=tty, term=term)


class SpawnedProcess(Protocol):
    """A started command (see ``_sandbox.SandboxProcess``)."""

    def wait(self) -> int: ...
    def kill(self) -> None: ...


Spawner = Callable[[list[str], tuple[int, int, int], bool, dict[str, str]], SpawnedProcess]


def run_shell(stream: Stream, request: ShellRequest, spawn: Spawner) -> None:
    argv = ["/system/bin/sh", "-c", request.command] if request.command else ["/system/bin/sh", "-i"]
    env = {"TERM": request.term} if request.term else {}
    child_fds: list[int] = []
    if request.tty:
        master, slave = os.openpty()
        child_fds = [slave]
        proc = spawn(argv, (slave, slave, slave), True, env)
        stdin_w, readers = master, [(master, ID_STDOUT)]
    else:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe() if request.v2 else (out_r, out_w)
        child_fds = sorted({in_r, out_w, err_w})
        try:
            proc = spawn(argv, (in_r, out_w, err_w), False, env)
        finally:
            for fd in child_fds:
                os.close(fd)
        child_fds = []
        stdin_w = in_w
        readers = [(out_r, ID_STDOUT)] + ([(err_r, ID_STDERR)] if request.v2 else [])
    for fd in child_fds:
        os.close(fd)

    def emit(packet_id: int, data: bytes) -> None:
        stream.send(_PACKET_HEADER.pack(packet_id, len(data)) + data if request.v2 else data)

    pumps = [threading.Thread(target=_pump_output, args=(fd, pid, emit), daemon=True) for fd, pid in readers]
    for pump in pumps:
        pump.start()
    threading.Thread(target=_pump_input, args=(stream, stdin_w, request, proc), daemon=True).start()

    exit_code = proc.wait()
    for pump in pumps:
        pump.join()
    if request.tty:
        with contextlib.suppress(OSError):
            os.close(stdin_w)
    if request.v2 and not stream.closed:
        emit(ID_EXIT, bytes([exit_code & 0xFF]))


def _pump_output(fd: int, packet_id: int, emit: Callable[[int, bytes], None]) -> None:
    try:
        while True:
            try:
                data = os.read(fd, _READ_CHUNK_BYTES)
            except OSError as exc:  # a pty master reads EIO once the last slave closes
                if exc.errno == errno.EIO:
                    return
                raise
            if not data:
                return
            emit(packet_id, data)
    except (StreamClosed, OSError):
        return
    finally:
        if packet_id != ID_STDOUT or not os.isatty(fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to the command's stdin; a command that stopped reading loses the rest."""
    view = memoryview(data)
    with contextlib.suppress(BrokenPipeError):
        while view:
            view = view[os.write(fd, view):]


def _pump_input(stream: Stream, stdin_fd: int, request: ShellRequest, proc: SpawnedProcess) -> None:
    """Feed host input to the command; a host that closes the stream early kills the command."""
    stdin_open = True
    try:
        while True:
            if not request.v2:
                data = stream.recv()
                if stdin_open:
                    _write_all(stdin_fd, data)
                continue
            packet_id, length = _PACKET_HEADER.unpack(stream.read_exact(_PACKET_HEADER.size))
            if packet_id == ID_STDIN:
                while length:  # in pieces: the length is the host's word, not a buffer size
                    data = stream.read_exact(min(length, _READ_CHUNK_BYTES))
                    length -= len(data)
                    if stdin_open:
                        _write_all(stdin_fd, data)
                continue
            if length > MAX_CONTROL_PACKET_BYTES:
                log.warning("shell v2 packet %d of %d bytes (limit %d); closing the stream",
                            packet_id, length, MAX_CONTROL_PACKET_BYTES)
                stream.close()
                return
            stream.read_exact(length)
            if packet_id == ID_CLOSE_STDIN and stdin_open and not request.tty:
                stdin_open = False
                os.close(stdin_fd)
    except (StreamClosed, OSError):
        pass
    finally:
        if stream.closed:
            proc.kill()
        if stdin_open and not request.tty:
            with contextlib.suppress(OSError):
                os.close(stdin_fd)
