"""The farm across a real two-node Ray cluster on 127.0.0.1, each node with its own emulated phone and
board: the Done-when matrix through ``edgekit farm run --ray``, a worker node killed mid-farm (it
returns, or it does not), and a job Ray cancels that must not leave its agent on the board. The driver's
store is a real DuckDB file in the test's EDGEKIT_HOME; the nodes have homes of their own, so a trace
found in a node's home was made on that node."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path

import psutil
from rich.console import Console

from tests.farm.conftest import edgekit_cli, edgekit_popen, read_until, store_rows, tiny_workload, write_farm
from tests.fixtures.ray_cluster import RayCluster, ray_cluster, ray_farm

__all__ = ["ray_cluster", "ray_farm"]  # the fixtures, used by name

FARM_TIMEOUT_S = 480
FIRST_FARM_TIMEOUT_S = 900  # includes exporting 4 artifacts when this file runs alone (no warm cache)


def _listening_ips(temp_dir: str) -> set[str]:
    """The addresses every process of one node (tagged with its temp dir) listens on."""
    import psutil

    from edgekit.farm.ray_node import NODE_TAG_ENV

    ips: set[str] = set()
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(NODE_TAG_ENV) == temp_dir:
                ips |= {c.laddr.ip for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    return ips


def test_the_cluster_stays_on_loopback_and_advertises_each_nodes_devices(ray_farm: RayCluster) -> None:
    from edgekit.farm.ray_backend import RayBackend

    for host in ray_farm.hosts:
        ips = _listening_ips(host.node.temp_dir)
        assert ips, f"no listening socket found for node {host.label}"
        assert ips <= {"127.0.0.1", "::ffff:127.0.0.1"}, f"node {host.label} listens on {ips}"
    backend = RayBackend(ray_farm.address, connect_timeout_s=60.0)
    try:
        import ray

        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
        assert {n["NodeID"] for n in nodes} == {h.node.node_id for h in ray_farm.hosts}
        entries = {e.name: e for e in backend.devices()}
        assert set(entries) == {"phone-a", "board-a", "phone-b", "board-b"}  # never the hosts' "local"
        assert {n: e.tags.device_class for n, e in entries.items()} == {
            "phone-a": "phone", "board-a": "board", "phone-b": "phone", "board-b": "board"}
        for node in nodes:
            advertised = {k for k in node["Resources"] if k.startswith("edgekit_device_")}
            host = next(h for h in ray_farm.hosts if h.node.node_id == node["NodeID"])
            assert advertised == {f"edgekit_device_{d}" for d in host.devices}
    finally:
        backend.close()


def test_a_ray_address_with_no_cluster_is_one_line_and_exit_2(tmp_path: Path) -> None:
    from tests.fixtures.phone import free_port

    farm = write_farm(tmp_path / "farm.yaml")
    address = f"127.0.0.1:{free_port()}"
    result = edgekit_cli("farm", "run", str(farm), "--ray", address, cwd=tmp_path, timeout_s=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: no Ray cluster at {address}: nothing accepts connections there"], result.stderr


def _assert_made_on_owner(cluster: RayCluster, device: str, source_path: str) -> None:
    """The driver's trace is a byte-identical copy of one its device's node wrote in its own home."""
    driver_copy = Path(source_path)
    name = driver_copy.parent.name
    owner = cluster.owner(device)
    other = next(h for h in cluster.hosts if h is not owner)
    node_copy = owner.home / "traces" / name / driver_copy.name
    assert node_copy.is_file(), f"{device}'s trace {name} is not in its node's home"
    assert node_copy.read_bytes() == driver_copy.read_bytes()
    assert name not in other.trace_dirs(), f"{device}'s trace {name} was made on the other node"


def test_the_done_when_farm_runs_across_a_two_node_ray_cluster(ray_farm: RayCluster, tmp_path: Path) -> None:
    cluster = ray_farm
    farm = write_farm(tmp_path / "farm.yaml", name="ray-nightly", models=["tiny-llama", "tiny-qwen2"],
                      recipes=["onnx-fp32", "pte-fp32"], devices=["tag:phone", "board-a", "board-b"])
    run = edgekit_cli("farm", "run", str(farm), "--ray", cluster.address, cwd=tmp_path,
                      timeout_s=FIRST_FARM_TIMEOUT_S)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "16 cells on 4 device(s)" in run.stdout, run.stdout
    assert "farm 'ray-nightly': 16/16 cells ok" in run.stdout, run.stdout

    cells = store_rows("SELECT model, recipe, device, status, trace_id, artifact_sha256 FROM farm_cells "
                       "WHERE farm = 'ray-nightly'")
    assert {(m, r, d) for m, r, d, *_ in cells} == {
        (m, r, d) for m in ("tiny-llama", "tiny-qwen2") for r in ("onnx-fp32", "pte-fp32")
        for d in ("phone-a", "board-a", "phone-b", "board-b")}
    assert len(cells) == 16 and {c[3] for c in cells} == {"ok"}
    traces = dict(store_rows("SELECT trace_id, source_path FROM traces"))
    assert len(traces) == 16 and set(traces) == {c[4] for c in cells}, "each cell stored exactly once"
    for _, _, device, _, trace_id, _ in cells:
        _assert_made_on_owner(cluster, device, traces[trace_id])
    # The artifacts reached each node through Ray's object store (the nodes share no cache with the
    # driver) and were unpacked into the node's own cache, once per content sha.
    shas = {c[5] for c in cells}
    assert len(shas) == 4
    for host in cluster.hosts:
        unpacked = host.home / "cache" / "farm-artifacts"
        assert {p.name for p in unpacked.iterdir() if p.is_dir()} >= shas

    again = edgekit_cli("farm", "run", str(farm), "--ray", cluster.address, cwd=tmp_path, timeout_s=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "16 of 16 cells already in the store, 0 to run" in again.stdout
    assert store_rows("SELECT count(*) FROM traces")[0][0] == 16


def test_a_killed_worker_node_returns_and_its_jobs_are_rescheduled(ray_farm: RayCluster, tmp_path: Path) -> None:
    cluster = ray_farm
    workloads = {f"p{n}": tiny_workload(prompt_len=n) for n in (8, 9, 10)}
    farm = write_farm(tmp_path / "farm.yaml", name="ray-node-dies", workloads=workloads, retries=3)
    proc = edgekit_popen("farm", "run", str(farm), "--ray", cluster.address, cwd=tmp_path)
    try:
        before = read_until(proc, r"\[(phone|board)-b\] .*: ok in ", timeout_s=300)
        # Then a job that starts on the node after that: kill the node while it runs.
        before += read_until(proc, r"\[(phone|board)-b\] .*: attempt \d+ started", timeout_s=120)
        time.sleep(0.5)
        cluster.kill_worker()
        time.sleep(3.0)
        cluster.restart_worker()
        rest, _ = proc.communicate(timeout=FARM_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    output = "".join(before) + rest
    assert proc.returncode == 0, output
    assert "farm 'ray-node-dies': 12/12 cells ok" in output, output
    assert "Traceback" not in output
    # The job the dead node was running came back as a transient failure and ran again.
    assert re.search(r"\[(phone|board)-b\] .*: attempt 1 failed \(Ray node running device '(phone|board)-b' "
                     r"failed: NodeDiedError", output), output
    cells = store_rows("SELECT device, status, attempts, trace_id FROM farm_cells WHERE farm = 'ray-node-dies'")
    assert len(cells) == 12 and {c[1] for c in cells} == {"ok"}
    assert max(a for d, _, a, _ in cells if d.endswith("-b")) >= 2
    traces = dict(store_rows("SELECT trace_id, source_path FROM traces"))
    assert len(traces) == 12 and set(traces) == {c[3] for c in cells}, "no cell stored twice"
    for device, _, _, trace_id in cells:
        _assert_made_on_owner(cluster, device, traces[trace_id])


def test_a_worker_node_that_stays_dead_fails_its_cells_and_the_driver_does_not_hang(
    ray_farm: RayCluster, tmp_path: Path
) -> None:
    from edgekit.farm.config import load_farm
    from edgekit.farm.ray_backend import RayBackend
    from edgekit.farm.scheduler import run_farm

    cluster = ray_farm
    workloads = {f"p{n}": tiny_workload(prompt_len=n) for n in (8, 9)}
    farm = load_farm(write_farm(tmp_path / "farm.yaml", name="ray-node-gone", workloads=workloads,
                                retries=1, quarantine_after=2))
    backend = RayBackend(cluster.address, resource_wait_s=5.0, connect_timeout_s=60.0)

    earlier = cluster.worker.trace_dirs()

    def kill_when_b_has_worked() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not cluster.worker.trace_dirs() - earlier:
            time.sleep(0.2)
        cluster.kill_worker()

    killer = threading.Thread(target=kill_when_b_has_worked, daemon=True)
    killer.start()
    started = time.monotonic()
    result = run_farm(farm, backend, console=Console(file=None, width=200), live=False, grace_s=10.0)
    elapsed = time.monotonic() - started
    killer.join(timeout=60)
    assert cluster.worker.node is None, "the worker node was not killed during the farm"
    assert elapsed < FARM_TIMEOUT_S
    assert result.exit_code != 0 and result.failures, result.summary()

    cells = store_rows("SELECT device, status, reason FROM farm_cells WHERE farm = 'ray-node-gone'")
    assert len(cells) == 8, cells
    by_device: dict[str, set[str]] = {}
    for device, status, _ in cells:
        by_device.setdefault(device, set()).add(status)
    assert by_device["phone-a"] == by_device["board-a"] == {"ok"}, cells
    failed = [(d, r) for d, s, r in cells if s == "failed"]
    assert failed and all(d.endswith("-b") for d, _ in failed), cells
    assert any("Ray node" in (r or "") for _, r in failed), failed
    ok_traces = {t for (t,) in store_rows("SELECT trace_id FROM farm_cells WHERE farm = 'ray-node-gone' "
                                          "AND status = 'ok'")}
    assert store_rows("SELECT count(*) FROM traces")[0][0] == len(ok_traces)


# A farm job that Ray cancels (the driver stops without waiting) leaves no agent on its device: Ray's cancel
# kills the worker process on the node, not what that worker started on the board, so the node is asked to
# stop it. The board's end of the connection is frozen first, as when a link dies silently: then nothing but
# that request can stop the agent.


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
