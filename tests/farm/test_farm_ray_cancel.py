"""A farm job that Ray cancels (the driver stops without waiting) leaves no agent on its device: Ray's cancel
kills the worker process on the node, not what that worker started on the board, so the node is asked to
stop it. The board's end of the connection is frozen first, as when a link dies silently: then nothing but
that request can stop the agent."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import psutil
from rich.console import Console

from tests.farm.conftest import tiny_workload, write_farm
from tests.fixtures.ray_cluster import RayCluster, ray_cluster, ray_farm

__all__ = ["ray_cluster", "ray_farm"]  # the fixtures, used by name


def _board_agents() -> list[psutil.Process]:
    """Agent processes on the emulated boards (the host's ``ssh`` clients carry the same command line)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        line = " ".join(argv)
        if "edgekit_agent" in line and "/home/edgekit/runs/" in line and not argv[0].endswith("ssh"):
            found.append(proc)
    return found


def _freeze_sshd_of(agent: psutil.Process) -> psutil.Process:
    session = agent.parent()
    while session is not None and "sshd" not in session.name():
        session = session.parent()
    assert session is not None, "the agent runs under no sshd session"
    session.suspend()
    return session


def test_a_job_ray_cancels_leaves_no_agent_on_its_board(ray_farm: RayCluster, tmp_path: Path) -> None:
    from edgekit.farm.config import load_farm
    from edgekit.farm.ray_backend import RayBackend
    from edgekit.farm.scheduler import run_farm

    farm = load_farm(write_farm(tmp_path / "farm.yaml", name="ray-cancel", devices=["board-a"],
                                workloads={"long": tiny_workload(runs=400, gen_len=64, runner="python")}))
    backend = RayBackend(ray_farm.address, resource_wait_s=5.0, connect_timeout_s=60.0)
    stop = threading.Event()
    frozen: list[psutil.Process] = []

    def freeze_then_stop() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not stop.is_set():
            agents = [p for p in _board_agents() if "--runner-child" not in p.cmdline()]
            if agents:
                frozen.append(_freeze_sshd_of(agents[0]))
                break
            time.sleep(0.1)
        stop.set()  # a second Ctrl-C: the job is abandoned and its Ray task cancelled

    watcher = threading.Thread(target=freeze_then_stop, daemon=True)
    watcher.start()
    try:
        result = run_farm(farm, backend, console=Console(file=None, width=200), live=False, grace_s=0.0, stop=stop)
        left = [" ".join(p.cmdline()) for p in _board_agents() if p.is_running()]
    finally:
        stop.set()
        watcher.join(timeout=30)
        for session in frozen:
            with contextlib.suppress(psutil.Error):
                session.resume()
    assert frozen, "the job's agent never ran"
    assert result.interrupted and result.ok == 0
    assert left == [], f"the cancelled job's agent still runs on the board: {left[:1]}"
