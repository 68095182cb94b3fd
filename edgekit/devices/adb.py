"""``AdbDevice``: the device contract over a real adb server, through adbutils.

The server is started when it is not running (``adb_server.ensure_server``; the port comes from the
argument, else ``ANDROID_ADB_SERVER_PORT``, else 5037). Serials of the form ``HOST:PORT`` are
``adb connect``ed first. Commands go through shell v2 when the device offers it (real exit codes,
stderr apart), else through v1 with an exit-status marker and stderr mixed into stdout. argv elements
are quoted with ``shlex.quote`` for the device's POSIX shell. Push and pull speak the sync protocol
here (adbutils' helpers have no progress callback and turn a missing remote file into an empty local
one); a pull STATs first and refuses a missing or non-regular file.

Nothing the device sends is taken on trust (``edgekit.limits``): a packet length is checked against its
cap before anything is read or allocated, a command's output and a pulled file stop at their caps with
``LimitExceeded``, and a transfer during which the device sends nothing and does not close ends after
``stall_s`` with ``DeviceUnreachable``.

Every adbutils/socket exception is translated to ``TransportError`` or ``DeviceUnreachable`` at this
boundary.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import shlex
import stat
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import adbutils
from adbutils.errors import AdbConnectionError, AdbError, AdbTimeout

from edgekit import limits
from edgekit.devices import adb_server
from edgekit.devices.base import CommandResult, Device, DeviceInfo, ProgressFn
from edgekit.errors import (
    CommandTimeout,
    DeviceUnreachable,
    LimitExceeded,
    RemoteFileMissing,
    TransportError,
)

DEFAULT_WORKDIR = "/data/local/tmp/edgekit"
_SYNC_CHUNK_BYTES = 64 * 1024
T = TypeVar("T")
_V1_EXIT_MARKER = "EDGEKIT-EXIT:"
_SHELL_STDOUT, _SHELL_STDERR, _SHELL_EXIT = 1, 2, 3  # shell protocol v2 packet ids
_INFO_SCRIPT = r"""
p() { echo "$1=$(getprop "$2")"; }
p model ro.product.model; p soc ro.soc.model; p soc_maker ro.soc.manufacturer; p hardware ro.hardware
p abi ro.product.cpu.abi; p release ro.build.version.release; p sdk ro.build.version.sdk
echo "cores=$(ls -d /sys/devices/system/cpu/cpu[0-9]* 2>/dev/null | wc -l)"
echo "mem=$(grep MemTotal /proc/meminfo)"
b=/sys/class/power_supply/battery
echo "capacity=$(cat $b/capacity 2>/dev/null)"; echo "status=$(cat $b/status 2>/dev/null)"
echo "battery_temp=$(cat $b/temp 2>/dev/null)"
echo "zone_temp=$(cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null)"
d="$WORKDIR"; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "df=$(df -k "$d" 2>/dev/null | tail -n 1)"
"""


class _Connection(adbutils.AdbConnection):
    """adbutils' connection without its fallback of running ``adb start-server`` when the server does not
    answer: that server listens on the default port (5037) whatever port this device's server has, and is
    left running. A server that went away (restarted by the user, an SDK update) is started again on the
    device's own port by ``AdbDevice`` instead."""

    def _safe_connect(self) -> object:
        return self._create_socket()


class _Client(adbutils.AdbClient):
    def make_connection(self, timeout: float | None = None) -> adbutils.AdbConnection:
        try:
            conn = _Connection(self.host, self.port)
        except TimeoutError as exc:
            raise AdbTimeout("connect to adb server timeout") from exc
        if timeout:
            conn.conn.settimeout(timeout)
        return conn


class AdbDevice(Device):
    transport = "adb"

    def __init__(self, serial: str, *, name: str | None = None, server_port: int | None = None,
                 workdir: str = DEFAULT_WORKDIR, online_timeout_s: float = 20.0,
                 use_shell_v2: bool | None = None) -> None:
        """``use_shell_v2``: None = when the device offers it; False forces the v1 fallback."""
        self.serial = serial
        self.name = name or serial
        self.workdir = workdir
        self.online_timeout_s = online_timeout_s
        self.server_port = adb_server.ensure_server(server_port)
        self._client = _Client(host="127.0.0.1", port=self.server_port)
        self._dev = self._client.device(serial)
        self._features: set[str] | None = None
        self._use_shell_v2 = use_shell_v2
        self._wait_online(connect=True)

    # -- connection ---------------------------------------------------------------------------------
    def _connect(self) -> None:
        try:
            answer = self._client.connect(self.serial, timeout=10)
        except (AdbError, OSError) as exc:
            raise DeviceUnreachable(self.name, f"adb connect failed: {exc}") from exc
        # adbutils hands back the server's answer instead of raising: "unable to connect", "failed ..."
        if "connected to" not in answer:
            raise DeviceUnreachable(self.name, f"adb connect: {answer.strip()}")

    def _state(self) -> str:
        try:
            return self._dev.get_state()
        except AdbConnectionError as exc:  # no server answers on the port: start one there, as at open
            with contextlib.suppress(TransportError):
                adb_server.ensure_server(self.server_port)
            return f"absent ({exc})"
        except (AdbError, OSError) as exc:
            # the server answers get-state for an offline device with the error "device offline"
            return "offline" if "offline" in str(exc) else f"absent ({exc})"

    def _wait_online(self, *, connect: bool = False) -> None:
        """Wait (up to online_timeout_s) for the device to be 'device'.

        A ``HOST:PORT`` serial that is absent is connected; one that stays ``offline`` (the server
        saw the device go away) is disconnected and connected again rather than left to the server's
        own reconnect loop, which retries only every ~10 s.
        """
        tcp = re.fullmatch(r"[^:\s]+:\d+", self.serial) is not None
        deadline = time.monotonic() + self.online_timeout_s
        last_connect = 0.0
        offline_since: float | None = None
        while True:
            state = self._state()
            if state == "device":
                return
            now = time.monotonic()
            offline_since = (offline_since or now) if state == "offline" else None
            stuck_offline = offline_since is not None and now - offline_since > 1.0
            if tcp and (connect or state.startswith("absent") or stuck_offline) and now - last_connect > 1.0:
                last_connect = now
                if stuck_offline:
                    with contextlib.suppress(AdbError, OSError):
                        self._client.disconnect(self.serial)
                    offline_since = None
                with contextlib.suppress(DeviceUnreachable):
                    self._connect()
                continue
            if now > deadline:
                raise DeviceUnreachable(self.name, f"not online after {self.online_timeout_s:g}s "
                                        f"(adb state: {state})")
            time.sleep(0.1)

    def features(self) -> set[str]:
        if self._features is None:
            try:
                self._features = set(self._dev.get_features().split(","))
            except (AdbError, OSError) as exc:
                raise DeviceUnreachable(self.name, f"reading features failed: {exc}") from exc
        return self._features

    # -- commands -----------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, timeout_s: float = 60.0, check: bool = False) -> CommandResult:
        if not argv:
            raise ValueError("argv must not be empty")
        self._wait_online()
        command = " ".join(shlex.quote(str(a)) for a in argv)
        try:
            v2 = "shell_v2" in self.features() if self._use_shell_v2 is None else self._use_shell_v2
            if v2:
                result = self._run_v2(list(argv), command, timeout_s)
            else:
                result = self._run_v1(list(argv), command, timeout_s)
        except AdbTimeout as exc:
            raise CommandTimeout(self.name, argv, timeout_s) from exc
        except (AdbError, OSError) as exc:
            raise DeviceUnreachable(self.name, f"command {list(argv)[:3]} failed: {exc}") from exc
        return result.checked(self.name) if check else result

    def _run_v2(self, argv: list[str], command: str, timeout_s: float) -> CommandResult:
        """Shell protocol v2 with an overall deadline; leaving early closes the stream, which ends
        the command on the device."""
        deadline = time.monotonic() + timeout_s
        caps = limits.current()
        out, err = bytearray(), bytearray()
        with self._dev.open_transport(timeout=timeout_s) as conn:
            conn.send_command(f"shell,v2,raw:{command}")
            conn.check_okay()
            while True:
                packet_id, length = struct.unpack("<BI", _recv_exact(conn, 5, deadline))
                if length > caps.shell_packet_bytes:
                    raise LimitExceeded(self.name, f"command {argv[:3]}: shell packet of {length} bytes",
                                        caps.describe("shell_packet_bytes"))
                data = _recv_exact(conn, length, deadline) if length else b""
                if packet_id in (_SHELL_STDOUT, _SHELL_STDERR):
                    sink = out if packet_id == _SHELL_STDOUT else err
                    if len(sink) + len(data) > caps.command_output_bytes:
                        raise LimitExceeded(self.name, f"output of command {argv[:3]}",
                                            caps.describe("command_output_bytes"))
                    sink += data
                elif packet_id == _SHELL_EXIT:
                    return CommandResult(argv, data[0] if data else 255, bytes(out), bytes(err))

    def _run_v1(self, argv: list[str], command: str, timeout_s: float) -> CommandResult:
        """Shell protocol v1: one stream until the device closes it, read within the deadline and the
        output cap (the exit-status marker line on top of it)."""
        deadline = time.monotonic() + timeout_s
        caps = limits.current()
        cap = caps.command_output_bytes + len(_V1_EXIT_MARKER) + 8
        buffer = bytearray()
        with self._dev.open_transport(timeout=timeout_s) as conn:
            conn.send_command(f"shell:{command}; echo {_V1_EXIT_MARKER}$?")
            conn.check_okay()
            while chunk := _recv_some(conn, min(_SYNC_CHUNK_BYTES, cap + 1 - len(buffer)), deadline):
                buffer += chunk
                if len(buffer) > cap:
                    raise LimitExceeded(self.name, f"output of command {argv[:3]}",
                                        caps.describe("command_output_bytes"))
        output = bytes(buffer)
        at = output.rfind(_V1_EXIT_MARKER.encode())
        if at < 0:
            raise TransportError(self.name, f"shell output of {argv[:3]} lacks the exit marker")
        status = output[at + len(_V1_EXIT_MARKER) :].strip()
        if not status.isdigit() or len(status) > 3:
            raise TransportError(self.name, f"shell output of {argv[:3]} ends in a bad exit status {status[:20]!r}")
        return CommandResult(argv, int(status), output[:at], b"")

    # -- files --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _sync(self, what: str) -> Iterator[adbutils.AdbConnection]:
        """A sync connection whose every read gives up after ``stall_s`` without a byte."""
        self._wait_online()
        caps = limits.current()
        try:
            with self._dev.open_transport(timeout=caps.stall_s) as conn:
                conn.send_command("sync:")
                conn.check_okay()
                yield conn
        except TransportError:
            raise
        except (AdbTimeout, TimeoutError) as exc:
            raise DeviceUnreachable(self.name, f"{what}: the device sent nothing and did not close; gave up "
                                               f"after {caps.describe('stall_s')}") from exc
        except (AdbError, OSError, struct.error) as exc:
            raise DeviceUnreachable(self.name, f"{what} failed: {exc or type(exc).__name__}") from exc

    @staticmethod
    def _request(conn: adbutils.AdbConnection, request_id: bytes, arg: bytes | int) -> None:
        if isinstance(arg, int):
            conn.conn.sendall(request_id + struct.pack("<I", arg))
        else:
            conn.conn.sendall(request_id + struct.pack("<I", len(arg)) + arg)

    @staticmethod
    def _read(conn: adbutils.AdbConnection, n_bytes: int) -> bytes:
        """Exactly ``n_bytes`` (callers check a length the device sent against its cap first)."""
        return _recv_exact(conn, n_bytes, None)

    def _packet_length(self, conn: adbutils.AdbConnection, what: str) -> int:
        """A sync packet's 32-bit length, refused above ``sync_packet_bytes`` before anything is read."""
        (length,) = struct.unpack("<I", self._read(conn, 4))
        caps = limits.current()
        if length > caps.sync_packet_bytes:
            raise LimitExceeded(self.name, f"{what}: sync packet of {length} bytes",
                                caps.describe("sync_packet_bytes"))
        return length

    def _stat(self, conn: adbutils.AdbConnection, remote: str) -> tuple[int, int]:
        self._request(conn, b"STAT", remote.encode())
        reply = self._read(conn, 16)
        if reply[:4] != b"STAT":
            raise TransportError(self.name, f"unexpected sync reply {reply[:4]!r} to STAT")
        mode, size, _mtime = struct.unpack("<III", reply[4:])
        return mode, size

    def _fail_message(self, conn: adbutils.AdbConnection) -> str:
        length = self._packet_length(conn, "sync FAIL message")
        return self._read(conn, length).decode(errors="replace")

    def push(self, local: str, remote: str, *, progress: ProgressFn | None = None) -> None:
        path = Path(local)
        try:
            st = path.stat()
            src = path.open("rb")
        except OSError as exc:
            raise TransportError(self.name, f"cannot read local file {local}: {exc.strerror}") from exc
        total, done = st.st_size, 0
        with src, self._sync(f"push {local} -> {remote}") as conn:
            self._request(conn, b"SEND", f"{remote},{stat.S_IFREG | stat.S_IMODE(st.st_mode)}".encode())
            while chunk := src.read(_SYNC_CHUNK_BYTES):
                self._request(conn, b"DATA", len(chunk))
                conn.conn.sendall(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            self._request(conn, b"DONE", int(st.st_mtime))
            status = self._read(conn, 4)
            if status == b"FAIL":
                raise TransportError(self.name, f"push to {remote} refused: {self._fail_message(conn)}")
            if status != b"OKAY":
                raise TransportError(self.name, f"push to {remote}: unexpected reply {status!r}")
            self._read(conn, 4)
            mode, size = self._stat(conn, remote)
            if not stat.S_ISREG(mode) or size != total & 0xFFFFFFFF:
                raise TransportError(self.name, f"push to {remote}: device has {size} bytes, sent {total}")
            self._request(conn, b"QUIT", 0)
        if progress and total == 0:
            progress(0, 0)

    def pull(self, remote: str, local: str, *, progress: ProgressFn | None = None,
             max_bytes: int | None = None) -> None:
        target = Path(local)
        tmp = target.with_name(f".{target.name}.part")
        caps = limits.current()
        cap, limit = ((caps.pull_file_bytes, caps.describe("pull_file_bytes")) if max_bytes is None
                      else (max_bytes, f"max_bytes = {max_bytes} bytes"))
        with self._sync(f"pull {remote} -> {local}") as conn:
            mode, total = self._stat(conn, remote)
            if mode == 0:
                raise RemoteFileMissing(self.name, remote)
            if not stat.S_ISREG(mode):
                raise TransportError(self.name, f"pull: {remote} is not a regular file (mode {mode:o})")
            if total > cap:
                raise LimitExceeded(self.name, f"pull of {remote} ({total} bytes)", limit)
            self._request(conn, b"RECV", remote.encode())
            done = 0
            try:
                with tmp.open("wb") as out:
                    while True:
                        reply = self._read(conn, 4)
                        if reply == b"DONE":
                            self._read(conn, 4)
                            break
                        if reply == b"FAIL":
                            raise TransportError(self.name, f"pull {remote}: {self._fail_message(conn)}")
                        if reply != b"DATA":
                            raise TransportError(self.name, f"pull {remote}: unexpected reply {reply!r}")
                        length = self._packet_length(conn, f"pull {remote}")
                        if done + length > cap:
                            raise LimitExceeded(self.name, f"pull of {remote} (more than {cap} bytes sent)",
                                                limit)
                        out.write(self._read(conn, length))
                        done += length
                        if progress:
                            progress(done, total)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            self._request(conn, b"QUIT", 0)
        if progress and total == 0:
            progress(0, 0)

    # -- facts --------------------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        try:
            result = self.run(["/system/bin/sh", "-c", _INFO_SCRIPT.replace("$WORKDIR", shlex.quote(
                self.workdir))], timeout_s=30)
        except DeviceUnreachable as exc:
            return DeviceInfo(name=self.name, transport=self.transport, reachable=False,
                              extra={"error": exc.message})
        facts = dict(line.split("=", 1) for line in result.text().splitlines() if "=" in line)
        return parse_info(self.name, facts)

    def close(self) -> None:
        self._features = None


def _recv_by(conn: adbutils.AdbConnection, deadline: float | None, recv: Callable[[], T]) -> T:
    """``recv()`` on ``conn`` by ``deadline`` (None: the connection's own timeout); AdbTimeout when late."""
    if deadline is not None:
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise AdbTimeout("deadline")
        conn.conn.settimeout(remaining_s)
    try:
        return recv()
    except TimeoutError as exc:
        raise AdbTimeout("no data before the deadline") from exc


def _recv_some(conn: adbutils.AdbConnection, n_bytes: int, deadline: float | None) -> bytes:
    """Up to ``n_bytes`` (b"" when the device closed); by ``deadline`` or the connection's own timeout."""
    return _recv_by(conn, deadline, functools.partial(conn.conn.recv, n_bytes))


def _recv_exact(conn: adbutils.AdbConnection, n_bytes: int, deadline: float | None) -> bytes:
    """Exactly ``n_bytes`` into one preallocated buffer (callers bound ``n_bytes`` first)."""
    data = bytearray(n_bytes)
    view, got = memoryview(data), 0
    while got < n_bytes:
        count = _recv_by(conn, deadline, functools.partial(conn.conn.recv_into, view[got:]))
        if not count:
            raise AdbError("connection closed by the device")
        got += count
    return bytes(data)


def _num(text: str | None) -> float | None:
    """A finite number the device printed, else None ("nan", "inf" and 1e999 are not facts)."""
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def parse_info(name: str, facts: dict[str, str]) -> DeviceInfo:
    """DeviceInfo from the ``key=value`` lines of the info script."""
    mem = re.search(r"(\d+)\s*kB", facts.get("mem", ""))
    df_fields = facts.get("df", "").split()
    free_kb = _num(df_fields[3]) if len(df_fields) >= 4 else None
    battery_temp = _num(facts.get("battery_temp"))
    zone_temp = _num(facts.get("zone_temp"))
    temperature_c = battery_temp / 10 if battery_temp is not None else (
        zone_temp / 1000 if zone_temp is not None else None)
    status = facts.get("status") or None
    release, sdk = facts.get("release"), facts.get("sdk")
    soc_parts = (facts.get("soc_maker"), facts.get("soc"))
    soc = " ".join(x for x in soc_parts if x) or facts.get("hardware") or None
    cores = _num(facts.get("cores"))
    return DeviceInfo(
        name=name, transport="adb", reachable=True,
        model=facts.get("model") or None,
        soc=soc,
        cores=int(cores) if cores else None,
        abi=facts.get("abi") or None,
        ram_bytes=int(mem.group(1)) * 1024 if mem else None,
        os_version=f"Android {release} (SDK {sdk})" if release else None,
        battery_pct=_num(facts.get("capacity")),
        charging=None if status is None else status in ("Charging", "Full"),
        temperature_c=temperature_c,
        free_bytes=int(free_kb) * 1024 if free_kb is not None else None,
        extra={"battery_status": status, "sdk": sdk},
    )
