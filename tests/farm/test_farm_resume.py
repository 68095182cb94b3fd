"""Resume and stop, with real faults: a cell is skipped only when exactly what it measures is already
stored, a driver SIGKILLed mid-farm resumes without redoing or losing cells, and a job the driver gives
up on leaves no agent running on its device."""

from __future__ import annotations

import concurrent.futures
import io
import re
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from rich.console import Console

from edgekit.export.recipes import recipes_dir
from edgekit.farm.backend import Job, JobOutcome
from edgekit.inventory import DeviceEntry
from tests.farm.conftest import edgekit_cli, edgekit_popen, read_until, store_rows, tiny_workload, write_farm


class _NoJobs:
    """A backend with one device that must never be given a job (the farm is stopped before it starts)."""

    def devices(self) -> list[DeviceEntry]:
        return [DeviceEntry(name="board-x", transport="local")]

    def submit(self, job: Job) -> concurrent.futures.Future[JobOutcome]:
        raise AssertionError(f"no job expected, got {job.cell_key}")

    def abandon(self, job: Job) -> None:
        raise AssertionError(f"no job expected, got {job.cell_key}")

    def close(self) -> None:
        pass


def _stopped_run(farm_path: Path) -> int:
    """How many cells a run of the farm finds already stored (it is stopped before anything runs)."""
    from edgekit.farm.config import load_farm
    from edgekit.farm.scheduler import run_farm

    stop = threading.Event()
    stop.set()
    result = run_farm(load_farm(farm_path), _NoJobs(), live=False, stop=stop, grace_s=0.0)
    return result.skipped


def test_an_edited_recipe_file_is_a_new_cell_and_resume_runs_it_again(tmp_path: Path) -> None:
    from edgekit.farm.config import expand, load_farm
    from edgekit.store import Store

    recipe = yaml.safe_load((recipes_dir() / "onnx-fp32.yaml").read_text())
    recipe["name"] = "mine"
    recipe_path = tmp_path / "mine.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    farm_path = write_farm(tmp_path / "farm.yaml", name="edits", recipes=["mine.yaml"], devices=["board-x"])
    (cell,) = expand(load_farm(farm_path), _NoJobs().devices())
    with Store() as store:  # the cell as a finished run of the farm left it
        store.con.execute("INSERT INTO farm_cells (farm, cell_key, model, recipe, device, workload, status, "
                          "attempts, finished_at) VALUES ('edits', ?, ?, 'mine', 'board-x', 'short', 'ok', 1, "
                          "now())", [cell.key, cell.model])
    assert _stopped_run(farm_path) == 1  # unchanged: resume skips it

    recipe["max_context"] = recipe.get("max_context", 512) // 2  # same name, different artifact
    recipe_path.write_text(yaml.safe_dump(recipe))
    assert _stopped_run(farm_path) == 0  # edited: the stored cell is stale, the cell runs again
    assert store_rows("SELECT count(*) FROM farm_cells WHERE farm = 'edits' AND status = 'ok'")[0][0] == 1


def test_a_stopped_farm_returns_only_after_the_export_under_way(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # An export cannot be stopped halfway. A farm that returned beside it left a thread writing into the cache
    # and tracing beside the next export in the same process (a later test's torch.export failed with a
    # graph holding the farm's reference model).
    from edgekit.farm import exporter as farm_exporter
    from edgekit.farm.config import load_farm
    from edgekit.farm.scheduler import run_farm

    started: list[tuple[str, str]] = []
    finished: list[tuple[str, str]] = []

    def slow_export(self: farm_exporter.Exporter, model: str, recipe: str) -> farm_exporter.Artifact:
        started.append((model, recipe))
        self.stop.wait(30)  # the farm is stopped while this export runs ...
        time.sleep(1.0)  # ... which still takes a while
        finished.append((model, recipe))
        return farm_exporter.Artifact(error="not exported (test)")

    monkeypatch.setattr(farm_exporter.Exporter, "_export", slow_export)
    farm_path = write_farm(tmp_path / "farm.yaml", name="stop-export", recipes=["onnx-fp32", "onnx-int8"],
                           devices=["board-x"])
    stop = threading.Event()

    def stop_once_exporting() -> None:
        deadline = time.monotonic() + 30
        while not started and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()

    threading.Thread(target=stop_once_exporting, daemon=True).start()
    out = io.StringIO()
    result = run_farm(load_farm(farm_path), _NoJobs(), console=Console(file=out, width=200), live=False,
                      stop=stop, grace_s=0.0)
    assert result.interrupted
    assert finished == started == [("tiny-llama", "onnx-fp32")], "returned during the export, or began the next"
    assert not [t for t in threading.enumerate() if t.name == "farm-export"]
    assert "waiting for the export of tiny-llama with onnx-fp32 to finish" in out.getvalue()


def test_a_farm_stopped_before_it_starts_exports_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The export thread looked only at its own stop flag, which the driver sets a moment later: a farm
    # stopped before it started could begin an export (and, before that was fixed, return beside it).
    from edgekit.farm import exporter as farm_exporter

    started: list[tuple[str, str]] = []

    def export(self: farm_exporter.Exporter, model: str, recipe: str) -> farm_exporter.Artifact:
        started.append((model, recipe))
        return farm_exporter.Artifact(error="not exported (test)")

    monkeypatch.setattr(farm_exporter.Exporter, "_export", export)
    for _ in range(5):  # the race it closes was lost most times, not every time
        assert _stopped_run(write_farm(tmp_path / "farm.yaml", name="stopped", devices=["board-x"])) == 0
    assert started == []


def _agents_under(marker: str) -> list[int]:
    """Pids of agent processes on this host (the ``local`` device) whose command line has ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "edgekit_agent" in line and marker in line:
            found.append(proc.pid)
    return found


def _this_host(tmp_path: Path) -> Path:
    """An inventory with this host as a device whose Python has the runtimes (the test's own)."""
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": [{"name": "here", "transport": "local", "python": sys.executable,
                                                 "workdir": str(tmp_path / "here")}]}))
    return path


def test_an_abandoned_job_leaves_no_agent_running_on_the_device(tmp_path: Path) -> None:
    # transformers is loaded here first: in this test process, loading it for the first time from the farm's
    # export thread failed with "cannot import name 'AutoConfig'" (the CLI, one farm per process, does not).
    from transformers import AutoConfig  # noqa: F401

    from edgekit import inventory
    from edgekit.farm.config import load_farm
    from edgekit.farm.scheduler import LocalBackend, run_farm

    devices = _this_host(tmp_path)
    runs = inventory.get("here", devices).resolved_workdir() + "/runs/"
    farm_path = write_farm(tmp_path / "farm.yaml", name="abandon", devices=["here"],
                           workloads={"long": tiny_workload(runs=400, gen_len=64, runner="python")})
    stop = threading.Event()

    def stop_once_the_agent_runs() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _agents_under(runs):
            time.sleep(0.05)
        stop.set()  # as a second Ctrl-C with no grace does

    watcher = threading.Thread(target=stop_once_the_agent_runs, daemon=True)
    watcher.start()
    result = run_farm(load_farm(farm_path), LocalBackend(devices), live=False, stop=stop, grace_s=0.0)
    watcher.join(timeout=30)
    assert result.interrupted and result.ok == 0
    left = [" ".join(psutil.Process(pid).cmdline()) for pid in _agents_under(runs)]
    assert left == [], "the abandoned job's agent still runs on the device"


def test_a_farm_driver_killed_mid_run_resumes_without_redoing_or_losing_cells(tmp_path: Path) -> None:
    workloads = {f"p{n}": tiny_workload(prompt_len=n, runner="python") for n in (8, 9, 10)}
    farm = write_farm(tmp_path / "farm.yaml", name="crash", devices=["here"], workloads=workloads)
    devices = _this_host(tmp_path)
    proc = edgekit_popen("farm", "run", str(farm), "--inventory", str(devices), cwd=tmp_path)
    try:
        read_until(proc, r": ok in ", timeout_s=300)
        proc.send_signal(signal.SIGKILL)  # no handler, no clean-up: a crashed or OOM-killed driver
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    before = store_rows("SELECT cell_key, trace_id, attempts FROM farm_cells WHERE farm = 'crash' AND status = 'ok'")
    assert 1 <= len(before) < 3

    resumed = edgekit_cli("farm", "run", str(farm), "--inventory", str(devices), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming farm 'crash': {len(before)} of 3 cells already in the store" in resumed.stdout
    assert len(re.findall(r": ok in ", resumed.stdout)) == 3 - len(before), resumed.stdout  # nothing redone
    assert "farm 'crash': 3/3 cells ok" in resumed.stdout
    after = store_rows("SELECT cell_key, trace_id, attempts FROM farm_cells WHERE farm = 'crash'")
    assert len(after) == 3 and set(before) <= set(after)  # the stored cells are kept as they were
    assert store_rows("SELECT count(*) FROM traces")[0][0] == 3
