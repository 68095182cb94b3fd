"""Process launcher that runs INSIDE an emulated phone's sandbox (one per phone, standard library only).

The phone starts one sandbox per device (its own PID namespace and mount view) with this script in
it, listening on a unix socket. For every shell command the daemon connects, sends a length-prefixed
JSON request (argv, env, cwd, tty) with the command's stdin/stdout/stderr attached as file
descriptors, and gets back ``P <pid>`` and later ``X <exit code>``. Closing the connection early kills
the command's process group. Because every command of a device starts here, ``ps`` in one shell sees
the device's other processes, and background processes outlive the shell that started them.

It must stay free of edgekit imports: it runs with the host interpreter in isolated mode and sees only
the paths the sandbox exposes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _make_controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _read_exact(conn: socket.socket, n_bytes: int, first: bytes = b"") -> bytes:
    data = bytearray(first)
    while len(data) < n_bytes:
        chunk = conn.recv(n_bytes - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _serve(conn: socket.socket) -> None:
    fds: list[int] = []
    try:
        msg, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
        if len(msg) < 4 or len(fds) != 3:
            return
        (length,) = struct.unpack("<I", msg[:4])
        request = json.loads(_read_exact(conn, length, msg[4:]))
        try:
            proc = subprocess.Popen(
                request["argv"],
                stdin=fds[0],
                stdout=fds[1],
                stderr=fds[2],
                cwd=request.get("cwd", "/"),
                env=request["env"],
                start_new_session=True,
                preexec_fn=_make_controlling_tty if request.get("tty") else None,
            )
        except OSError as exc:
            os.write(fds[2], f"{request['argv'][0]}: {exc.strerror}\n".encode())
            conn.sendall(b"X 127\n")
            return
        finally:
            for fd in fds:
                os.close(fd)
            fds = []
        conn.sendall(f"P {proc.pid}\n".encode())
        threading.Thread(target=_kill_on_hangup, args=(conn, proc), daemon=True).start()
        conn.sendall(f"X {_exit_status(proc.wait())}\n".encode())
    except (OSError, EOFError, ValueError, KeyError):
        pass
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        conn.close()


def _kill_on_hangup(conn: socket.socket, proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        while conn.recv(64):
            pass
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def main(socket_path: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(64)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1])
