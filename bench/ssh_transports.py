"""Push throughput of the SSH transports edgekit could use, measured against one emulated board.

Candidates, each with its library defaults (ciphers, window and block sizes) as users get them:
  openssh-scp          stock ``scp`` over a multiplexed connection (ControlMaster/ControlPersist)
  openssh-ssh-cat      stock ``ssh host 'cat > file'`` over the same multiplexed connection, fed
                       from Python in 1 MiB chunks (the way edgekit pushes, with a progress callback)
  asyncssh-sftp        ``asyncssh`` SFTP ``put``
  asyncssh-exec-cat    ``asyncssh`` exec channel running ``cat > file``
  paramiko-sftp        ``paramiko`` SFTP ``put``

The same random file goes to the same board ``--reps`` times per candidate, round-robin over the
candidates; connection setup is outside the timed part (a long-lived device keeps its connection).
The median MB/s (1 MB = 10^6 bytes) is reported, with the host's load average, since on a shared host
single runs vary a lot. Writes ``bench/results/ssh_transports.json`` and ``bench/results/ssh_transports.md``.

    python bench/ssh_transports.py [--size-mb 100] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import paramiko

from edgekit.emulator.board_process import BoardProcess

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK = 1 << 20


class OpenSsh:
    def __init__(self, config: Path, alias: str, control_dir: Path) -> None:
        self.base = ["-F", str(config), "-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir}/%C",
                     "-o", "ControlPersist=120"]
        self.alias = alias
        subprocess.run(["ssh", *self.base, alias, "true"], check=True, timeout=30)

    def push_scp(self, local: Path, remote: str) -> None:
        subprocess.run(["scp", "-q", *self.base, str(local), f"{self.alias}:{remote}"],
                       check=True, timeout=600)

    def push_cat(self, local: Path, remote: str) -> None:
        proc = subprocess.Popen(["ssh", *self.base, self.alias, f"cat > {shlex.quote(remote)}"],
                                stdin=subprocess.PIPE)
        assert proc.stdin is not None
        with local.open("rb") as src:
            while chunk := src.read(CHUNK):
                proc.stdin.write(chunk)
        proc.stdin.close()
        if proc.wait(timeout=600) != 0:
            raise RuntimeError("ssh cat push failed")

    def close(self) -> None:
        subprocess.run(["ssh", *self.base, "-O", "exit", self.alias], capture_output=True, timeout=30)


class AsyncSsh:
    def __init__(self, board: BoardProcess, known_hosts: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncssh.connect(
            "127.0.0.1", port=board.port, username=board.user, client_keys=[str(board.client_key)],
            known_hosts=str(known_hosts), config=[]))

    def push_sftp(self, local: Path, remote: str) -> None:
        async def go() -> None:
            async with self.conn.start_sftp_client() as sftp:
                await sftp.put(str(local), remote)
        self.loop.run_until_complete(go())

    def push_cat(self, local: Path, remote: str) -> None:
        async def go() -> None:
            proc = await self.conn.create_process(f"cat > {shlex.quote(remote)}", encoding=None)
            with local.open("rb") as src:
                while chunk := src.read(CHUNK):
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
            proc.stdin.write_eof()
            result = await proc.wait()
            if result.exit_status != 0:
                raise RuntimeError("asyncssh cat push failed")
        self.loop.run_until_complete(go())

    def close(self) -> None:
        self.conn.close()
        self.loop.run_until_complete(self.conn.wait_closed())
        self.loop.close()


class Paramiko:
    def __init__(self, board: BoardProcess, known_hosts: Path) -> None:
        self.client = paramiko.SSHClient()
        self.client.load_host_keys(str(known_hosts))
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.client.connect("127.0.0.1", port=board.port, username=board.user,
                            key_filename=str(board.client_key), look_for_keys=False, allow_agent=False)
        self.sftp = self.client.open_sftp()

    def push_sftp(self, local: Path, remote: str) -> None:
        self.sftp.put(str(local), remote)

    def close(self) -> None:
        self.sftp.close()
        self.client.close()


def _remote_size(openssh: OpenSsh, remote: str) -> int:
    out = subprocess.run(["ssh", *openssh.base, openssh.alias, f"stat -c %s {shlex.quote(remote)}; "
                          f"rm -f {shlex.quote(remote)}"], capture_output=True, check=True, timeout=30)
    return int(out.stdout.split()[0])


def measure(size_mb: int, reps: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ek-bench-") as tmp_name:
        tmp = Path(tmp_name)
        payload = tmp / "payload.bin"
        with payload.open("wb") as out:
            for _ in range(size_mb):
                out.write(os.urandom(1_000_000))
        size_bytes = payload.stat().st_size
        with BoardProcess(tmp / "board", name="bench-board") as board:
            known_hosts = tmp / "known_hosts"
            known_hosts.write_text(board.known_hosts_line())
            config = board.write_ssh_config(tmp / "ssh_config", known_hosts=known_hosts)
            (tmp / "cm").mkdir()
            openssh = OpenSsh(config, board.name, tmp / "cm")
            asy = AsyncSsh(board, known_hosts)
            par = Paramiko(board, known_hosts)
            candidates: dict[str, Callable[[Path, str], None]] = {
                "openssh-scp": openssh.push_scp,
                "openssh-ssh-cat": openssh.push_cat,
                "asyncssh-sftp": asy.push_sftp,
                "asyncssh-exec-cat": asy.push_cat,
                "paramiko-sftp": par.push_sftp,
            }
            seconds: dict[str, list[float]] = {name: [] for name in candidates}
            load_before = os.getloadavg()
            try:
                # Round-robin, so drifting load on a shared host hits every candidate alike.
                for rep in range(reps):
                    for name, push in candidates.items():
                        remote = f"/home/edgekit/bench-{name}-{rep}.bin"
                        start = time.perf_counter()
                        push(payload, remote)
                        seconds[name].append(time.perf_counter() - start)
                        got = _remote_size(openssh, remote)
                        if got != size_bytes:
                            raise RuntimeError(f"{name}: remote file has {got} bytes, expected {size_bytes}")
            finally:
                par.close()
                asy.close()
                openssh.close()
    results: dict[str, dict[str, object]] = {}
    for name, times in seconds.items():
        rates = [size_bytes / 1e6 / s for s in times]
        results[name] = {"seconds": times, "mb_per_s": rates, "median_mb_per_s": statistics.median(rates)}
        print(f"{name:20s} median {statistics.median(rates):8.1f} MB/s  "
              f"({', '.join(f'{r:.1f}' for r in rates)})", flush=True)
    openssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return {"size_bytes": size_bytes, "reps": reps, "host": platform.node(), "cpus": os.cpu_count(),
            "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "versions": {"asyncssh": asyncssh.__version__, "paramiko": paramiko.__version__,
                         "openssh": openssh_version},
            "results": results}


def write(report: dict[str, object], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ssh_transports.json").write_text(json.dumps(report, indent=2) + "\n")
    results = report["results"]
    assert isinstance(results, dict)
    ranked = sorted(results.items(), key=lambda kv: -float(kv[1]["median_mb_per_s"]))
    size_mb = int(report["size_bytes"]) / 1e6  # type: ignore[call-overload]
    lines = [f"Push of one {size_mb:.0f} MB file to an emulated board on loopback, "
             f"{report['reps']} repetitions round-robin, median (1 MB = 10^6 bytes); {report['cpus']} CPUs, "
             f"1-minute load average before/after {report['loadavg_1m_before_after']}.", "",
             "| transport | median MB/s | runs MB/s |", "|---|---:|---|"]
    for name, row in ranked:
        runs = ", ".join(f"{r:.1f}" for r in row["mb_per_s"])
        lines.append(f"| {name} | {row['median_mb_per_s']:.1f} | {runs} |")
    (out_dir / "ssh_transports.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    write(measure(args.size_mb, args.reps), args.out)


if __name__ == "__main__":
    main()
