"""Benchmark (not a test): ``edgekit push`` against the stock ``adb push`` and ``scp``.

Starts one emulated phone and one emulated board (private adb server, throw-away EDGEKIT_HOME), pushes
an artifact of ``--size-mb`` random bytes plus a manifest to each with edgekit (content-addressed,
hashed on the device, atomic rename) and with the stock client of that transport, and reports
throughput ratios plus the time edgekit takes to notice that an artifact is already there and skip it.
Every timing is the median of ``--repeats`` runs. Writes ``bench/results/push.json`` and
``bench/results/push.md``.

Run: ``.venv/bin/python bench/push.py [--size-mb 100] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _make_artifact(directory: Path, size_mb: int) -> Path:
    directory.mkdir(parents=True)
    with (directory / "model.bin").open("wb") as fh:
        for _ in range(size_mb):
            fh.write(os.urandom(1_000_000))
    (directory / "manifest.json").write_text(json.dumps({"format": "bench", "size_mb": size_mb}))
    return directory


def _timed(argv: list[str]) -> float:
    start_s = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start_s


def _stock_argv(entry: Any, artifact: Path, remote_dir: str) -> list[str]:
    if entry.transport == "adb":
        return ["adb", "-s", entry.serial, "push", str(artifact), remote_dir]
    return ["scp", "-q", "-r", "-F", entry.address.ssh_config, str(artifact), f"{entry.name}:{remote_dir}"]


def _bench_device(name: str, artifact: Path, repeats: int) -> dict[str, Any]:
    from edgekit import inventory
    from edgekit.devices.push import digest_artifact, push_artifact

    entry = inventory.get(name)
    workdir = entry.resolved_workdir()
    total_bytes = digest_artifact(artifact).total_bytes
    push_s, skip_s, stock_s = [], [], []
    with inventory.connect(entry) as device:
        device.run(["mkdir", "-p", workdir], check=True)
        for _ in range(repeats):
            device.run(["rm", "-rf", f"{workdir}/artifacts", f"{workdir}/stock"], check=True)
            result = push_artifact(device, artifact, workdir, reopen=lambda: inventory.connect(entry))
            assert not result.skipped
            push_s.append(result.seconds)
            skipped = push_artifact(device, artifact, workdir)
            assert skipped.skipped
            skip_s.append(skipped.seconds)
            device.run(["rm", "-rf", f"{workdir}/stock"], check=True)
            stock_s.append(_timed(_stock_argv(entry, artifact, f"{workdir}/stock")))
    edgekit_s, stock_med_s = statistics.median(push_s), statistics.median(stock_s)
    return {
        "device": name,
        "transport": entry.transport,
        "stock_tool": "adb push" if entry.transport == "adb" else "scp",
        "bytes": total_bytes,
        "edgekit_push_s": round(edgekit_s, 3),
        "edgekit_mb_per_s": round(total_bytes / 1e6 / edgekit_s, 1),
        "stock_s": round(stock_med_s, 3),
        "stock_mb_per_s": round(total_bytes / 1e6 / stock_med_s, 1),
        "throughput_ratio": round(stock_med_s / edgekit_s, 3),
        "skip_present_s": round(statistics.median(skip_s), 3),
        "runs_edgekit_s": [round(s, 3) for s in push_s],
        "runs_stock_s": [round(s, 3) for s in stock_s],
        "runs_skip_s": [round(s, 3) for s in skip_s],
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# push: edgekit vs stock clients ({report['size_mb']} MB artifact, median of "
        f"{report['repeats']} runs)",
        "",
        "| device | transport | edgekit s | edgekit MB/s | stock tool | stock s | stock MB/s "
        "| throughput ratio (edgekit/stock) | skip already-present s |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in report["devices"]:
        lines.append(
            f"| {row['device']} | {row['transport']} | {row['edgekit_push_s']} | {row['edgekit_mb_per_s']} "
            f"| {row['stock_tool']} | {row['stock_s']} | {row['stock_mb_per_s']} | {row['throughput_ratio']} "
            f"| {row['skip_present_s']} |"
        )
    lines += [
        "",
        f"Local hashing of the artifact (part of every edgekit push): {report['local_hash_s']} s. "
        f"Host: {report['host']['cpus']} CPUs, {report['host']['platform']}. Emulated devices on loopback.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        os.environ["EDGEKIT_HOME"] = str(Path(tmp) / "home")
        adb_port = str(_free_port())
        os.environ["ANDROID_ADB_SERVER_PORT"] = adb_port
        from edgekit.devices.push import digest_artifact
        from edgekit.emulator import manager

        artifact = _make_artifact(Path(tmp) / "artifact", args.size_mb)
        start_s = time.perf_counter()
        digest_artifact(artifact)
        local_hash_s = time.perf_counter() - start_s
        try:
            phone = manager.start("phone", "bench-phone")
            board = manager.start("board", "bench-board")
            rows = [_bench_device(st.name, artifact, args.repeats) for st in (phone, board)]
        finally:
            manager.stop_all()
            subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30, check=False)

    report = {
        "benchmark": "push",
        "size_mb": args.size_mb,
        "repeats": args.repeats,
        "local_hash_s": round(local_hash_s, 3),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "devices": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "push.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "push.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
