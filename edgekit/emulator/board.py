"""An emulated single-board computer (think Raspberry Pi 5 or Jetson) reached over real OpenSSH.

``python -m edgekit.emulator.board serve --state-dir DIR --port PORT [--name NAME]`` runs in the
foreground until SIGTERM/SIGINT. It runs the stock OpenSSH server on 127.0.0.1:PORT inside a
bubblewrap sandbox whose view is the board: host /usr, /etc, /bin, /lib* and the host Python
read-only, the board's own /etc/ssh (host key, sshd_config, authorized client key), a persistent
workdir (/home/edgekit), its own /tmp and a /sys with a power sensor, a thermal zone and cpufreq. Because
sshd itself runs inside the view, every session (shell commands, sftp, scp) sees the same files at the
same paths, and ``ps`` shows only the board's processes.

The board's load is everything sshd runs; the load/power model (``power.py``) turns it into watts,
which this module publishes in the sensor files and which the model integrates into the ground-truth
energy file ``DIR/energy_truth.json``.

It writes nothing outside DIR. Identity (host key, client key) and workdir files survive stop/start.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from edgekit.emulator import _board_files
from edgekit.emulator._board_files import EmulatorError
from edgekit.emulator._ports import port_accepts
from edgekit.emulator.board_sensors import BoardSensors

SSHD = "/usr/sbin/sshd"
TRUTH_FILE = "energy_truth.json"
LOG_FILE = "sshd.log"
_READY_TIMEOUT_S = 20.0


def _lock(state_dir: Path) -> int:
    """Hold an exclusive lock on the state directory for the life of this process."""
    fd = os.open(state_dir / "serve.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise EmulatorError(f"state directory {state_dir} is already served by another board") from exc
    return fd


def _stop_process_group(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace_s)


def serve(state_dir: Path, *, port: int, name: str, model: str | None,
          idle_w: float, per_core_w: float) -> int:
    """Run the board until SIGTERM/SIGINT; returns the process exit code."""
    from edgekit.emulator.power import LoadPowerModel

    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock(state_dir)
    if port_accepts(port):
        raise EmulatorError(f"port {port} on 127.0.0.1 is already taken")
    identity = _board_files.prepare(state_dir, name=name, model=model, port=port)
    sensors = BoardSensors(_board_files.rootfs(state_dir) / "sys", model=identity.model,
                           idle_w=idle_w, per_core_w=per_core_w)
    sensors.create()

    def on_tick(power_w: float) -> None:
        sensors.update(power_w, power.energy_j)

    power = LoadPowerModel(idle_w=idle_w, per_core_w=per_core_w, truth_path=state_dir / TRUTH_FILE,
                           on_tick=on_tick)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # The sandbox options go through a pipe (bwrap --args), so the board's ``ps`` does not show
    # the host paths behind its view.
    options = _board_files.sandbox_argv(state_dir, identity)
    args_read, args_write = os.pipe()
    os.write(args_write, b"".join(arg.encode() + b"\0" for arg in options[1:]))
    os.close(args_write)
    argv = [options[0], "--args", str(args_read), SSHD, "-D", "-e", "-f", "/etc/ssh/sshd_config"]
    try:
        with (state_dir / LOG_FILE).open("ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, pass_fds=(args_read,))
    finally:
        os.close(args_read)
    try:
        power.add_root(proc.pid)
        power.start()
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while not port_accepts(port):
            if proc.poll() is not None or stop.is_set() or time.monotonic() > deadline:
                tail = (state_dir / LOG_FILE).read_text(errors="replace")[-600:].strip()
                print(f"board '{name}': sshd did not come up on port {port}: {tail}", file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(json.dumps({"event": "ready", "name": name, "port": port, "sshd_pid": proc.pid,
                          "user": identity.login_user, "workdir": identity.workdir}), flush=True)
        while not stop.wait(0.2):
            if proc.poll() is not None:
                print(f"board '{name}': sshd exited with code {proc.returncode}", file=sys.stderr)
                return 1
        return 0
    finally:
        _stop_process_group(proc)
        power.stop()
        sensors.close()
        os.close(lock_fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgekit.emulator.board",
                                     description="Emulated single-board computer over OpenSSH.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the board in the foreground until SIGTERM/SIGINT")
    run.add_argument("--state-dir", required=True, type=Path)
    run.add_argument("--port", required=True, type=int)
    run.add_argument("--name", default="board")
    run.add_argument("--model", default=None,
                     help=f"board model string (default: {_board_files.DEFAULT_MODEL})")
    run.add_argument("--idle-w", type=float, default=2.7, help="power with nothing running, watts")
    run.add_argument("--per-core-w", type=float, default=1.2, help="extra power per busy core, watts")
    args = parser.parse_args(argv)
    try:
        return serve(args.state_dir, port=args.port, name=args.name, model=args.model,
                     idle_w=args.idle_w, per_core_w=args.per_core_w)
    except EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
