"""A Ray node for one host of a multi-host farm: it advertises the host's devices and runs their jobs.

``start_node`` spawns ``python -m edgekit.farm.ray_node serve ...`` in its own session (so stopping it
stops its raylet, object store, workers and agents as one process group) and waits until it is ready.
That process starts a Ray node on 127.0.0.1 with one custom resource per device of the host's
inventory (``device_resource(name)``, amount 1), publishes the device entries (name, transport, tags)
in the cluster's key-value store so a driver can resolve tags ("all phones"), and blocks until it is
signalled. A job task that requests a device's resource can only land on the node that has it.

Why not ``ray start``: Ray 2.60's CLI turns ``--node-ip-address=127.0.0.1`` (and a worker's
``--address=127.0.0.1:P``) into the host's first routable address, so a "local" cluster listens on the
LAN. The node here is built from Ray's own ``Node``/``RayParams`` with 127.0.0.1 given as is, which is
what ``ray start --block`` does minus that rewrite; every listener stays on loopback.

This module starts, publishes and stops nodes; it must not run jobs (``ray_backend`` does) and must
not import Ray at module level (Ray is the optional extra ``edgekit[ray]``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import inventory
from edgekit.errors import ConfigError, EdgekitError, RayNodeError
from edgekit.farm.backend import device_resource
from edgekit.inventory import DeviceEntry

LOOPBACK = "127.0.0.1"
KV_NAMESPACE = "edgekit_farm"
KV_DEVICE_PREFIX = "device/"
INVENTORY_ENV = "EDGEKIT_FARM_INVENTORY"  # the node's inventory file, for the job tasks it runs
NODE_TAG_ENV = "EDGEKIT_RAY_NODE"  # every process of a node inherits it: how stop_node finds stragglers
READY_FILE = "node.json"
LOG_FILE = "node.log"
DEFAULT_OBJECT_STORE_MB = 256


# Ray's own switch: with it off, Ray resolves "127.0.0.1" to 127.0.0.1 instead of the host's routable
# address (it reads it once, when ray is first imported). Drivers and nodes of a loopback cluster set it.
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def import_ray(*, loopback: bool) -> Any:
    """The ``ray`` module, or a one-line error naming the extra; ``loopback`` keeps Ray on 127.0.0.1."""
    if loopback and "ray" not in sys.modules:
        os.environ[LOOPBACK_SWITCH] = "0"
    try:
        import ray
    except ImportError as exc:
        raise RayNodeError("Ray is not installed; install the extra: pip install 'edgekit[ray]'") from exc
    if loopback:
        from ray._private import ray_constants

        if ray_constants.ENABLE_RAY_CLUSTER:
            raise RayNodeError(f"ray was imported before edgekit could keep it on 127.0.0.1; "
                               f"set {LOOPBACK_SWITCH}=0 in the environment")
    return ray


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


@dataclass
class NodeInfo:
    """A running node process: what drivers and other nodes need, and what stops it."""

    address: str  # the cluster's GCS address, 127.0.0.1:PORT (the head's own for a head)
    head: bool
    pid: int  # the serve process; it leads its own process group
    node_id: str
    temp_dir: str
    log_path: str
    devices: list[str] = field(default_factory=list)

    def stop(self, grace_s: float = 15.0) -> None:
        stop_node(self, grace_s=grace_s)

    def kill(self) -> None:
        """SIGKILL every process of the node at once (a host that crashed), no cleanup."""
        _signal_group(self.pid, signal.SIGKILL)
        _wait_gone(self.pid, 10.0)
        sweep(self.temp_dir)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def node_devices(inventory_file: str | Path | None) -> list[DeviceEntry]:
    """The devices a node advertises: its inventory minus the built-in ``local`` device (every host has
    one of that name, so it cannot identify a host in a cluster)."""
    return [e for e in inventory.load(inventory_file) if e.origin != "builtin"]


def entry_record(entry: DeviceEntry) -> dict[str, Any]:
    """What a node publishes about a device: enough for a driver to list and select it."""
    record = entry.model_dump(mode="json", by_alias=True, exclude_none=True)
    record["origin"] = entry.origin
    return record


def entry_from_record(record: dict[str, Any]) -> DeviceEntry:
    data = dict(record)
    origin = str(data.pop("origin", "file"))
    entry = DeviceEntry.model_validate(data)
    entry._origin = origin
    return entry


# ---- the driver / test side: start and stop a node process ----


def start_node(
    *,
    head: bool,
    address: str | None,
    inventory: str | Path | None,
    port: int | None,
    temp_dir: Path | None,
    object_store_mb: int = DEFAULT_OBJECT_STORE_MB,
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 90.0,
    node_ip: str = LOOPBACK,
) -> NodeInfo:
    """Start a node process on 127.0.0.1 and return once it has joined and published its devices.

    ``head``: start a new cluster whose GCS listens on ``port`` (a free one when None); otherwise join
    the cluster at ``address`` (``127.0.0.1:PORT``). ``temp_dir`` is Ray's session directory root for
    this node; keep it short, Ray's unix socket paths must fit in 107 characters. ``env`` replaces the
    node's environment (its ``EDGEKIT_HOME`` decides which devices and cache it has). ``node_ip`` is
    the address the node listens on and advertises: loopback by default, the host's address on a
    network for a cluster that spans machines.
    """
    if head == (address is not None):
        raise RayNodeError("start a node either as --head or with --address of an existing head")
    if not ray_installed():
        raise RayNodeError("Ray is not installed; install the extra: pip install 'edgekit[ray]'")
    temp = Path(temp_dir) if temp_dir is not None else _default_temp_dir()
    temp.mkdir(parents=True, exist_ok=True)
    ready = temp / READY_FILE
    with contextlib.suppress(FileNotFoundError):
        ready.unlink()
    argv = [sys.executable, "-m", "edgekit.farm.ray_node", "serve", "--temp-dir", str(temp),
            "--ready-file", str(ready), "--object-store-mb", str(object_store_mb), "--node-ip", node_ip]
    if head:
        argv += ["--head", "--port", str(port or free_port())]
    else:
        assert address is not None
        argv += ["--address", address]
    if inventory is not None:
        argv += ["--inventory", str(Path(inventory).expanduser().resolve())]
    log_path = temp / LOG_FILE
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={**(os.environ if env is None else env), NODE_TAG_ENV: str(temp)})
    deadline = time.monotonic() + ready_timeout_s
    while not ready.is_file():
        if proc.poll() is not None:
            raise RayNodeError(f"ray node exited with code {proc.returncode} while starting: "
                               f"{_tail(log_path)}")
        if time.monotonic() > deadline:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise RayNodeError(f"ray node did not start within {ready_timeout_s:g}s: {_tail(log_path)}")
        time.sleep(0.1)
    data = json.loads(ready.read_text())
    return NodeInfo(address=data["address"], head=head, pid=proc.pid, node_id=data["node_id"],
                    temp_dir=str(temp), log_path=str(log_path), devices=list(data["devices"]))


def stop_node(info: NodeInfo, *, grace_s: float = 15.0) -> None:
    """SIGTERM the node (it stops its Ray processes), SIGKILL its process group if it does not go, then
    any process of this node left over (Ray's workers leave the group but keep the node's tag)."""
    _signal_group(info.pid, signal.SIGTERM)
    if not _wait_gone(info.pid, grace_s):
        _signal_group(info.pid, signal.SIGKILL)
        _wait_gone(info.pid, 10.0)
    sweep(info.temp_dir)


def sweep(temp_dir: str | Path) -> int:
    """SIGKILL every process tagged as belonging to the node with this temp dir; how many there were.

    Only processes that inherited this node's tag match, so another cluster on the host is untouched."""
    import psutil

    tag = str(temp_dir)
    killed = 0
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and proc.environ().get(NODE_TAG_ENV) == tag:
                proc.kill()
                killed += 1
    return killed


def _default_temp_dir() -> Path:
    return Path("/tmp") / f"ekray-{os.getpid()}-{int(time.time() * 1000) % 10**8}"


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_gone(pid: int, wait_s: float) -> bool:
    """Reap ``pid`` if it is our child and wait until it is gone; True if it went in time."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return True
        except ChildProcessError:  # not our child: poll for existence instead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.05)
    return False


def _tail(path: Path, n_chars: int = 800) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " ".join(text[-n_chars:].split())


# ---- the node process itself ----


def _write_ready(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _publish(gcs_client: Any, entries: list[DeviceEntry], timeout_s: float = 30.0) -> None:
    for entry in entries:
        key = (KV_DEVICE_PREFIX + entry.name).encode()
        value = json.dumps(entry_record(entry)).encode()
        gcs_client.internal_kv_put(key, value, True, KV_NAMESPACE.encode(), timeout=timeout_s)


def serve(*, head: bool, address: str | None, port: int | None, inventory_file: str | None,
          temp_dir: str, ready_file: str, object_store_mb: int, node_ip: str = LOOPBACK) -> int:
    """Run one Ray node until SIGTERM/SIGINT; see the module docstring."""
    ray = import_ray(loopback=is_loopback(node_ip))
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    entries = node_devices(inventory_file)
    names = [e.name for e in entries]
    if inventory_file is not None:
        os.environ[INVENTORY_ENV] = inventory_file  # inherited by the raylet and its job workers
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    params: dict[str, Any] = {
        "node_ip_address": node_ip,
        # Farm tasks take num_cpus=0, so CPUs only size Ray's pool of idle workers; one keeps it small (one
        # per device measured no faster in bench/farm.py: a new farm is a new Ray job, with new workers).
        "num_cpus": 1,
        "num_gpus": 0,
        "resources": {device_resource(name): 1.0 for name in names},
        "object_store_memory": object_store_mb * 1024 * 1024,
        "temp_dir": temp_dir,
        "include_dashboard": False,
        "dashboard_host": node_ip,
        "dashboard_port": free_port(),
        "min_worker_port": 0,
        "max_worker_port": 0,
        "node_manager_port": 0,
        "metrics_export_port": free_port(),
        "runtime_env_agent_port": free_port(),
        "dashboard_agent_listen_port": free_port(),
    }
    if head:
        params["gcs_server_port"] = port or free_port()
    else:
        assert address is not None
        params["gcs_address"] = address
        params["include_log_monitor"] = False
    ray_params = RayParams(**params)
    node = Node(ray_params, head=head, shutdown_at_exit=True, spawn_reaper=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        _publish(node.get_gcs_client(), entries)
        _write_ready(Path(ready_file), {
            "address": node.gcs_address, "node_id": node.node_id, "devices": names, "pid": os.getpid(),
            "ray": ray.__version__,
        })
        print(f"edgekit ray node {node.node_id} ({'head' if head else 'worker'}) on {node.gcs_address}: "
              f"devices {', '.join(names) or 'none'}", flush=True)
        while not stop.wait(1.0):
            dead = [p.process.pid for p in node.dead_processes()] if hasattr(node, "dead_processes") else []
            if dead:
                print(f"ray processes {dead} died; stopping the node", flush=True)
                return 1
        return 0
    finally:
        node.kill_all_processes(check_alive=False, allow_graceful=True)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edgekit.farm.ray_node")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run a node in the foreground until signalled")
    run.add_argument("--head", action="store_true")
    run.add_argument("--address")
    run.add_argument("--port", type=int)
    run.add_argument("--inventory")
    run.add_argument("--temp-dir", required=True)
    run.add_argument("--ready-file", required=True)
    run.add_argument("--object-store-mb", type=int, default=DEFAULT_OBJECT_STORE_MB)
    run.add_argument("--node-ip", default=LOOPBACK)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        return serve(head=args.head, address=args.address, port=args.port, inventory_file=args.inventory,
                     temp_dir=args.temp_dir, ready_file=args.ready_file, object_store_mb=args.object_store_mb,
                     node_ip=args.node_ip)
    except (ConfigError, EdgekitError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "INVENTORY_ENV",
    "KV_DEVICE_PREFIX",
    "KV_NAMESPACE",
    "NodeInfo",
    "RayNodeError",
    "entry_from_record",
    "entry_record",
    "node_devices",
    "start_node",
    "stop_node",
]
