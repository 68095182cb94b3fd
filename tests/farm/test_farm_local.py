"""The farm on this host, end to end through the real CLI: the Done-when matrix, resume after a real
SIGINT, bad farm files, and the device lock across processes. Devices are real emulated phones (adb)
and boards (sshd); the store is a real DuckDB file in the test's EDGEKIT_HOME."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.farm.conftest import (
    Rig,
    edgekit_cli,
    edgekit_popen,
    read_until,
    store_rows,
    tiny_workload,
    write_farm,
)


def test_the_done_when_farm_runs_from_one_command_and_resumes_to_nothing(rig: Rig, tmp_path: Path) -> None:
    farm = write_farm(tmp_path / "farm.yaml", name="nightly", models=["tiny-llama", "tiny-qwen2"],
                      recipes=["onnx-fp32", "pte-fp32"], devices=["tag:phone", "board-1", "board-2"])
    run = edgekit_cli("farm", "run", str(farm), "--inventory", str(rig.inventory), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "16 cells on 4 device(s)" in run.stdout
    assert "farm 'nightly': 16/16 cells ok" in run.stdout

    cells = store_rows("SELECT model, recipe, device, status, attempts, trace_id FROM farm_cells "
                       "WHERE farm = 'nightly'")
    assert len(cells) == 16
    assert {(m, r, d) for m, r, d, *_ in cells} == {
        (m, r, d) for m in ("tiny-llama", "tiny-qwen2") for r in ("onnx-fp32", "pte-fp32")
        for d in ("phone-1", "phone-2", "board-1", "board-2")}
    assert all(status == "ok" and attempts >= 1 for *_, status, attempts, _ in cells)
    # Every ok cell is backed by exactly its own stored trace, from the device and artifact it names.
    traces = store_rows("SELECT t.trace_id, t.device_id, a.model_id, a.recipe FROM traces t "
                        "JOIN artifacts a ON a.sha256 = t.artifact_sha256")
    assert len(traces) == 16
    by_id = {t[0]: t[1:] for t in traces}
    for model, recipe, device, _, _, trace_id in cells:
        assert by_id[trace_id] == (device, model, recipe)
    # Phones ran the .pte artifacts with the native runner, ONNX with the Python agent.
    runners = dict(store_rows("SELECT a.recipe || '@' || t.device_id, t.runner_kind FROM traces t "
                              "JOIN artifacts a ON a.sha256 = t.artifact_sha256 WHERE a.model_id = 'tiny-llama'"))
    assert runners["pte-fp32@phone-1"] == "native-executorch"
    assert runners["onnx-fp32@phone-1"] != "native-executorch"

    status = edgekit_cli("farm", "status", str(farm), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert len(rows) == 16 and {r["status"] for r in rows} == {"ok"}

    report = edgekit_cli("farm", "report", str(farm), "--format", "json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    report_cells = json.loads(report.stdout)["cells"]
    assert len(report_cells) == 16
    assert {(c["device_id"], c["model_id"], c["recipe"]) for c in report_cells} == {(d, m, r) for m, r, d, *_ in cells}

    again = edgekit_cli("farm", "run", str(farm), "--inventory", str(rig.inventory), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "16 of 16 cells already in the store, 0 to run" in again.stdout
    assert store_rows("SELECT count(*) FROM traces")[0][0] == 16


def test_sigint_stops_cleanly_and_the_next_run_does_only_the_missing_cells(rig: Rig, tmp_path: Path) -> None:
    workloads = {f"p{n}": tiny_workload(prompt_len=n) for n in (8, 9, 10)}
    farm = write_farm(tmp_path / "farm.yaml", name="resume", devices=["phone-1", "board-1"], workloads=workloads)
    proc = edgekit_popen("farm", "run", str(farm), "--inventory", str(rig.inventory), cwd=tmp_path)
    try:
        before = read_until(proc, r": ok in ", timeout_s=300)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    output = "".join(before) + rest
    assert proc.returncode == 130, output
    assert "stopping: no new jobs" in output
    summary = output.strip().splitlines()[-1]
    assert summary.startswith("interrupted: farm 'resume':") and "not run" in summary, summary
    assert "Traceback" not in output

    first = store_rows("SELECT cell_key, trace_id FROM farm_cells WHERE farm = 'resume'")
    assert 1 <= len(first) < 6, output
    # Only complete cells: every stored cell has its trace and every trace belongs to a stored cell.
    assert store_rows("SELECT count(*) FROM traces")[0][0] == len(first)
    assert {t for _, t in first} == {r[0] for r in store_rows("SELECT trace_id FROM traces")}

    again = edgekit_cli("farm", "run", str(farm), "--inventory", str(rig.inventory), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming farm 'resume': {len(first)} of 6 cells already in the store, {6 - len(first)} to run" \
        in again.stdout
    assert len(re.findall(r": ok in ", again.stdout)) == 6 - len(first)
    final = dict(store_rows("SELECT cell_key, trace_id FROM farm_cells WHERE farm = 'resume' AND status = 'ok'"))
    assert len(final) == 6
    assert all(final[key] == trace for key, trace in first), "a finished cell was redone"
    assert store_rows("SELECT count(*) FROM traces")[0][0] == 6


def test_sigint_with_no_grace_abandons_running_jobs_at_once_and_stores_no_half_cell(rig: Rig,
                                                                                     tmp_path: Path) -> None:
    # Jobs with a 3 s idle baseline: right after a second job starts, it is surely still running.
    workloads = {f"p{n}": tiny_workload(prompt_len=n, baseline_s=3.0) for n in (8, 9)}
    farm = write_farm(tmp_path / "farm.yaml", name="abandon", devices=["phone-2", "board-2"], workloads=workloads)
    proc = edgekit_popen("farm", "run", str(farm), "--inventory", str(rig.inventory), "--grace-s", "0",
                         cwd=tmp_path)
    try:
        before = read_until(proc, r"/p9: attempt 1 started", timeout_s=300)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        stop_s = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    output = "".join(before) + rest
    assert proc.returncode == 130, output
    assert "abandoned its running job (not stored)" in output, output
    assert stop_s < 30, f"the farm took {stop_s:.1f}s to stop with --grace-s 0"
    stored = store_rows("SELECT device, workload, trace_id FROM farm_cells WHERE farm = 'abandon'")
    printed = re.findall(r"^\[(\S+)\] tiny-llama/onnx-fp32/(\S+): ok in ", output, flags=re.M)
    assert sorted((d, w) for d, w, _ in stored) == sorted(printed)
    assert store_rows("SELECT count(*) FROM traces")[0][0] == len(stored)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, r"farm\.yaml: unknown key 'colour'"),
        ({"retries": -1}, r"farm\.yaml: retries: .*greater than or equal to 0"),
        ({"workloads": {"w": {"prompt_len": 8, "gen": 8}}}, r"farm\.yaml: unknown key 'workloads\.w\.gen'"),
        # The agents' sampler limits, refused when the file is read (they used to fail every cell at run time).
        ({"workloads": {"w": {"sample_ms": 5}}},
         r"farm\.yaml: workloads\.w\.sample_ms: must be within 10\.\.100 ms .*got 5"),
        ({"models": ["tiny-nothing"]}, r"unknown model 'tiny-nothing'"),
        ({"recipes": ["onnx-int3"]}, r"unknown recipe 'onnx-int3'"),
        ({"devices": ["pixel-9"]}, r"unknown device 'pixel-9'; known: .*local"),
        ({"devices": ["tag:tablet"]}, r"farm\.yaml: devices: 'tag:tablet' matches no device"),
        ({"recipes": ["missing.yaml"]}, r"recipe file 'missing\.yaml' does not exist"),
    ],
)
def test_a_bad_farm_file_is_one_line_and_exit_2(tmp_path: Path, edgekit_home: Path, change: dict[str, object],
                                                message: str) -> None:
    farm = write_farm(tmp_path / "farm.yaml", **change)
    result = edgekit_cli("farm", "run", str(farm), cwd=tmp_path, timeout_s=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (edgekit_home / "results.duckdb").exists(), "bad input must be refused before anything runs"


def test_not_yaml_and_not_a_mapping_are_one_line_too(tmp_path: Path) -> None:
    for text, message in (("name: [unclosed", "not valid YAML"), ("- a list", "expected a mapping")):
        (tmp_path / "farm.yaml").write_text(text)
        result = edgekit_cli("farm", "run", "farm.yaml", cwd=tmp_path, timeout_s=120)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from edgekit.farm.locks import device_lock
    with device_lock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.readline()
    """
)


def test_the_device_lock_holds_against_a_second_process(tmp_path: Path) -> None:
    from edgekit.farm.backend import Job
    from edgekit.farm.job import run_job_here
    from edgekit.farm.locks import DeviceBusy, device_lock
    from edgekit.inventory import DeviceEntry
    from edgekit.workload import Workload

    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, "phone-x"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        busy = rf"device 'phone-x' is busy \(locked by pid {holder.pid}\)"
        with pytest.raises(DeviceBusy, match=busy), device_lock("phone-x", wait_s=0.3):
            pass
        # A job for the locked device comes back transient ("busy"), without touching the device.
        entry = DeviceEntry(name="phone-x", transport="adb", serial="127.0.0.1:1")
        job = Job(farm="f", cell_key="k", model="m", recipe="r", device="phone-x", workload_name="w",
                  workload=Workload(), artifact_dir=tmp_path, artifact_sha="0" * 64, attempt=1)
        outcome = run_job_here(job, entry, artifact_dir=tmp_path, traces_root=tmp_path, lock_wait_s=0.3)
        assert outcome.status == "transient" and outcome.trace_dir is None
        assert outcome.reason is not None and f"busy (locked by pid {holder.pid})" in outcome.reason
        # Other devices are not affected.
        with device_lock("phone-y", wait_s=0.0):
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    # The holder released it when it ended; the lock is free again.
    with device_lock("phone-x", wait_s=5.0):
        pass


def test_the_device_lock_excludes_a_second_thread_of_the_same_process() -> None:
    import threading

    from edgekit.farm.locks import DeviceBusy, device_lock

    errors: list[BaseException] = []
    with device_lock("board-x"):
        def other() -> None:
            try:
                with device_lock("board-x", wait_s=0.2):
                    pass
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=30)
    assert len(errors) == 1 and isinstance(errors[0], DeviceBusy)


def test_matrix_keys_are_stable_and_tags_select_devices(tmp_path: Path) -> None:
    from edgekit.farm.config import expand, load_farm, select_devices
    from edgekit.inventory import DeviceEntry, Tags

    devices = [DeviceEntry(name="p1", transport="adb", serial="s1", tags=Tags(device_class="phone")),
               DeviceEntry(name="b1", transport="local", tags=Tags(device_class="board", labels=["lab-a"])),
               DeviceEntry(name="local", transport="local")]
    farm_path = write_farm(tmp_path / "farm.yaml", devices=["tag:lab-a", "p1"],
                           workloads={"a": tiny_workload(), "b": tiny_workload(gen_len=9)})
    farm = load_farm(farm_path)
    chosen = select_devices(farm, devices)
    assert [d.name for d in chosen] == ["p1", "b1"]
    cells = expand(farm, chosen)
    assert len(cells) == 4 and len({c.key for c in cells}) == 4
    assert [c.key for c in expand(load_farm(farm_path), chosen)] == [c.key for c in cells]
    # "all" leaves out the built-in local device; a changed workload is a different cell.
    assert [d.name for d in select_devices(load_farm(write_farm(tmp_path / "all.yaml")), devices)] == ["p1", "b1"]
    spec = yaml.safe_load(farm_path.read_text())
    spec["workloads"]["b"]["gen_len"] = 10
    farm_path.write_text(yaml.safe_dump(spec))
    changed = {c.key for c in expand(load_farm(farm_path), chosen)}
    assert len(changed & {c.key for c in cells}) == 2


def test_the_live_table_shows_each_device_and_events_print_above_it() -> None:
    import io

    from rich.console import Console

    from edgekit.farm.display import DeviceRow, FarmView

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, color_system=None)
    rows = [DeviceRow("phone-1", total=3), DeviceRow("board-1", total=3)]
    with FarmView("farm t", rows, console) as view:
        assert view.live_enabled
        rows[0].state, rows[0].cell, rows[0].attempt = "running", "tiny-llama/onnx-fp32/[p8]", 2
        rows[1].state, rows[1].done, rows[1].failed = "quarantined", 3, 3
        view.event("[phone-1] something [happened]")
    text = buffer.getvalue()
    assert "[phone-1] something [happened]" in text
    final = text[text.rindex("farm t"):]
    assert re.search(r"phone-1 +│ running +│ tiny-llama/onnx-fp32/\[p8\] +│ 2 +│ 0/3", final), final
    assert re.search(r"board-1 +│ quarantined +│ +│ +│ 3/3 +│ 0 +│ 3", final), final
    assert "[cyan]" not in text and "[red]" not in text
