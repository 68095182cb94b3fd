"""Farm faults with real parts: an emulated device SIGKILLed mid-farm and brought back (its jobs retry
and finish, nobody else is disturbed, no cell is stored twice), a device that stays dead (quarantined
after N failures in a row, its remaining cells reported), and permanent failures (an export that fails
its parity gate, a workload the device cannot run) recorded with their reason and never retried."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from edgekit.export.recipes import recipes_dir
from tests.farm.conftest import Rig, edgekit_popen, read_until, store_rows, tiny_workload, write_farm


def test_a_device_killed_mid_farm_retries_when_it_returns_and_the_others_finish(rig: Rig, tmp_path: Path) -> None:
    workloads = {f"p{n}": tiny_workload(prompt_len=n) for n in (8, 9, 10)}
    farm = write_farm(tmp_path / "farm.yaml", name="kill", workloads=workloads, retries=6, backoff_s=1.0,
                      quarantine_after=10, devices=["phone-1", "phone-2", "board-1", "board-2"])
    proc = edgekit_popen("farm", "run", str(farm), "--inventory", str(rig.inventory), cwd=tmp_path)
    seen: list[str] = []
    try:
        seen += read_until(proc, r"^\[phone-2\] .*: ok in ", timeout_s=300)
        rig.kill("phone-2")
        seen += read_until(proc, r"^\[phone-2\] .*attempt \d+ failed .*retrying", timeout_s=180)
        failed = seen[-1]
        rig.restart("phone-2")
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        rig.ensure_running()
    output = "".join(seen) + rest
    assert proc.returncode == 0, output
    assert "farm 'kill': 12/12 cells ok" in output
    retried = re.match(r"^\[phone-2\] (\S+): attempt", failed)
    assert retried is not None
    cells = store_rows("SELECT device, model || '/' || recipe || '/' || workload, status, attempts, trace_id "
                       "FROM farm_cells WHERE farm = 'kill'")
    assert len(cells) == 12 and {c[2] for c in cells} == {"ok"}
    attempts = {(device, label): n for device, label, _, n, _ in cells}
    assert attempts[("phone-2", retried.group(1))] >= 2, "the killed device's cell was not retried"
    # No cell stored twice: one trace per cell, each the cell's own.
    assert store_rows("SELECT count(*) FROM traces")[0][0] == 12
    assert len({c[4] for c in cells}) == 12
    # The other devices finished every cell on the first attempt.
    assert all(n == 1 for (device, _), n in attempts.items() if device != "phone-2")


def _strict_recipe(path: Path) -> Path:
    """onnx-fp32 with a gate no export can pass (the artifact comes from the cache; only the gate differs)."""
    spec = yaml.safe_load((recipes_dir() / "onnx-fp32.yaml").read_text())
    spec["name"] = "onnx-fp32-strict"
    spec["gate"]["max_abs_logit_diff"] = 1.0e-12
    path.write_text(yaml.safe_dump(spec))
    return path


def test_dead_device_is_quarantined_and_permanent_failures_are_not_retried(rig: Rig, tmp_path: Path) -> None:
    from edgekit.farm.config import load_farm
    from edgekit.farm.scheduler import LocalBackend, run_farm

    _strict_recipe(tmp_path / "strict.yaml")
    farm_path = write_farm(
        tmp_path / "farm.yaml", name="faults", devices=["board-1", "board-2"],
        recipes=["onnx-fp32", "strict.yaml"], retries=5, backoff_s=0.2, quarantine_after=2,
        workloads={"py": tiny_workload(runner="python"), "native": tiny_workload(runner="native")},
    )
    rig.kill("board-2")
    try:
        result = run_farm(load_farm(farm_path), LocalBackend(rig.inventory), live=False)
    finally:
        rig.ensure_running()

    assert result.exit_code == 1 and not result.interrupted
    assert result.quarantined == ["board-2"]
    assert (result.ok, result.failed, result.not_run) == (2, 6, 0)
    rows = {(d, r, w): (s, n, reason) for d, r, w, s, n, reason in store_rows(
        "SELECT device, recipe, workload, status, attempts, reason FROM farm_cells WHERE farm = 'faults'")}
    assert len(rows) == 8
    # The live board runs the ONNX artifact through both runners (the native one through its GenAI backend).
    assert rows[("board-1", "onnx-fp32", "py")][:2] == ("ok", 1)
    assert rows[("board-1", "onnx-fp32", "native")][:2] == ("ok", 1)
    # Permanent, decided on the host: the export failed its parity gate; no job ever ran for it.
    for workload in ("py", "native"):
        status, attempts, reason = rows[("board-1", "onnx-fp32-strict", workload)]
        assert (status, attempts) == ("failed", 0) and reason.startswith("export failed the parity gate")
    assert not [j for j in result.jobs if "strict" in j.cell]
    assert len([j for j in result.jobs if j.device == "board-1"]) == 2
    # The dead board: two transient failures in a row, then quarantined; the rest is reported, not run.
    status, attempts, reason = rows[("board-2", "onnx-fp32", "py")]
    assert (status, attempts) == ("failed", 2) and reason.startswith("transient failure, gave up after 2")
    for key in (("board-2", "onnx-fp32", "native"), ("board-2", "onnx-fp32-strict", "py"),
                ("board-2", "onnx-fp32-strict", "native")):
        assert rows[key][0] == "failed" and "device 'board-2' quarantined after 2 failures in a row" in rows[key][2]
    assert [j.status for j in result.jobs if j.device == "board-2"] == ["transient", "transient"]
    assert store_rows("SELECT count(*) FROM traces")[0][0] == 2

    # Run again with board-2 back: the failed cells run again, the ok ones are skipped, nothing is doubled.
    again = run_farm(load_farm(farm_path), LocalBackend(rig.inventory), live=False)
    assert (again.skipped, again.quarantined) == (2, [])
    rows = {(d, r, w): (s, n) for d, r, w, s, n in store_rows(
        "SELECT device, recipe, workload, status, attempts FROM farm_cells WHERE farm = 'faults'")}
    assert len(rows) == 8
    assert rows[("board-2", "onnx-fp32", "py")] == ("ok", 1)
    assert rows[("board-2", "onnx-fp32", "native")] == ("ok", 1)
    assert rows[("board-1", "onnx-fp32-strict", "py")] == ("failed", 0)
    # An ok cell is never overwritten by a later failure.
    from edgekit.store import Store
    from edgekit.store.farm import CellRecord, farm_cells, record_failed

    with Store() as store:
        ok = next(r for r in farm_cells(store, "faults") if r["device"] == "board-1" and r["status"] == "ok")
        record_failed(store, CellRecord("faults", ok["cell_key"], ok["model"], ok["recipe"], ok["device"],
                                        ok["workload"]), "late failure", 3, None)
        after = next(r for r in farm_cells(store, "faults") if r["cell_key"] == ok["cell_key"])
    assert (after["status"], after["trace_id"], after["reason"]) == ("ok", ok["trace_id"], None)
    assert store_rows("SELECT count(*) FROM traces")[0][0] == 4
