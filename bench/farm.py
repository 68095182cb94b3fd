"""Benchmark (not a test): farm scheduling over 1, 2, 4 and 8 emulated devices, locally (and on Ray).

A farm of short jobs (tiny-llama, onnx-fp32, ``--jobs-per-device`` workloads of prompt 8 / gen 8 / one
run) runs over N emulated devices (phones and boards alternating, a private adb server, a throw-away
EDGEKIT_HOME). For each N it reports the farm's wall time against the ideal, the busiest device's own
work (the sum of its jobs' wall times on the device host), their ratio (1.0 = no scheduling cost and
perfect parallelism), and the per-job scheduling overhead: (wall - ideal) per job of the busiest device,
and its dispatch part (submit-to-result on the driver minus the job's own time). A warm-up farm first
pushes the agent and the artifact to every device, so the rows measure scheduling, not first pushes.
All emulated devices share this host's CPUs, so the busiest device's own time grows with N too: read
the ratios, not the absolute seconds.

``--ray ADDRESS`` measures the same farms through ``RayBackend`` on a running cluster (its devices come
from the cluster's nodes) and adds ``backend: ray`` rows to the results, keeping the local rows.
``--ray local`` starts that cluster for the run: a head and a second node on 127.0.0.1, each with its
own EDGEKIT_HOME, adb server and half of the emulated devices (phones and boards alternating, named
so that the first N devices alternate between the two nodes), and stops it afterwards.
Writes ``bench/results/farm.json`` and ``bench/results/farm.md``.

Run: ``.venv/bin/python bench/farm.py [--devices 1,2,4,8] [--jobs-per-device 4] [--ray ADDRESS|local]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BackendFactory = Callable[[], Any]  # () -> edgekit.farm.backend.Backend


def _workloads(count: int) -> dict[str, dict[str, Any]]:
    return {f"p{8 + i}": {"prompt_len": 8 + i, "gen_len": 8, "runs": 1, "warmup": 0, "baseline_s": 0.1,
                          "cooldown_s": 0.0} for i in range(count)}  # fmt: skip


def _farm_file(directory: Path, name: str, devices: list[str], jobs_per_device: int) -> Path:
    path = directory / f"{name}.yaml"
    spec = {"name": name, "models": ["tiny-llama"], "recipes": ["onnx-fp32"], "devices": devices,
            "workloads": _workloads(jobs_per_device), "retries": 1, "backoff_s": 0.5, "quarantine_after": 5}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def measure(factory: BackendFactory, devices: list[str], jobs_per_device: int, directory: Path,
            name: str) -> dict[str, Any]:
    """One farm over ``devices`` through a fresh backend from ``factory``: wall, ideal, overhead."""
    from rich.console import Console

    from edgekit.farm.config import load_farm
    from edgekit.farm.scheduler import run_farm

    farm = load_farm(_farm_file(directory, name, devices, jobs_per_device))
    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - closed with the process
    result = run_farm(farm, factory(), console=quiet, live=False)
    if result.ok != len(devices) * jobs_per_device:
        raise RuntimeError(f"farm {name}: {result.summary()}; failures: {result.failures[:3]}")
    busiest, ideal_s = max(result.device_seconds.items(), key=lambda item: item[1])
    overheads = [j.latency_s - j.seconds for j in result.jobs]
    busiest_jobs = sum(1 for j in result.jobs if j.device == busiest)
    return {
        "devices": len(devices),
        "jobs": len(result.jobs),
        "wall_s": round(result.wall_s, 2),
        "ideal_s": round(ideal_s, 2),
        "wall_over_ideal": round(result.wall_s / ideal_s, 3),
        "job_s_median": round(statistics.median(j.seconds for j in result.jobs), 3),
        "overhead_per_job_s": round((result.wall_s - ideal_s) / busiest_jobs, 3),
        "dispatch_overhead_s_median": round(statistics.median(overheads), 3),
        "dispatch_overhead_s_max": round(max(overheads), 3),
    }


def _start_devices(count: int, directory: Path) -> Path:
    """``count`` emulated devices (phone, board, phone, ...) and an inventory file naming them."""
    from edgekit.emulator import manager
    from edgekit.inventory import emulated_entry

    entries = []
    for index in range(count):
        kind = "phone" if index % 2 == 0 else "board"
        entry = emulated_entry(manager.start(kind, f"{kind}-{index // 2 + 1}", ready_timeout_s=60.0))
        data = entry.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["python"] = sys.executable
        entries.append(data)
    inventory = directory / "devices.yaml"
    inventory.write_text(yaml.safe_dump({"devices": entries}, sort_keys=False))
    return inventory


def local_rows(args: argparse.Namespace, directory: Path) -> list[dict[str, Any]]:
    from edgekit.emulator import manager
    from edgekit.farm.scheduler import LocalBackend

    os.environ["ANDROID_ADB_SERVER_PORT"] = str(_free_port())
    try:
        inventory = _start_devices(max(args.devices), directory)
        names = [d["name"] for d in yaml.safe_load(inventory.read_text())["devices"]]

        def factory() -> Any:
            return LocalBackend(inventory)

        measure(factory, names, 1, directory, "warmup")
        rows = []
        for count in args.devices:
            row = measure(factory, names[:count], args.jobs_per_device, directory, f"local-{count}")
            rows.append({"backend": "local", **row})
            print(json.dumps(rows[-1]), flush=True)
        return rows
    finally:
        manager.stop_all(grace_s=5.0)
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30, check=False)


def ray_rows(args: argparse.Namespace, directory: Path) -> list[dict[str, Any]]:
    """The same farms through ``RayBackend(args.ray)``; devices are the ones the cluster advertises."""
    from edgekit.farm.ray_backend import RayBackend

    def factory() -> Any:
        return RayBackend(args.ray)

    probe = factory()
    try:
        names = sorted(e.name for e in probe.devices() if e.name != "local")
    finally:
        probe.close()
    measure(factory, names, 1, directory, "ray-warmup")
    rows = []
    for count in [c for c in args.devices if c <= len(names)]:
        row = measure(factory, names[:count], args.jobs_per_device, directory, f"ray-{count}")
        rows.append({"backend": "ray", **row})
        print(json.dumps(rows[-1]), flush=True)
    return rows


@contextlib.contextmanager
def local_ray_cluster(count: int, directory: Path) -> Iterator[str]:
    """A two-node Ray cluster on 127.0.0.1 with ``count`` emulated devices split between the nodes;
    yields the head's address. Device ``d<i>-<kind>`` is on node ``a`` for odd i, ``b`` for even i, so
    the sorted first N devices always span both nodes once N >= 2."""
    from edgekit.emulator import manager
    from edgekit.farm.ray_node import start_node, stop_node
    from edgekit.inventory import emulated_entry

    hosts: dict[str, dict[str, Any]] = {}
    for label in ("a", "b"):
        home = directory / f"host-{label}"
        home.mkdir(parents=True)
        temp = Path(tempfile.mkdtemp(prefix=f"ekb{label}-", dir="/tmp"))  # short: Ray's socket paths
        hosts[label] = {"home": home, "adb": _free_port(), "temp": temp, "entries": [], "node": None}
    saved = {k: os.environ.get(k) for k in ("EDGEKIT_HOME", "ANDROID_ADB_SERVER_PORT", "EDGEKIT_CACHE")}

    def host_env(host: dict[str, Any]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_CACHE"}
        return {**env, "EDGEKIT_HOME": str(host["home"]), "ANDROID_ADB_SERVER_PORT": str(host["adb"])}

    def use(env: dict[str, str]) -> None:
        os.environ.pop("EDGEKIT_CACHE", None)
        os.environ.update({k: env[k] for k in ("EDGEKIT_HOME", "ANDROID_ADB_SERVER_PORT")})

    def restore() -> None:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    try:
        for index in range(count):
            host = hosts["a" if index % 2 == 0 else "b"]
            kind = "phone" if index % 2 == 0 else "board"
            use(host_env(host))
            entry = emulated_entry(manager.start(kind, f"d{index + 1}-{kind}", ready_timeout_s=60.0))
            data = entry.model_dump(mode="json", by_alias=True, exclude_none=True)
            data["python"] = sys.executable
            host["entries"].append(data)
        restore()
        for host in hosts.values():
            (host["home"] / "devices.yaml").write_text(yaml.safe_dump({"devices": host["entries"]}))
        head = hosts["a"]
        head["node"] = start_node(head=True, address=None, inventory=head["home"] / "devices.yaml", port=None,
                                  temp_dir=head["temp"], env=host_env(head))
        other = hosts["b"]
        other["node"] = start_node(head=False, address=head["node"].address,
                                   inventory=other["home"] / "devices.yaml", port=None, temp_dir=other["temp"],
                                   env=host_env(other))
        yield str(head["node"].address)
    finally:
        for host in reversed(list(hosts.values())):
            if host["node"] is not None:
                stop_node(host["node"])
            use(host_env(host))
            manager.stop_all(grace_s=5.0)
            subprocess.run(["adb", "-P", str(host["adb"]), "kill-server"], capture_output=True, timeout=30,
                           check=False)
            shutil.rmtree(host["temp"], ignore_errors=True)
        restore()


def _free_port() -> int:
    import socket

    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in range(5555, 5586) and port != 5037:
            return port


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# farm: wall time vs the busiest device's own work ({report['jobs_per_device']} short jobs per device)",
        "",
        "| backend | devices | jobs | wall s | ideal s | wall / ideal | median job s | overhead per job s "
        "| dispatch overhead median s | dispatch overhead max s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['backend']} | {row['devices']} | {row['jobs']} | {row['wall_s']} | {row['ideal_s']} "
            f"| {row['wall_over_ideal']} | {row['job_s_median']} | {row['overhead_per_job_s']} "
            f"| {row['dispatch_overhead_s_median']} | {row['dispatch_overhead_s_max']} |"
        )
    lines += [
        "",
        "ideal = the busiest device's summed job time (wall time of each job on its device's host); "
        "overhead per job = (wall - ideal) / the busiest device's job count: everything the farm adds "
        "around the jobs (start: inventory, store, export cache hit; between jobs: store ingest, dispatch, "
        "polling). Dispatch overhead = submit-to-result on the driver minus the job's own time. "
        f"Host: {report['host']['cpus']} CPUs, {report['host']['platform']}; every emulated device runs on "
        "this host, so jobs slow down as devices are added and the ratio is what carries over.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    parser.add_argument("--jobs-per-device", type=int, default=4)
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="measure on this Ray cluster ('local': start a two-node one on 127.0.0.1)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    previous: list[dict[str, Any]] = []
    if (args.out / "farm.json").is_file():
        previous = json.loads((args.out / "farm.json").read_text()).get("rows", [])
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        directory = Path(tmp)
        os.environ["EDGEKIT_HOME"] = str(directory / "home")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        started = time.perf_counter()
        if args.ray == "local":
            with local_ray_cluster(max(args.devices), directory) as address:
                args.ray = address
                rows = [r for r in previous if r["backend"] != "ray"] + ray_rows(args, directory)
        elif args.ray is not None:
            rows = [r for r in previous if r["backend"] != "ray"] + ray_rows(args, directory)
        else:
            rows = local_rows(args, directory) + [r for r in previous if r["backend"] != "local"]
    report = {
        "benchmark": "farm",
        "jobs_per_device": args.jobs_per_device,
        "seconds": round(time.perf_counter() - started, 1),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in (("farm.json", json.dumps(report, indent=2) + "\n"), ("farm.md", _markdown(report))):
        tmp_path = args.out / f".{name}.tmp"
        tmp_path.write_text(text)
        tmp_path.replace(args.out / name)
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
